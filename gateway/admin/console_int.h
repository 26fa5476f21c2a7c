/* console_int.h - what the console's pages share (console.c: messages,
 * actions, login, routing; console_queue.c: the queue and quarantine
 * lists): the daemon's answers, queue command words, the list filter. */
#ifndef POSTERN_CONSOLE_INT_H
#define POSTERN_CONSOLE_INT_H
#include "console_web.h"
#include "queue_cmd.h"
#include <jansson.h>
#include <sys/types.h>

/* An action form as the words of a queue command (queue_cmd.h): op is
 * hold, release, delete, requeue or flush; id the message; rcpt (repeated)
 * the recipients a release keeps. */
struct action_words {
    char *argv[3 + 2 * QUEUE_CMD_MAX_KEEP];
    int argc;
    char store[8192];
    size_t used;
    bool bad;
};

/* The filter of the queue and quarantine pages: the words of a queue
 * command's filters (queue_cmd.h), so the daemon filters (one matcher)
 * and "all that match" acts on exactly what the page shows. */
struct filter {
    char sender[1024], rcpt[1024], domain[1024], queue[1024], state[1024];
    long min_age;                      /* seconds */
};

/* The filter's text fields, as named in forms and queries (the queue
 * command's --NAME), in this order: sender, rcpt, domain, queue, state. */
#define FILTER_FIELDS 5
extern const char *const filter_fields[FILTER_FIELDS];
const char *filter_field(const struct filter *f, size_t i);

/* A JSON answer from the daemon to a queue request ("list --json …",
 * "show --json ID"); NULL (why in err) when it does not answer. */
json_t *queue_json(const char *request, char *err, size_t errlen);
void add_word(struct action_words *w, const char *word);
/* The words as one control request line in req (NUL-terminated), checked
 * by the queue command parser: 0, or -1 with why in err. */
int words_request(const struct action_words *w, struct buf *req, char *err, size_t errlen);
/* Ask posternd over the control socket (words as queue_cmd_format makes
 * them): 0 and the answer in out, 1 for a refusal (why in out), -1 when
 * it does not answer. */
int console_control(const char *request, struct buf *out);
/* The first size-1 bytes of queued message id (its header section first),
 * NUL-terminated: how many, or -1. */
ssize_t queued_message_start(const char *id, char *data, size_t size);
/* A string member of o, or "". */
const char *jstr(const json_t *o, const char *k);
/* A filter from the query string (from_query, c) or a posted form
 * (from_form, the body); the quarantine is the filter state=hold. */
void filter_read(struct filter *f, const char *(*get)(void *src, const char *name, char out[1024]), void *src,
                 bool quarantine);
const char *from_query(void *c, const char *name, char out[1024]);
const char *from_form(void *form, const char *name, char out[1024]);
/* The filter as queue command words; false when it has none. */
bool filter_words(const struct filter *f, struct action_words *w);
/* A one-button form posting op for message id to /action. */
void action_button(struct buf *b, const struct console_session *s, const char *id, const char *op, const char *label);
/* The queue (or quarantine) page, or its JSON (console_queue.c). */
enum MHD_Result console_queue_page(struct MHD_Connection *c, const struct console_session *s, bool quarantine,
                                   bool api);

#endif
