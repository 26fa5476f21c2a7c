/* local_submit.h - messages posternd itself originates for a plugin
 * (host->submit_message: DMARC aggregate reports, notices). The caller's
 * thread writes and commits the spool file; the event loop then takes the
 * committed envelope into the queue, as it does for a DSN (bounce.c). */
#ifndef POSTERN_LOCAL_SUBMIT_H
#define POSTERN_LOCAL_SUBMIT_H
#include <stddef.h>

struct config;
struct envelope;

/* posternd, before the chain loads: submissions are possible here, but
 * answer EAGAIN until local_submit_start. Never called = no queue in this
 * process (postern-milter): ENOTSUP. */
void local_submit_expect(void);
/* The hostname (Received, HELO) and message_size_limit of a generation. */
void local_submit_configure(const struct config *cfg);
/* Loop thread, after the spool was loaded (a message committed earlier
 * would be found by the scan and queued twice). queue_it takes each
 * committed message on the loop (the queue's queue_add_committed: the
 * caller supplies it, so this file never names the queue). 0, or -1. */
int local_submit_start(void (*queue_it)(struct envelope *e, size_t body_off));
/* Loop thread, when the loop has stopped: later calls answer EAGAIN (their
 * caller keeps its data and tries again after the restart). */
void local_submit_stop(void);
/* For every message posternd makes itself (a DSN, a plugin's message): a
 * fresh queue ID, arrival now, client 127.0.0.1, HELO hostname, proto LOCAL
 * (the queue marks such messages local: no submit_message from their
 * QUEUE/DELIVER stages). Sender and recipients are the caller's. */
void local_envelope_init(struct envelope *e, const char *hostname);
/* "Received: by HOST (Postern) id ID; DATE" with its CRLF, into out: the
 * header such a message starts with. Returns its length. */
size_t local_received(char *out, size_t size, const char *hostname, const char *id);
/* Any thread but the loop: see postern_plugin.h, submit_message. */
int local_submit(const char *sender, const char *const *rcpts, size_t nrcpts, const char *message, size_t len,
                 char *qid_out);
/* submit_message_flags: POSTERN_SUBMIT_JOURNAL makes proto JOURNAL, which
 * the queue runs past the chain. */
int local_submit_flags(const char *sender, const char *const *rcpts, size_t nrcpts, const char *message, size_t len,
                       unsigned flags, char *qid_out);

#endif
