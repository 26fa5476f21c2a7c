/* lists.h - personal allow and block lists: for a recipient address (the
 * user's own) or a recipient domain ("@example.test", the admin's), sender
 * patterns that are allowed (spam and greylist verdicts skipped for that
 * recipient) or blocked (refused at RCPT, or held in the spam quarantine).
 * Kept in an SQLite file on the node (lists_db) and in memory, by owner, so
 * a lookup at RCPT never touches the disk; changes go to both. */
#ifndef POSTERN_LISTS_H
#define POSTERN_LISTS_H
#include <stdbool.h>
#include <stddef.h>

enum list_kind { LIST_NONE = 0, LIST_ALLOW = 'A', LIST_BLOCK = 'B' };

#define LIST_MAX_ENTRIES 1000000     /* in all */
#define LIST_MAX_PATTERN 320

/* Open (creating) the store and load it. 0, or -1 with err. */
int lists_open(const char *path, char *err, size_t errlen);
void lists_close(void);
/* What the lists say of sender for rcpt: the recipient's own entries first,
 * then its domain's; on each list a block of the sender beats an allow.
 * Patterns: an address, "@domain" (and its subdomains), case-insensitive. */
enum list_kind lists_check(const char *rcpt, const char *sender);
/* Add or remove an entry. owner: an address or "@domain"; pattern: an
 * address or "@domain". 0, or -1 with err (bad owner or pattern, full, the
 * store cannot be written). */
int lists_change(bool add, enum list_kind kind, const char *owner, const char *pattern, char *err, size_t errlen);
/* Each entry of owner (NULL: every entry), in owner and pattern order. */
void lists_each(const char *owner, void (*fn)(void *ctx, const char *owner, enum list_kind kind, const char *pattern),
                void *ctx);
const char *list_kind_name(enum list_kind k);
/* A digest link's nonce, used once: 1 the first time, 0 when it was used
 * before, -1 on a store error. Nonces are kept until expires (Unix time). */
int lists_use_link(const char *nonce, long expires);
/* `lists add allow|block OWNER PATTERN`, `lists del OWNER PATTERN`, `lists
 * show [OWNER]` (argv without "lists"), for the control socket and the CLI:
 * 0 with the answer in out, -1 with why; 2 for a usage error. */
struct buf;
int lists_request(int argc, char *const *argv, struct buf *out);
extern const char lists_usage[];
/* Called after each change lists_request made (not for lists_sync_*), on
 * the loop thread: lists_shared.c passes it on to the other nodes. */
void lists_on_change(void (*fn)(bool add, enum list_kind kind, const char *owner, const char *pattern));
size_t lists_count(void);
/* A full copy from elsewhere replaces the lists (memory and store) at
 * lists_sync_end (which says how many entries there are); changes made
 * meanwhile go into the copy too. Loop thread. */
int lists_sync_begin(void);
int lists_sync_add(enum list_kind kind, const char *owner, const char *pattern);
size_t lists_sync_end(void);
void lists_sync_abort(void);
/* Every entry, unordered (loop thread). */
void lists_each_raw(void (*fn)(void *ctx, const char *owner, enum list_kind kind, const char *pattern), void *ctx);
/* The store's path for cfg: lists_db, else SPOOL/lists.db. */
struct config;
void lists_db_path(const struct config *cfg, char *out, size_t size);

#endif
