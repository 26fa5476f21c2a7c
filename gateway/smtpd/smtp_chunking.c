/* smtp_chunking.c - CHUNKING/BDAT (RFC 3030): a message in counted chunks,
 * no dot-stuffing, pipelined with MAIL and RCPT. Chunks feed the same
 * message path as DATA (smtp_message.c); each chunk's size counts against
 * message_size_limit before it is read, and a refused chunk is read and
 * dropped so its bytes never run as commands. */
#include "smtp_session.h"
#include "log.h"
#include <string.h>

/* The chunk just read was complete: the last ends the message, others get 250. */
static void chunk_complete(struct session *s)
{
    if (!s->bdat_last) {
        session_replyf(s, "250 2.0.0 Ok: %llu octets received", (unsigned long long)s->data_bytes);
        return;
    }
    if (s->mp.body != BODY_BINARYMIME)
        data_reader_end(&s->dr);
    s->data_done = true;
}

/* A chunk announced: its size counts against message_size_limit up front,
 * so an oversized chunk is refused (and skipped) before it is read. */
static void begin_chunk(struct session *s, uint64_t size, bool last)
{
    s->bdat_left = size;
    s->bdat_last = last;
    if (size == 0)
        chunk_complete(s);
}

void smtp_cmd_bdat(struct session *s, const char *args)
{
    uint64_t size;
    bool last;
    if (smtp_parse_bdat(args, &size, &last) < 0) {
        session_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");   /* the size is unknown: nothing to skip */
        return;
    }
    const char *refusal = message_precondition(s);
    if (!refusal && size > s->cfg->message_size_limit)
        refusal = "552 5.3.4 Message size exceeds fixed maximum message size";
    if (refusal) {
        session_reply(s, refusal);
        s->skip_bytes = size;
        if (s->in_mail)
            session_txn_restart(s);     /* the client must start over with MAIL */
        return;
    }
    if (message_start(s) < 0) {
        s->skip_bytes = size;
        return;
    }
    s->bdat = true;
    data_reader_init_chunked(&s->dr);
    begin_chunk(s, size, last);
}

/* A chunked message given up (RSET, another command, a refused chunk). */
static void abandon_chunked_message(struct session *s, const char *why)
{
    log_info("S%lu: %s: BDAT message from [%s] abandoned: %s", s->sid, s->tx.qid, s->tx.client_ip, why);
    message_abort(s);
    session_txn_restart(s);
    s->phase = PH_COMMAND;
}

/* Between chunks: the next BDAT. Any other command ends the message
 * unfinished and then runs as usual. Returns false when waiting for input
 * or when the session left the chunked message. */
static bool next_chunk_command(struct session *s)
{
    const char *head = buf_head(&s->in);
    const char *nl = s->in.len ? memchr(head, '\n', s->in.len) : NULL;
    size_t linelen = nl ? (size_t)(nl - head) + 1 : 0;
    if (!nl && s->in.len < SMTP_MAX_COMMAND_LINE)
        return false;
    char line[SMTP_MAX_COMMAND_LINE + 1];
    struct smtp_command cmd = {VERB_UNKNOWN, ""};
    if (nl && linelen <= SMTP_MAX_COMMAND_LINE) {
        size_t len = smtp_command_line_text(head, linelen, line, sizeof line);
        if (memchr(line, '\0', len) || smtp_parse_command(line, &cmd) < 0)
            cmd.verb = VERB_UNKNOWN;
    }
    if (cmd.verb != VERB_BDAT) {
        abandon_chunked_message(s, "another command between chunks");
        return false;
    }
    buf_consume(&s->in, linelen);
    session_set_timeout(s);
    uint64_t size;
    bool last;
    if (smtp_parse_bdat(cmd.args, &size, &last) < 0) {
        abandon_chunked_message(s, "bad BDAT syntax");
        session_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return false;
    }
    if (size > s->cfg->message_size_limit - s->data_bytes) {
        abandon_chunked_message(s, "message size limit");
        session_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        s->skip_bytes = size;
        return false;
    }
    begin_chunk(s, size, last);
    return true;
}

/* BDAT: chunk bytes go into the message as they are (the same line checks
 * as DATA unless BODY=BINARYMIME); between chunks comes the next BDAT. */
void chunks_process(struct session *s)
{
    while (s->phase == PH_DATA && !s->data_done) {
        if (s->bdat_left == 0) {
            if (!next_chunk_command(s))
                break;
            continue;
        }
        if (!s->in.len)
            break;
        size_t n = s->in.len < s->bdat_left ? s->in.len : (size_t)s->bdat_left;
        if (n > MAX_INPUT_BUFFER)
            n = MAX_INPUT_BUFFER;
        s->bdat_left -= n;
        message_chunk_bytes(s, buf_head(&s->in), n);
        buf_consume(&s->in, n);
        if (s->bdat_left == 0)
            chunk_complete(s);
        message_progress(s);
    }
    message_progress(s);
}
