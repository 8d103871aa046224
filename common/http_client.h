/* http_client: outbound HTTP on a libevent base with libcurl's multi interface, so one thread
 * keeps many calls in flight over kept-alive connections. */
#ifndef HF_HTTP_CLIENT_H
#define HF_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

struct event_base;

typedef struct hf_http_client hf_http_client;

/* Largest response body accepted; a larger one ends the call with an error. */
#define HF_HTTP_MAX_RESPONSE_BODY (4u * 1024u * 1024u)

typedef struct hf_http_request {
    const char *method; /* "GET", "POST", "PUT", "PATCH", "DELETE" */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
    const void *body;           /* copied; may be NULL when body_len is 0 */
    size_t body_len;
    int64_t timeout_ms;                      /* whole request; <= 0 means no limit */
    const char *basic_user, *basic_password; /* HTTP Basic when both non-NULL */
} hf_http_request;

typedef struct hf_http_response {
    long status;       /* 0 when no complete HTTP answer arrived; exactly one of status and
                          error is set */
    const char *error; /* transport error text (timeout, refused, reset, answer cut short or
                          over 4 MiB, "cancelled") or NULL */
    bool timed_out;
    bool maybe_sent;  /* the request may have reached the server (some of it was written
                         before the failure): its outcome is unknown */
    const char *body; /* NUL-terminated; "" when empty or on error */
    size_t body_len;
    const char *retry_after;  /* Retry-After header value or NULL */
    const char *content_type; /* Content-Type header value or NULL */
    int64_t duration_ms;
} hf_http_response;

/* Called on the base's thread; resp and everything it points to is valid only during the call.
 * The callback may send new requests; it may also free the client. */
typedef void (*hf_http_done_fn)(void *arg, const hf_http_response *resp);

/* A client bound to base (which the caller runs and frees after the client). At most
 * max_connections_per_host connections per host (<= 0: no limit); more requests queue. */
hf_http_client *hf_http_client_new(struct event_base *base, int max_connections_per_host);

/* Starts the request (everything in req is copied); done is called exactly once, never from
 * inside this call unless the client is being freed, and also when hf_http_client_free cancels
 * it (status 0, error "cancelled"). */
void hf_http_client_send(hf_http_client *c, const hf_http_request *req, hf_http_done_fn done,
                         void *arg);

/* Requests started whose done has not been called yet. */
size_t hf_http_client_in_flight(const hf_http_client *c);

/* Cancels every request in flight (calling its done with "cancelled"), closes the connections
 * and frees the client. NULL is a no-op. */
void hf_http_client_free(hf_http_client *c);

/* Parses a Retry-After value (delta-seconds or an HTTP-date) into milliseconds from now
 * (a date in the past gives 0); -1 if unparsable. */
int64_t hf_http_retry_after_ms(const char *value, int64_t now_wall_ms);

#endif
