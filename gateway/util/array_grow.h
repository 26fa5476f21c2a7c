/* array_grow.h - room in an array that grows by doubling: the one place that
 * computes the new capacity, checks it for overflow and reallocates, for
 * the many tables built one entry at a time (headers, the queue's heap,
 * directory listings, index tables, result sets). */
#ifndef POSTERN_ARRAY_GROW_H
#define POSTERN_ARRAY_GROW_H
#include <stddef.h>

/* arr (elements of elem bytes, *cap of them) with room for need: arr
 * itself when it has it, else a larger block (doubled, first when empty,
 * at least need; *cap updated) that replaces it. NULL when out of memory
 * or the size overflows: arr is then unchanged and still the caller's.
 *     T *v = array_grow(t->v, &t->cap, t->n + 1, sizeof *t->v, 64);
 *     if (!v) return -1;
 *     t->v = v;                                                        */
void *array_grow(void *arr, size_t *cap, size_t need, size_t elem, size_t first);

#endif
