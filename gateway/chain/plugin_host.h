/* plugin_host.h - the host function table handed to every plugin. */
#ifndef POSTERN_PLUGIN_HOST_H
#define POSTERN_PLUGIN_HOST_H
#include <stdbool.h>
#include "txn.h"

const struct postern_host *plugin_host(void);
struct config;
/* The config whose hostname host->hostname() reports. */
void plugin_host_configure(const struct config *cfg);
/* posternd -t: plugins are told (host->checking) to check, not create. */
void plugin_host_set_checking(bool on);
/* postern policy test/replay: plugins are told (host->dry_run) to change
 * nothing outside the transaction. */
void plugin_host_set_dry_run(bool on);

#endif
