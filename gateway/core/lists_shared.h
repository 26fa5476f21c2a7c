/* lists_shared.h - the allow and block lists (lists.h) shared by every node
 * through redis_server, and digest link nonces claimed fleet-wide (see
 * lists_shared.c for the keys and the protocol). */
#ifndef POSTERN_LISTS_SHARED_H
#define POSTERN_LISTS_SHARED_H
#include <stdbool.h>

/* Loop thread, after redis_start and lists_open; nothing without redis_server. */
void lists_shared_start(void);
bool lists_shared(void);

/* Claim a digest link's nonce until expires (Unix time): cb(ctx, 1) the
 * first time, 0 when it was used before, -1 when Redis cannot say. The
 * answer may come before this returns (then NULL is returned); else keep
 * the handle until cb runs, or give it up with lists_shared_link_forget
 * (cb is then never called). */
typedef void (*lists_link_cb)(void *ctx, int rc);
struct lists_link_wait;
struct lists_link_wait *lists_shared_use_link(const char *nonce, long expires, lists_link_cb cb, void *ctx);
void lists_shared_link_forget(struct lists_link_wait *w);

#endif
