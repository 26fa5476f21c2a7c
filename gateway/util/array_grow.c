/* array_grow.c - see array_grow.h. */
#include "array_grow.h"
#include <stdint.h>
#include <stdlib.h>

void *array_grow(void *arr, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap)
        return arr;
    size_t n = *cap ? *cap : first ? first : 1;
    while (n < need) {
        if (n > SIZE_MAX / 2)
            return NULL;
        n *= 2;
    }
    if (elem && n > SIZE_MAX / elem)
        return NULL;
    void *bigger = realloc(arr, n * elem);
    if (bigger)
        *cap = n;
    return bigger;
}
