/* provider: the interface every platform module (ingest/providers/<id>.c) implements: verify one
 * delivery exactly as the platform signs it, answer its handshake, and split it into events. */
#ifndef INGEST_PROVIDER_H
#define INGEST_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "secrets.h"

/* One HTTP request as received. All strings are NUL-terminated and owned by the caller. */
typedef struct ingest_request {
    const char *method;        /* "GET", "POST", ... */
    const char *path;          /* path without the query, e.g. "/api/integrations/webhooks/xero" */
    const char *query;         /* raw query string without '?', or NULL */
    const char *public_url;    /* HOOKFLOW_PUBLIC_BASE_URL + path (+ "?" + query): the URL the
                                  platform called, for signatures that cover the URL */
    const unsigned char *body; /* raw bytes, exactly as received (not NUL-terminated) */
    size_t body_len;
    /* Case-insensitive header lookup; NULL when absent. */
    const char *(*header)(const struct ingest_request *req, const char *name);
    void *header_ctx;
    int64_t now_ms;            /* wall clock, ms since the epoch (tests pin it) */
    const hf_secrets *secrets; /* the current secrets store */
} ingest_request;

/* One platform event, ready for the envelope. Every field is malloc'd and owned by the result. */
typedef struct ingest_event {
    char *id;          /* "<provider>:<platform id>" or "<provider>:<derived hash>"; stable across
                          redeliveries */
    char *native_type; /* the platform's own type, e.g. "INVOICE.CREATE" (mapped to the catalog's
                          event name by the caller) */
    char *account;     /* the platform's tenant: Xero tenantId, QBO realmId, HubSpot portalId,
                          Klaviyo account, Twilio AccountSid, Meta page id */
    char *resource;    /* the resource the event is about (for run ordering), or NULL */
    char *occurred_at; /* RFC 3339 UTC, or NULL when the platform sends no time */
    char *payload;     /* the event as compact JSON (an object) */
} ingest_event;

/* What the provider decided. status is the HTTP status to answer (200 on success). */
typedef struct ingest_result {
    int status;
    const char *reason;  /* static metrics label: "accepted", "handshake", "missing_signature",
                            "bad_signature", "stale_timestamp", "missing_secret", "malformed",
                            "bad_verify_token", "method_not_allowed" */
    char detail[256];    /* human-readable detail for the JSON error body; never a secret or a
                            signature */
    char *response_body; /* malloc'd body to answer on success (handshake echo, TwiML), or NULL
                            for an empty body */
    const char *response_type; /* its Content-Type (static), or NULL */
    ingest_event *events;
    size_t nevents, cap;
} ingest_result;

typedef struct ingest_provider {
    const char *id;   /* path segment and catalog id: "xero", "quickbooks", ... */
    bool accepts_get; /* GET is a handshake (Meta); other providers answer 405 to GET */
    /* Verifies and parses req into res. Must set res->status and res->reason. On any non-2xx
     * status res->events must be empty. Never logs a secret or a signature. */
    void (*handle)(const ingest_request *req, ingest_result *res);
} ingest_provider;

/* The six providers, and lookup by path segment (NULL if unknown). */
extern const ingest_provider ingest_provider_xero, ingest_provider_quickbooks,
    ingest_provider_hubspot, ingest_provider_klaviyo, ingest_provider_twilio, ingest_provider_meta;
const ingest_provider *ingest_provider_find(const char *id);

/* Helpers for provider modules (ingest/provider.c). */

/* Sets an error outcome: status, reason label and a printf detail. Drops any events. */
void ingest_result_fail(ingest_result *res, int status, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Appends an event; takes ownership of every string passed (payload required, others may be
 * NULL except id, native_type and account). */
void ingest_result_add(ingest_result *res, char *id, char *native_type, char *account,
                       char *resource, char *occurred_at, char *payload);
void ingest_result_free(ingest_result *res);

/* "<provider>:" + the first 32 hex digits of SHA-256 over the NULL-terminated field list joined
 * with 0x1f; for platforms whose events carry no id of their own. Caller frees. */
char *ingest_derive_id(const char *provider, ...) __attribute__((sentinel));

/* Formats epoch milliseconds as RFC 3339 UTC (malloc'd). */
char *ingest_time_from_ms(int64_t ms);

#endif
