/* proxy_proto.h - the PROXY protocol header (HAProxy's proxy-protocol.txt,
 * versions 1 and 2) that a load balancer sends before the client's bytes.
 * Pure parsing, no I/O, so it is unit-tested and fuzzed. */
#ifndef POSTERN_PROXY_PROTO_H
#define POSTERN_PROXY_PROTO_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define PROXY_V1_MAX 107          /* the longest v1 line, CRLF included */
#define PROXY_V2_MAX_PAYLOAD 2048 /* addresses plus TLVs we are willing to read */

struct proxy_header {
    int version;                  /* 1 or 2 */
    bool has_source;              /* false: UNKNOWN / LOCAL / UNSPEC: keep the connection's address */
    struct sockaddr_storage source;
    socklen_t source_len;
};

/* Parse the start of a connection's bytes. Returns the header length once
 * it is complete, 0 if more bytes are needed, -1 if they cannot begin a
 * valid header (the connection should be closed). */
int proxy_parse(const unsigned char *buf, size_t len, struct proxy_header *out);

#endif
