/* event_record.c - see event_record.h. */
#include "event_record.h"
#include "json_out.h"
#include "utc_time.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum event_type event_type_of(const struct track_event *e)
{
    const char *st = e->status ? e->status : "", *stage = e->stage ? e->stage : "";
    if (!strcmp(st, "queued"))
        return EV_ACCEPTED;
    if (!strcmp(st, "rejected"))
        return !strcmp(stage, "connect") ? EV_CONNECTION_REFUSED : EV_REJECTED;
    if (!strcmp(st, "bounced") && !strcmp(stage, "expire"))
        return EV_EXPIRED;
    for (int t = 0; t < EV_NTYPES; t++)
        if (!strcmp(st, event_type_names[t]))
            return (enum event_type)t;
    return EV_DROPPED;     /* "dropped" and anything unforeseen */
}

static void field(struct buf *out, const char *name, const char *value)
{
    if (!value || !value[0])
        return;
    buf_printf(out, ",\"%s\":", name);
    json_out_string(out, value);
}

int event_record_format(struct buf *out, const struct track_event *e, int64_t ms, const char *node,
                        int64_t start_ms, uint64_t seq)
{
    enum event_type type = event_type_of(e);
    char id[1024], when[40];
    if ((type == EV_ACCEPTED || type == EV_QUARANTINED) && e->qid && e->qid[0])
        snprintf(id, sizeof id, "%s/%s/%s/%.512s", node, e->qid, event_type_names[type], e->to ? e->to : "");
    else
        snprintf(id, sizeof id, "%s/%lld/%llu", node, (long long)start_ms, (unsigned long long)seq);
    utc_time_format((time_t)(ms / 1000), when, sizeof when);
    size_t before = out->len;
    buf_printf(out, "{\"v\":%d,\"id\":", EVENT_RECORD_VERSION);
    json_out_string(out, id);
    field(out, "node", node);
    buf_printf(out, ",\"ms\":%lld,\"time\":\"%.19s.%03dZ\",\"type\":\"%s\"", (long long)ms, when, (int)(ms % 1000),
               event_type_names[type]);
    field(out, "qid", e->qid);
    field(out, "from", e->from);
    field(out, "to", e->to);
    field(out, "client", e->client);
    field(out, "helo", e->helo);
    field(out, "stage", e->stage);
    field(out, "link", e->link);
    field(out, "reply", e->reply);
    if (e->session)
        buf_printf(out, ",\"session\":%lu", e->session);
    if (e->size)
        buf_printf(out, ",\"size\":%llu", (unsigned long long)e->size);
    field(out, "tls", e->tls);
    field(out, "login", e->login);
    if (e->duration_ms)
        buf_printf(out, ",\"duration_ms\":%ld", e->duration_ms);
    if (buf_append(out, "}\n", 2) < 0) {
        out->len = before;
        return -1;
    }
    return 0;
}

/* The text of a field written as "NAME":VALUE by event_record_format. */
static const char *find_field(const char *line, size_t len, const char *name)
{
    char key[40];
    int k = snprintf(key, sizeof key, "\"%s\":", name);
    const char *p = memmem(line, len, key, (size_t)k);
    return p ? p + k : NULL;
}

int event_record_type(const char *line, size_t len)
{
    const char *v = find_field(line, len, "type");
    if (!v || *v != '"')
        return -1;
    size_t room = len - (size_t)(v + 1 - line);
    for (int t = 0; t < EV_NTYPES; t++) {
        size_t n = strlen(event_type_names[t]);
        if (n + 1 <= room && !memcmp(v + 1, event_type_names[t], n) && v[1 + n] == '"')
            return t;
    }
    return -1;
}

int64_t event_record_ms(const char *line, size_t len)
{
    const char *v = find_field(line, len, "ms");
    return v && v < line + len ? strtoll(v, NULL, 10) : -1;
}
