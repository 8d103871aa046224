/* catalog_api: GET /api/workflows/catalog, the connector catalog the workflow builder and the
 * marketplace render — every connector with every metadata field and its actions (Sim badge,
 * inputs, sample output) and webhook events (sample payloads) — with a strong ETag. */
#include "api.h"

#include <string.h>

#include "crypto.h"

/* "private": the answer needs a token; revalidation costs one hash and a 304. */
#define CATALOG_CACHE_CONTROL "private, max-age=60, must-revalidate"

/* True when an If-None-Match value lists etag or is "*". If-None-Match compares weakly
 * (RFC 9110 13.1.2), so W/"x" matches "x" too. */
static bool etag_listed(const char *header, const char *etag)
{
    size_t etag_len = strlen(etag);
    const char *p = header;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            return false;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (*p != '"') {
            p += strcspn(p, ",");
            continue;
        }
        const char *end = strchr(p + 1, '"');
        if (!end)
            return false;
        if ((size_t)(end + 1 - p) == etag_len && memcmp(p, etag, etag_len) == 0)
            return true;
        p = end + 1;
    }
}

void api_catalog_get(api_ctx *c)
{
    size_t len = 0;
    const char *json = hf_catalog_json(c->catalog, &len);
    unsigned char digest[HF_SHA256_LEN];
    hf_sha256(json, len, digest);
    char etag[2 * HF_SHA256_LEN + 3];
    etag[0] = '"';
    hf_hex_encode(digest, sizeof digest, etag + 1);
    etag[2 * HF_SHA256_LEN + 1] = '"';
    etag[2 * HF_SHA256_LEN + 2] = '\0';
    api_set_header(c, "ETag", etag);
    api_set_header(c, "Cache-Control", CATALOG_CACHE_CONTROL);
    api_set_header(c, "Vary", "Authorization");
    const char *inm = api_header(c, "If-None-Match");
    if (inm && etag_listed(inm, etag)) {
        api_reply(c, 304, NULL, NULL, 0);
        return;
    }
    api_reply_json(c, 200, json, len);
}
