/* milter_codec.h - the Sendmail milter wire format (protocol version 6), as
 * the milter plugin speaks it to external milters: packet framing, the
 * command and reply codes, and NUL-separated argument lists. Header-only and
 * free of I/O so the fuzz harness and unit tests use exactly this code.
 *
 * A packet is a 32-bit big-endian length (counting the command byte), one
 * command byte, and the data.
 */
#ifndef POSTERN_MILTER_CODEC_H
#define POSTERN_MILTER_CODEC_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MILTER_VERSION 6
#define MILTER_MAX_PACKET (1024 * 1024)   /* refuse anything larger: a broken or hostile milter */
#define MILTER_CHUNK 65535                /* body chunk size the protocol allows */

/* commands (MTA -> milter) */
enum {
    SMFIC_ABORT = 'A', SMFIC_BODY = 'B', SMFIC_CONNECT = 'C', SMFIC_MACRO = 'D', SMFIC_BODYEOB = 'E',
    SMFIC_HELO = 'H', SMFIC_HEADER = 'L', SMFIC_MAIL = 'M', SMFIC_EOH = 'N', SMFIC_OPTNEG = 'O',
    SMFIC_QUIT = 'Q', SMFIC_RCPT = 'R', SMFIC_DATA = 'T',
};
/* replies and modifications (milter -> MTA) */
enum {
    SMFIR_ADDRCPT = '+', SMFIR_DELRCPT = '-', SMFIR_ADDRCPT_PAR = '2', SMFIR_ACCEPT = 'a', SMFIR_REPLBODY = 'b',
    SMFIR_CONTINUE = 'c', SMFIR_DISCARD = 'd', SMFIR_CHGFROM = 'e', SMFIR_ADDHEADER = 'h', SMFIR_INSHEADER = 'i',
    SMFIR_CHGHEADER = 'm', SMFIR_PROGRESS = 'p', SMFIR_QUARANTINE = 'q', SMFIR_REJECT = 'r', SMFIR_SKIP = 's',
    SMFIR_TEMPFAIL = 't', SMFIR_REPLYCODE = 'y',
};
/* actions the MTA allows (SMFIF_*) */
#define SMFIF_ALL 0x1FFu   /* add/change headers, body, add/delete rcpt, quarantine, chgfrom, rcpt args, symlist */
/* protocol flags (SMFIP_*): steps the milter does not want, replies it will not send */
#define SMFIP_NOCONNECT 0x1u
#define SMFIP_NOHELO 0x2u
#define SMFIP_NOMAIL 0x4u
#define SMFIP_NORCPT 0x8u
#define SMFIP_NOBODY 0x10u
#define SMFIP_NOHDRS 0x20u
#define SMFIP_NOEOH 0x40u
#define SMFIP_NR_HDR 0x80u
#define SMFIP_NOUNKNOWN 0x100u
#define SMFIP_NODATA 0x200u
#define SMFIP_SKIP 0x400u
#define SMFIP_RCPT_REJ 0x800u
#define SMFIP_NR_CONN 0x1000u
#define SMFIP_NR_HELO 0x2000u
#define SMFIP_NR_MAIL 0x4000u
#define SMFIP_NR_RCPT 0x8000u
#define SMFIP_NR_DATA 0x10000u
#define SMFIP_NR_UNKN 0x20000u
#define SMFIP_NR_EOH 0x40000u
#define SMFIP_NR_BODY 0x80000u
#define SMFIP_HDR_LEADSPC 0x100000u
#define SMFIP_ALL 0x1FFFFFu   /* everything posternd can honour */

static inline void milter_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline uint32_t milter_get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Frames cmd + data into out (5 + len bytes). Returns the packet size, or
 * 0 if it does not fit. */
static inline size_t milter_frame(unsigned char *out, size_t size, char cmd, const void *data, size_t len)
{
    if (len + 5 > size || len + 1 > MILTER_MAX_PACKET)
        return 0;
    milter_put32(out, (uint32_t)len + 1);
    out[4] = (unsigned char)cmd;
    if (len)
        memcpy(out + 5, data, len);
    return len + 5;
}

/* Appends a NUL-terminated string to an argument list being built in buf.
 * Returns the new length, or size + 1 when it does not fit. */
static inline size_t milter_arg(char *buf, size_t used, size_t size, const char *s)
{
    size_t n = strlen(s) + 1;
    if (used > size || n > size - used)
        return size + 1;
    memcpy(buf + used, s, n);
    return used + n;
}

/* One decoded packet: cmd and a view of its data. */
struct milter_packet {
    char cmd;
    const unsigned char *data;
    size_t len;
};

/* Decodes the packet at the start of buf. Returns the bytes it takes, 0 if
 * buf holds only part of it, -1 if the length field is invalid. */
static inline long milter_decode(const unsigned char *buf, size_t n, struct milter_packet *p)
{
    if (n < 4)
        return 0;
    uint32_t len = milter_get32(buf);
    if (len == 0 || len > MILTER_MAX_PACKET)
        return -1;
    if (n - 4 < len)
        return 0;
    p->cmd = (char)buf[4];
    p->data = buf + 5;
    p->len = len - 1;
    return (long)len + 4;
}

/* The nth (0-based) NUL-terminated string in data, or NULL if there is no
 * such complete string. */
static inline const char *milter_string(const unsigned char *data, size_t len, int nth)
{
    size_t off = 0;
    for (int i = 0; off < len; i++) {
        const unsigned char *end = memchr(data + off, '\0', len - off);
        if (!end)
            return NULL;
        if (i == nth)
            return (const char *)data + off;
        off = (size_t)(end - data) + 1;
    }
    return NULL;
}

#endif
