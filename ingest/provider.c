/* provider: lookup of the platform modules and the helpers they share. */
#include "provider.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "util.h"

static const ingest_provider *const providers[] = {
    &ingest_provider_xero,    &ingest_provider_quickbooks, &ingest_provider_hubspot,
    &ingest_provider_klaviyo, &ingest_provider_twilio,     &ingest_provider_meta,
};

const ingest_provider *ingest_provider_find(const char *id)
{
    for (size_t i = 0; i < HF_ARRAY_LEN(providers); i++)
        if (strcmp(providers[i]->id, id) == 0)
            return providers[i];
    return NULL;
}

static void drop_events(ingest_result *res)
{
    for (size_t i = 0; i < res->nevents; i++) {
        ingest_event *e = &res->events[i];
        free(e->id);
        free(e->native_type);
        free(e->account);
        free(e->resource);
        free(e->occurred_at);
        free(e->payload);
    }
    res->nevents = 0;
}

void ingest_result_fail(ingest_result *res, int status, const char *reason, const char *fmt, ...)
{
    drop_events(res);
    free(res->response_body);
    res->response_body = NULL;
    res->response_type = NULL;
    res->status = status;
    res->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->detail, sizeof res->detail, fmt, ap);
    va_end(ap);
}

void ingest_result_add(ingest_result *res, char *id, char *native_type, char *account,
                       char *resource, char *occurred_at, char *payload)
{
    if (res->nevents == res->cap) {
        res->cap = res->cap ? res->cap * 2 : 8;
        res->events = xrealloc(res->events, res->cap * sizeof *res->events);
    }
    res->events[res->nevents++] =
        (ingest_event){id, native_type, account, resource, occurred_at, payload};
}

void ingest_result_free(ingest_result *res)
{
    drop_events(res);
    free(res->events);
    free(res->response_body);
    res->events = NULL;
    res->response_body = NULL;
    res->cap = 0;
}

char *ingest_derive_id(const char *provider, ...)
{
    hf_mac *m = hf_mac_new(HF_MAC_SHA256, NULL, 0);
    va_list ap;
    va_start(ap, provider);
    const char *field;
    bool first = true;
    while ((field = va_arg(ap, const char *)) != NULL) {
        if (!first)
            hf_mac_update(m, "\x1f", 1);
        /* Inside a field the separator and the escape byte are escaped (0x1e 'f', 0x1e 'e'), so
         * no two field lists hash the same bytes; fields without them, which is every id a
         * platform sends, hash as they always did and keep their ids across versions. */
        const char *run = field;
        for (const char *c = field;; c++) {
            if (*c != '\x1e' && *c != '\x1f' && *c != '\0')
                continue;
            hf_mac_update(m, run, (size_t)(c - run));
            if (*c == '\0')
                break;
            static const char escaped_e[] = {0x1e, 'e'}, escaped_f[] = {0x1e, 'f'};
            hf_mac_update(m, *c == '\x1e' ? escaped_e : escaped_f, 2);
            run = c + 1;
        }
        first = false;
    }
    va_end(ap);
    unsigned char digest[HF_SHA256_LEN];
    hf_mac_final(m, digest);
    char hex[2 * HF_SHA256_LEN + 1];
    hf_hex_encode(digest, 16, hex);
    return xconcat(provider, ":", hex, NULL);
}

char *ingest_time_from_ms(int64_t ms)
{
    char buf[40];
    hf_format_rfc3339(ms, buf, sizeof buf);
    return xstrdup(buf);
}
