/* archive_int.h - what the archive plugin's own files share (archive.c:
 * options, writing copies, the chain and the index; archive_witness_client.c:
 * having links signed; archive_expire.c: retention and the 5 s chain tick).
 * Not part of the plugin API: every name here is hidden inside archive.so. */
#ifndef POSTERN_ARCHIVE_INT_H
#define POSTERN_ARCHIVE_INT_H
#include "postern_plugin.h"
#include "archive_chain.h"
#include "archive_retention.h"
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

#pragma GCC visibility push(hidden)

struct archive {
    char dir[1024];
    int refs;                  /* links using it (a reload's chain and the running one); under registry_lock */
    struct archive *next;      /* in open_archives */
    pthread_mutex_t lock;      /* the chain is appended by one writer at a time */
    unsigned long seq;         /* last line written */
    char head[ARCHIVE_HASH_HEX];
    int chain_fd;              /* DIR/chain, O_APPEND */
    pthread_mutex_t sync_lock; /* one fsync at a time */
    unsigned long synced;      /* lines known durable */
    char **chained;            /* open-addressing set of relpaths in the chain */
    size_t nchained, capchained;
    char witness[108];         /* the witness's socket, or "" */
    pthread_mutex_t witness_lock;   /* one exchange with the witness at a time */
    int witness_fd;            /* -1 when not connected */
    int chain_rd;              /* DIR/chain, read to send links to the witness */
    unsigned long witnessed;   /* the last link the witness signed */
    off_t witnessed_off;       /* where the chain line after it starts */
    char witness_err[1400];
    /* retention: a thread removes what is older than `retention` seconds */
    _Atomic long retention;    /* 0 = keep forever */
    _Atomic long expire_every;
    pthread_t expirer;
    bool expirer_started;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    bool stopping;
    off_t expire_off;          /* where the chain's unexpired message lines start */
    time_t next_expire;        /* when expiry looks next */
    off_t chain_size;          /* bytes of DIR/chain read or written; more means another writer (under lock) */
    unsigned long hold_records;     /* hold and release records the chain has */
    pthread_mutex_t rules_lock;
    struct retention_rules rules;   /* archive.retention_rules (a reload replaces them) */
};

extern const struct postern_host *host;

/* archive.c: the chain (appends under a->lock), the copies */
int fsync_dir(const char *path);
int chained_has(const struct archive *a, const char *rel);
int chain_still_ours(const struct archive *a);
void chain_catch_up(struct archive *a);
unsigned long chain_append(struct archive *a, const char *relpath, const char *file_hash);
int chain_sync(struct archive *a, unsigned long seq);
time_t archived_at(const char *path);

/* archive_witness_client.c: connect at start (-2: the witness signed a
 * chain that is not this one), have every link up to seq signed, close */
int witness_connect(struct archive *a);
int witness_sync(struct archive *a, unsigned long seq, char *err, size_t errlen);
void witness_close(struct archive *a);

/* archive_expire.c: the thread that expires copies and reads other
 * writers' links every few seconds, until a->stopping */
void *expirer_main(void *arg);

#pragma GCC visibility pop

#endif
