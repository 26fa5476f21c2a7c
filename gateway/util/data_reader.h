/* data_reader.h - the DATA phase decoder: finds the end of data, undoes dot
 * stuffing and flags SMTP smuggling (bare LF, lone CR) and over-long lines.
 * Only <CRLF>.<CRLF> ends the data; a bare LF never starts a new line, so
 * "<LF>.<LF>", "<LF>.<CRLF>" and "<CR>.<CR>" can never terminate it. */
#ifndef POSTERN_DATA_READER_H
#define POSTERN_DATA_READER_H
#include <stdbool.h>
#include <stddef.h>

enum data_state { DR_BOL, DR_MID, DR_CR, DR_DOT, DR_DOT_CR };

/* Error flags, sticky until the message ends. */
#define DR_ERR_BARE_LF   0x1
#define DR_ERR_LONE_CR   0x2
#define DR_ERR_LONG_LINE 0x4

struct data_reader {
    enum data_state state;
    size_t line_len;      /* octets of the current line so far, CRLF included */
    unsigned errors;
    bool chunked;         /* BDAT: no dot transparency and no terminator */
};

void data_reader_init(struct data_reader *dr);
/* For BDAT chunks (RFC 3030): the same line checks, bytes pass unchanged,
 * the caller knows where the data ends and calls data_reader_end. */
void data_reader_init_chunked(struct data_reader *dr);
/* The data ended (last chunk): a CR left hanging is a lone CR. */
void data_reader_end(struct data_reader *dr);

/* Decode up to n input bytes. Writes message bytes (unstuffed, CRLF kept)
 * to out (room for n bytes is enough) and sets *out_len. Returns the number
 * of input bytes consumed; *done is set when "<CRLF>.<CRLF>" was seen, in
 * which case the bytes after it are left unconsumed (pipelined commands). */
size_t data_reader_feed(struct data_reader *dr, const char *in, size_t n,
                        char *out, size_t *out_len, bool *done);

#endif
