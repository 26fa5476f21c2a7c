/* relay_control.c - who may send to which recipient: trusted networks and
 * authenticated clients anywhere, everyone else only to relay_domains; and
 * nobody else with sender-specified routing (user%host@, host!user@, a
 * quoted "a@b"@, a source route), which the next server might route on
 * (unless allow_untrusted_routing). */
#include "relay_control.h"
#include "smtp_parse.h"
#include <stdio.h>

enum relay_verdict relay_check(const struct config *cfg, const struct sockaddr *peer, bool authenticated,
                               const char *addr, bool source_route, bool postmaster)
{
    bool anywhere = authenticated || config_is_trusted(cfg, peer);
    if ((source_route || smtp_address_routed(addr)) && !cfg->allow_untrusted_routing && !anywhere)
        return RELAY_ROUTED;
    if (!anywhere && !postmaster && !config_is_relay_domain(cfg, addr_domain(addr)))
        return RELAY_DENIED;
    return RELAY_OK;
}

void relay_refusal(enum relay_verdict v, const char *addr, char *reply, size_t size, const char **why)
{
    if (v == RELAY_ROUTED) {
        *why = "sender-specified routing";
        snprintf(reply, size, "554 5.7.1 <%s>: Relay access denied: sender-specified routing (%%, ! or @ in the "
                 "local part, or a source route) is not allowed", addr);
    } else {
        *why = "relay access denied";
        snprintf(reply, size, "554 5.7.1 <%s>: Relay access denied", addr);
    }
}
