/* fuzz_smtp_command.c - libFuzzer harness for the SMTP command line parser,
 * the MAIL/RCPT path and parameter parsers, and the address checker: every
 * byte a client can put on a command line. */
#include <stdint.h>
#include "smtp_parse.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2048)
        return 0;
    char *line = malloc(size + 1);
    if (!line)
        return 0;
    memcpy(line, data, size);
    line[size] = '\0';
    struct smtp_command cmd;
    if (smtp_parse_command(line, &cmd) == 0) {
        struct path_result res;
        struct mail_params mp;
        if (cmd.verb == VERB_MAIL || size % 2)
            smtp_parse_mail(cmd.args, &res, &mp);
        else
            smtp_parse_rcpt(cmd.args, size % 3 == 0, &res, NULL);
        smtp_check_address(cmd.args, size % 5 == 0);
        addr_domain(cmd.args);
    }
    free(line);
    return 0;
}
