/* netaddr.h - IP address text forms, CIDR networks and listen addresses. */
#ifndef POSTERN_NETADDR_H
#define POSTERN_NETADDR_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

struct cidr {
    int family;              /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix;
};

/* "10.0.0.0/8", "::1/128" or a bare address (full-length prefix). 0 ok, -1 bad. */
int cidr_parse(const char *text, struct cidr *out);
bool cidr_match(const struct cidr *net, const struct sockaddr *sa);

/* "127.0.0.1:2525" or "[::1]:2525" into a sockaddr. 0 ok, -1 bad. */
int hostport_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len);
/* A bare address ("192.0.2.1", "::1", no brackets) and port into a sockaddr. */
int ip_parse(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len);
/* Printable address (no port) of sa into out. */
void sockaddr_ip_text(const struct sockaddr *sa, char *out, size_t outlen);

/* A count per client address over a time window, in a fixed table hashed
 * by address: an address that collides, or whose window is over, starts
 * again at 0 (a brake, not an accountant). Loop thread only. */
struct addr_window {
    char ip[64];
    time_t start;
    int count;
    long long shared;     /* the count across nodes, as Redis last said (client_connect_rate) */
};
/* The slot for ip in table (n slots), reset if it was another address's
 * or its window of secs is over. */
struct addr_window *addr_window_for(struct addr_window *table, size_t n, const char *ip, int secs);

#endif
