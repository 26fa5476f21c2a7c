/* data_reader.c - byte-at-a-time state machine for the DATA phase.
 * States: BOL (just after CRLF), MID (inside a line), CR (saw CR in a line),
 * DOT (line began with '.'), DOT_CR (saw ".<CR>" at line start). */
#include "data_reader.h"
#include "smtp_parse.h"

void data_reader_init(struct data_reader *dr)
{
    dr->state = DR_BOL;
    dr->line_len = 0;
    dr->errors = 0;
    dr->chunked = false;
}

void data_reader_init_chunked(struct data_reader *dr)
{
    data_reader_init(dr);
    dr->chunked = true;
}

void data_reader_end(struct data_reader *dr)
{
    if (dr->state == DR_CR)
        dr->errors |= DR_ERR_LONE_CR;
}

static void count_octet(struct data_reader *dr)
{
    if (++dr->line_len > SMTP_MAX_TEXT_LINE)
        dr->errors |= DR_ERR_LONG_LINE;
}

size_t data_reader_feed(struct data_reader *dr, const char *in, size_t n,
                        char *out, size_t *out_len, bool *done)
{
    size_t o = 0, i = 0;
    *done = false;
    while (i < n) {
        char c = in[i++];
        switch (dr->state) {
        case DR_BOL:
            if (c == '.' && !dr->chunked) {
                dr->state = DR_DOT;
                count_octet(dr);
                continue;
            }
            dr->state = DR_MID;
            break;  /* process c as a MID byte below */
        case DR_DOT:
            if (c == '\r') {
                dr->state = DR_DOT_CR;
                continue;
            }
            /* transparency: the leading dot is dropped (RFC 5321 4.5.2) */
            dr->state = DR_MID;
            break;
        case DR_DOT_CR:
            if (c == '\n') {
                *done = true;
                *out_len = o;
                dr->state = DR_BOL;
                return i;
            }
            /* ".<CR>x": a lone CR. The message is refused, so the two
             * swallowed bytes need not be written out. */
            dr->errors |= DR_ERR_LONE_CR;
            dr->state = DR_MID;
            break;
        case DR_CR:
            if (c == '\n') {
                count_octet(dr);
                out[o++] = '\n';
                dr->state = DR_BOL;
                dr->line_len = 0;
                continue;
            }
            dr->errors |= DR_ERR_LONE_CR;
            dr->state = DR_MID;
            break;
        case DR_MID:
            break;
        }
        /* DR_MID processing of c */
        count_octet(dr);
        if (c == '\r') {
            out[o++] = c;
            dr->state = DR_CR;
        } else if (c == '\n') {
            /* bare LF: never a line end, so it can never precede a terminator */
            dr->errors |= DR_ERR_BARE_LF;
            out[o++] = c;
        } else {
            out[o++] = c;
        }
    }
    *out_len = o;
    return i;
}
