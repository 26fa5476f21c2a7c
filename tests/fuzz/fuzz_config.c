/* fuzz_config.c - libFuzzer harness for the config parser (key = value
 * lines, lists, plugin options): the input is written to a memfd and loaded
 * as a config file. Bad input must give an error message, never a crash. */
#include <stdint.h>
#include "config.h"
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-config", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        char path[64], err[1024];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        struct config cfg;
        if (config_load(path, &cfg, err, sizeof err) == 0)
            config_free(&cfg);
    }
    close(fd);
    return 0;
}
