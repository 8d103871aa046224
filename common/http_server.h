/* http_server: a libevent HTTP server on several event-loop threads sharing one port
 * (SO_REUSEPORT), with limits on body and header size, connections and slow clients. */
#ifndef HF_HTTP_SERVER_H
#define HF_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include "util.h"

struct evhttp_request;
struct event_base;

typedef struct hf_http_server hf_http_server;

/* Called on the request's own event-loop thread. Must end, now or later on that thread, in
 * exactly one reply (hf_http_reply* or evhttp_send_reply/evhttp_send_error). */
typedef void (*hf_http_handler)(struct evhttp_request *req, void *arg);

typedef struct hf_http_options {
    const char *listen;  /* "host:port"; port 0 picks a free one */
    int threads;         /* event-loop threads */
    size_t max_body;     /* bytes; larger bodies get 413 */
    size_t max_headers;  /* bytes of request line + headers (line endings counted); larger get
                            431 with a JSON error, and past twice that libevent's own 400 */
    int timeout_ms;      /* read/write inactivity timeout; idle keep-alive ends too; and a
                            request must arrive whole within 4 x timeout_ms of the connection's
                            last answer (a client trickling bytes is closed) */
    int max_connections; /* open connections across all threads; at it every thread pauses
                            accepting and new connections wait in the listen backlog
                            (threads accepting at the same moment may each pass it by one) */
    /* Optional: called first for every request, also those the server refuses itself (431,
     * 505, 501, 400 for a body libevent would not read), e.g. to give each answer a request id
     * header. It must not reply. */
    hf_http_handler prepare;
} hf_http_options;

/* Binds the port (so start-up fails early and clearly) but runs nothing yet. */
hf_http_server *hf_http_server_new(const hf_http_options *opts, hf_http_handler handler, void *arg,
                                   char *err, size_t errlen);
int hf_http_server_port(const hf_http_server *s);
/* Starts the threads. */
void hf_http_server_start(hf_http_server *s);
/* Stops accepting new connections (existing ones go on). Thread-safe. */
void hf_http_server_stop_accepting(hf_http_server *s);
/* Returns once every running loop has finished the callback it was in when called (a request
 * handler running then has returned): what a handler reads after that sees what the caller did
 * before. Not from a loop thread. */
void hf_http_server_sync(hf_http_server *s);
/* Open connections now. */
int64_t hf_http_server_connections(const hf_http_server *s);
/* Ends the loops, closes every connection, joins the threads, frees. */
void hf_http_server_free(hf_http_server *s);

/* Replies with a JSON body (Content-Type application/json). */
void hf_http_reply_json(struct evhttp_request *req, int status, const char *json, size_t len);
/* Appends the JSON error body {"error":error[,"detail":detail][,extra_members]}; detail and
 * extra_members (pre-rendered "name":value pairs) are left out when NULL or empty. */
void hf_http_error_json(hf_buf *out, const char *error, const char *detail,
                        const char *extra_members);
/* Replies {"error": error, "detail": detail} (detail may be NULL). */
void hf_http_reply_error(struct evhttp_request *req, int status, const char *error,
                         const char *detail);
/* Replies with a body and content type (NULL body: empty). */
void hf_http_reply(struct evhttp_request *req, int status, const char *content_type,
                   const void *body, size_t len);

/* The event base the request runs on. */
struct event_base *hf_http_request_base(struct evhttp_request *req);
/* The standard reason phrase of a status. */
const char *hf_http_reason(int status);

#endif
