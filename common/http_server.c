/* http_server: a libevent HTTP server on several event-loop threads sharing one port
 * (SO_REUSEPORT), with limits on body and header size, connections and slow clients. */
#include "http_server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h> /* the request's HTTP version: 2.1 has no accessor for it */
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "config.h"
#include "json.h"
#include "log.h"

typedef struct loop loop;

/* Request deadlines. The inactivity timeout (timeout_ms) closes an idle or stalled connection,
 * but a client sending a byte just often enough (slowloris) would keep it forever: a request
 * must also arrive whole within REQUEST_DEADLINE_FACTOR x timeout_ms of its connection's last
 * answer (or of the accept). A loop sweeps its connections twice per timeout; the time its
 * handler takes to answer is not the client's, so a connection waiting for an answer is left
 * alone. Connections are found by socket, which is unique while open. */
#define REQUEST_DEADLINE_FACTOR 4

typedef struct conn_clock {
    struct evhttp_connection *evcon; /* NULL: no connection on this socket */
    int64_t since_ms;                /* accepted, or its last answer sent */
    bool answering;                  /* a request is with the handler */
} conn_clock;

struct hf_http_server {
    hf_http_options opts;
    hf_http_handler handler;
    void *arg;
    int port;
    loop *loops;
    int nloops;
    atomic_int_fast64_t connections;
    atomic_bool accepting;
    bool closing; /* hf_http_server_free is freeing the loops: no loop tells another anything */
};

/* One event-loop thread: its base, its evhttp on its own SO_REUSEPORT socket, and the
 * connections it accepted (see connection_new). */
struct loop {
    hf_http_server *server;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *post_accept; /* highest priority: adopts connections just accepted */
    int fd;
    pthread_t thread;
    struct bufferevent **fresh; /* accepted, not yet adopted */
    size_t nfresh, capfresh;
    bool paused;
    conn_clock *clocks; /* by socket: this loop's connections (see request deadlines) */
    size_t nclocks;
    struct event *sweep;
    struct event *recheck; /* another thread asks this loop to pause or resume accepting */
};

static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;

static void init_evthread(void)
{
    evthread_use_pthreads();
}

static int listen_socket(const char *host, int port, bool exclusive_check, int *bound_port,
                         char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        sslen = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        sslen = sizeof *v6;
    } else if (strcmp(host, "localhost") == 0) {
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        v4->sin_port = htons((uint16_t)port);
        sslen = sizeof *v4;
    } else {
        return hf_err(err, errlen, "listen address \"%s\" is not an IP address", host);
    }
    int one = 1;
    if (port != 0 && exclusive_check) {
        /* SO_REUSEPORT would let a second server share a port already in use without a word:
         * probe it with a plain bind first, so a port conflict fails start-up clearly. */
        int probe = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0) {
            setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            int rc = bind(probe, (struct sockaddr *)&ss, sslen);
            int e = errno;
            close(probe);
            if (rc != 0)
                return hf_err(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(e));
        }
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return hf_err(err, errlen, "socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        close(fd);
        return hf_err(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(e));
    }
    sslen = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sslen);
    *bound_port = ntohs(ss.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
    return fd;
}

/* Connection accounting. libevent 2.1 has neither a connection limit nor a hook when a server
 * connection is created, so each loop makes its connections' bufferevents itself (bevcb) and,
 * from a highest-priority event that libevent runs as soon as the accept callback returns (before
 * any other event and before any I/O on the new socket), finds the evhttp_connection evhttp made
 * around it and registers a close callback there. A reference keeps the bufferevent valid until
 * then. The limit is the server's total: at it every loop disables its listener (new connections
 * wait in the kernel backlog), below it every loop accepts again. Fixed shares per loop would
 * leave a client waiting behind a full loop while another had room (SO_REUSEPORT picks the
 * socket by hash). Loops accepting at the same moment may pass the limit by a connection each. */
static bool at_limit(const hf_http_server *s)
{
    return atomic_load(&s->connections) >= s->opts.max_connections;
}

static void pause_or_resume(loop *l)
{
    bool full = at_limit(l->server);
    bool want_paused = full || !atomic_load(&l->server->accepting);
    if (want_paused == l->paused || !l->bound)
        return;
    struct evconnlistener *lev = evhttp_bound_socket_get_listener(l->bound);
    if (want_paused)
        evconnlistener_disable(lev);
    else
        evconnlistener_enable(lev);
    l->paused = want_paused;
    if (want_paused && full)
        hf_log_kv(HF_LOG_WARN, "http.connection_limit", "msg",
                  "connection limit reached; new connections wait in the backlog", NULL);
}

/* The clock of evcon's socket, grown on demand; NULL when the socket is gone. */
static conn_clock *clock_of(loop *l, struct evhttp_connection *evcon, bool grow)
{
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= l->nclocks) {
        if (!grow)
            return NULL;
        size_t n = l->nclocks ? l->nclocks : 64;
        while (n <= (size_t)fd)
            n *= 2;
        l->clocks = xrealloc(l->clocks, n * sizeof *l->clocks);
        memset(l->clocks + l->nclocks, 0, (n - l->nclocks) * sizeof *l->clocks);
        l->nclocks = n;
    }
    return &l->clocks[fd];
}

static void request_answered(struct evhttp_request *req, void *arg)
{
    conn_clock *c = clock_of(arg, evhttp_request_get_connection(req), false);
    if (c && c->evcon == evhttp_request_get_connection(req)) {
        c->answering = false;
        c->since_ms = hf_now_ms();
    }
}

/* Closes the connections whose next request has not arrived whole in time. */
static void sweep_connections(evutil_socket_t fd, short what, void *arg)
{
    loop *l = arg;
    int64_t limit = (int64_t)REQUEST_DEADLINE_FACTOR * l->server->opts.timeout_ms;
    int64_t now = hf_now_ms();
    for (size_t i = 0; i < l->nclocks; i++) {
        conn_clock *c = &l->clocks[i];
        if (c->evcon && !c->answering && now - c->since_ms > limit) {
            hf_log_kv(HF_LOG_INFO, "http.request_too_slow", "msg",
                      "a request did not arrive whole in time; connection closed", NULL);
            evhttp_connection_free(c->evcon); /* its close callback clears c */
        }
    }
}

static void recheck_listener(evutil_socket_t fd, short what, void *arg)
{
    pause_or_resume(arg);
}

/* The other loops pause or resume too (on their own threads). Not while the server is being
 * freed: the loops have stopped, and their events are freed one loop after the other. */
static void tell_other_loops(loop *l)
{
    hf_http_server *s = l->server;
    if (s->closing)
        return;
    for (int i = 0; i < s->nloops; i++)
        if (&s->loops[i] != l && s->loops[i].recheck)
            event_active(s->loops[i].recheck, EV_TIMEOUT, 0);
}

/* One connection fewer: at the limit before, every loop may accept again. */
static void connection_gone(loop *l)
{
    int64_t before = atomic_fetch_sub(&l->server->connections, 1);
    if (before >= l->server->opts.max_connections && !at_limit(l->server))
        tell_other_loops(l);
}

static void connection_closed(struct evhttp_connection *evcon, void *arg)
{
    loop *l = arg;
    conn_clock *c = clock_of(l, evcon, false);
    if (c && c->evcon == evcon)
        c->evcon = NULL;
    connection_gone(l);
    pause_or_resume(l);
}

static struct bufferevent *connection_new(struct event_base *base, void *arg)
{
    loop *l = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!bev)
        return NULL;
    bufferevent_incref(bev);
    if (l->nfresh == l->capfresh) {
        l->capfresh = l->capfresh ? l->capfresh * 2 : 16;
        l->fresh = xrealloc(l->fresh, l->capfresh * sizeof *l->fresh);
    }
    l->fresh[l->nfresh++] = bev;
    int64_t before = atomic_fetch_add(&l->server->connections, 1);
    /* At the limit, stop now: the listener's callback goes on accepting the whole backlog
     * unless it is disabled while it runs. */
    if (at_limit(l->server)) {
        pause_or_resume(l);
        if (before < l->server->opts.max_connections)
            tell_other_loops(l);
    }
    event_active(l->post_accept, EV_TIMEOUT, 0);
    return bev;
}

static void connections_adopt(evutil_socket_t fd, short what, void *arg)
{
    loop *l = arg;
    for (size_t i = 0; i < l->nfresh; i++) {
        struct bufferevent *bev = l->fresh[i];
        bufferevent_event_cb eventcb = NULL;
        void *cbarg = NULL;
        bufferevent_getcb(bev, NULL, NULL, &eventcb, &cbarg);
        if (eventcb && cbarg) {
            evhttp_connection_set_closecb(cbarg, connection_closed, l);
            conn_clock *c = clock_of(l, cbarg, true);
            if (c)
                *c = (conn_clock){.evcon = cbarg, .since_ms = hf_now_ms()};
        } else {
            /* evhttp gave the connection up during the accept itself. */
            connection_gone(l);
        }
        bufferevent_decref(bev);
    }
    l->nfresh = 0;
    pause_or_resume(l);
}

/* Bytes of the request line and headers as sent, line endings counted. libevent is given twice
 * the limit (it answers past its own limit with an HTML page, and counts without line endings):
 * requests between the two get a JSON 431 here. */
static size_t header_bytes(struct evhttp_request *req)
{
    static const char *const methods[] = {"GET",     "POST",  "HEAD",    "PUT",  "DELETE",
                                          "OPTIONS", "TRACE", "CONNECT", "PATCH"};
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    size_t method = 7; /* the longest, when libevent names one we do not */
    for (size_t i = 0; i < HF_ARRAY_LEN(methods); i++)
        if (cmd == (enum evhttp_cmd_type)(1 << i))
            method = strlen(methods[i]);
    const char *uri = evhttp_request_get_uri(req);
    size_t n = method + 1 + (uri ? strlen(uri) : 0) + sizeof " HTTP/1.1\r\n" - 1;
    const struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    for (const struct evkeyval *kv = h->tqh_first; kv; kv = kv->next.tqe_next)
        n += strlen(kv->key) + 2 + strlen(kv->value) + 2;
    return n + 2;
}

/* Answers a request the server refuses itself, then closes its connection: what follows it on
 * the connection cannot be told apart from a body (see framing_error). */
static void refuse_and_close(struct evhttp_request *req, int status, const char *error,
                             const char *detail)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    /* libevent would add "Connection: keep-alive" for an HTTP/1.0 keep-alive request, and never
     * closes a connection after answering CONNECT. */
    evhttp_remove_header(evhttp_request_get_input_headers(req), "Connection");
    if (req->type == EVHTTP_REQ_CONNECT)
        req->type = EVHTTP_REQ_GET;
    hf_http_reply_error(req, status, error, detail);
}

/* libevent 2.1 reads no body for HEAD and TRACE and a body of other methods by Content-Length
 * or, when Transfer-Encoding is exactly "chunked", by chunks; it accepts any HTTP/1.x version
 * number, even HTTP/0.x and HTTP/-1.x, and echoes it in the status line. Whatever it does not
 * read stays in the stream and would be parsed as the next request (a request smuggled past a
 * proxy that frames the bytes otherwise). Such requests are refused and their connection
 * closed. */
static bool framing_error(struct evhttp_request *req)
{
    if (req->major != 1 || req->minor < 0 || req->minor > 1) {
        req->major = 1;
        req->minor = 1; /* the status line of the answer */
        refuse_and_close(req, 505, "http_version_not_supported", "use HTTP/1.1 or HTTP/1.0");
        return true;
    }
    const struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    int codings = 0;
    bool chunked = false, length = false, bad_length = false;
    const char *first_length = NULL;
    for (const struct evkeyval *kv = h->tqh_first; kv; kv = kv->next.tqe_next) {
        if (evutil_ascii_strcasecmp(kv->key, "Transfer-Encoding") == 0) {
            codings++;
            chunked = evutil_ascii_strcasecmp(kv->value, "chunked") == 0;
        } else if (evutil_ascii_strcasecmp(kv->key, "Content-Length") == 0) {
            /* Digits only ("+5" is 5 to libevent's strtoll, not to a strict proxy), and the
             * same each time: libevent frames by the first, a proxy may by the last. */
            length = length || strspn(kv->value, "0") != strlen(kv->value);
            bad_length = bad_length || kv->value[strspn(kv->value, "0123456789")] != '\0' ||
                         (first_length && strcmp(first_length, kv->value) != 0);
            first_length = first_length ? first_length : kv->value;
        }
    }
    if (bad_length) {
        refuse_and_close(req, 400, "bad_content_length",
                         "Content-Length must be digits, given once or always the same");
        return true;
    }
    if (codings > 1 || (codings == 1 && !chunked)) {
        refuse_and_close(req, 501, "transfer_encoding_not_supported",
                         "Transfer-Encoding must be chunked, once, or absent");
        return true;
    }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool unread = cmd == EVHTTP_REQ_HEAD || cmd == EVHTTP_REQ_TRACE
                      ? codings || length
                      : length && evbuffer_get_length(evhttp_request_get_input_buffer(req)) == 0;
    if (unread) {
        refuse_and_close(req, 400, "body_not_allowed", "this method takes no request body");
        return true;
    }
    return false;
}

static void dispatch(struct evhttp_request *req, void *arg)
{
    loop *l = arg;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    conn_clock *c = clock_of(l, evcon, false);
    if (c && c->evcon == evcon) {
        c->answering = true;
        evhttp_request_set_on_complete_cb(req, request_answered, l);
    }
    if (l->server->opts.prepare)
        l->server->opts.prepare(req, l->server->arg);
    if (framing_error(req))
        return;
    if (header_bytes(req) > l->server->opts.max_headers) {
        char detail[96];
        snprintf(detail, sizeof detail, "the request line and headers are over the %zu-byte limit",
                 l->server->opts.max_headers);
        hf_http_reply_error(req, 431, "headers_too_large", detail);
        return;
    }
    l->server->handler(req, l->server->arg);
}

static void *loop_main(void *arg)
{
    loop *l = arg;
    event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

hf_http_server *hf_http_server_new(const hf_http_options *opts, hf_http_handler handler, void *arg,
                                   char *err, size_t errlen)
{
    pthread_once(&evthread_once, init_evthread);
    char host[256];
    int port;
    if (!hf_config_parse_listen(opts->listen, host, sizeof host, &port)) {
        hf_err(err, errlen, "bad listen address \"%s\"", opts->listen);
        return NULL;
    }
    hf_http_server *s = xcalloc(1, sizeof *s);
    s->opts = *opts;
    s->opts.listen = NULL;
    s->handler = handler;
    s->arg = arg;
    s->nloops = opts->threads > 0 ? opts->threads : 1;
    /* Every loop takes at least one connection: more loops than connections allowed would let
     * the loops together take more than the limit. */
    if (opts->max_connections > 0 && s->nloops > opts->max_connections)
        s->nloops = opts->max_connections;
    s->loops = xcalloc((size_t)s->nloops, sizeof *s->loops);
    atomic_store(&s->accepting, true);
    for (int i = 0; i < s->nloops; i++) {
        loop *l = &s->loops[i];
        l->server = s;
        l->fd = -1;
        /* The first socket picks the port when 0 was asked; the others share it. */
        int bound_port = 0;
        l->fd = listen_socket(host, i == 0 ? port : s->port, i == 0, &bound_port, err, errlen);
        if (l->fd < 0)
            goto fail;
        if (i == 0)
            s->port = bound_port;
        /* The changelist folds the add/remove pairs evhttp makes on each connection's events in
         * one loop pass into at most one epoll_ctl (no fd here is ever dup()ed). */
        struct event_config *ec = event_config_new();
        event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        l->base = event_base_new_with_config(ec);
        event_config_free(ec);
        /* Two priorities: 0 for post_accept, 1 (the default) for everything else. */
        event_base_priority_init(l->base, 2);
        l->http = evhttp_new(l->base);
        evhttp_set_max_body_size(l->http, (ev_ssize_t)opts->max_body);
        evhttp_set_max_headers_size(l->http, (ev_ssize_t)opts->max_headers * 2);
        struct timeval tv = {opts->timeout_ms / 1000, (opts->timeout_ms % 1000) * 1000};
        evhttp_set_timeout_tv(l->http, &tv);
        /* Every method libevent knows reaches the handler, which answers the ones it does not
         * serve with a JSON 405 (libevent's own refusal is an HTML page). */
        evhttp_set_allowed_methods(l->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                                EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                                EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS |
                                                EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
        evhttp_set_default_content_type(l->http, "application/json");
        evhttp_set_gencb(l->http, dispatch, l);
        evhttp_set_bevcb(l->http, connection_new, l);
        l->bound = evhttp_accept_socket_with_handle(l->http, l->fd);
        if (!l->bound) {
            hf_err(err, errlen, "cannot accept on %s", opts->listen);
            goto fail;
        }
        l->post_accept = event_new(l->base, -1, 0, connections_adopt, l);
        event_priority_set(l->post_accept, 0);
        l->sweep = event_new(l->base, -1, EV_PERSIST, sweep_connections, l);
        l->recheck = event_new(l->base, -1, 0, recheck_listener, l);
        int every = opts->timeout_ms / 2 > 10 ? opts->timeout_ms / 2 : 10;
        struct timeval sweep_tv = {every / 1000, (every % 1000) * 1000};
        event_add(l->sweep, &sweep_tv);
    }
    return s;
fail:
    hf_http_server_free(s);
    return NULL;
}

int hf_http_server_port(const hf_http_server *s)
{
    return s->port;
}

void hf_http_server_start(hf_http_server *s)
{
    for (int i = 0; i < s->nloops; i++)
        pthread_create(&s->loops[i].thread, NULL, loop_main, &s->loops[i]);
}

void hf_http_server_stop_accepting(hf_http_server *s)
{
    atomic_store(&s->accepting, false);
    for (int i = 0; i < s->nloops; i++)
        if (s->loops[i].recheck)
            event_active(s->loops[i].recheck, EV_TIMEOUT, 0);
}

typedef struct sync_point {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int left; /* loops that have not reached it yet */
} sync_point;

static void sync_reached(evutil_socket_t fd, short what, void *arg)
{
    sync_point *sp = arg;
    pthread_mutex_lock(&sp->lock);
    if (--sp->left == 0)
        pthread_cond_signal(&sp->cond);
    pthread_mutex_unlock(&sp->lock);
}

void hf_http_server_sync(hf_http_server *s)
{
    sync_point sp = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    pthread_mutex_lock(&sp.lock);
    for (int i = 0; i < s->nloops; i++)
        if (s->loops[i].thread &&
            event_base_once(s->loops[i].base, -1, EV_TIMEOUT, sync_reached, &sp, NULL) == 0)
            sp.left++;
    while (sp.left > 0)
        pthread_cond_wait(&sp.cond, &sp.lock);
    pthread_mutex_unlock(&sp.lock);
    pthread_mutex_destroy(&sp.lock);
    pthread_cond_destroy(&sp.cond);
}

int64_t hf_http_server_connections(const hf_http_server *s)
{
    return atomic_load(&((hf_http_server *)s)->connections);
}

void hf_http_server_free(hf_http_server *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->nloops; i++) {
        loop *l = &s->loops[i];
        if (l->thread) {
            /* loopexit, not loopbreak: a break asked before the thread has entered its loop is
             * forgotten when the loop starts (and this join would wait forever); an exit is an
             * event of the base, run whenever the loop gets to it. */
            event_base_loopexit(l->base, NULL);
            pthread_join(l->thread, NULL);
        }
    }
    s->closing = true; /* every loop thread has ended: read by this thread only from here */
    for (int i = 0; i < s->nloops; i++) {
        loop *l = &s->loops[i];
        for (size_t k = 0; k < l->nfresh; k++)
            bufferevent_decref(l->fresh[k]);
        l->nfresh = 0;
        /* evhttp_free frees the listener first, then closes each connection, whose close
         * callback would re-enable that freed listener if the loop was paused at the limit. */
        bool listening = l->bound != NULL;
        l->bound = NULL;
        if (l->http)
            evhttp_free(l->http); /* closes the listener and every connection */
        if (l->post_accept)
            event_free(l->post_accept);
        if (l->sweep)
            event_free(l->sweep);
        if (l->recheck)
            event_free(l->recheck);
        free(l->fresh);
        free(l->clocks);
        if (l->base)
            event_base_free(l->base);
        if (!listening && l->fd >= 0)
            close(l->fd);
    }
    free(s->loops);
    free(s);
}

const char *hf_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 431:
        return "Request Header Fields Too Large";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Status";
    }
}

/* The Date header, made once a second per thread: libevent would otherwise format it for every
 * reply (gmtime_r, which takes glibc's time zone lock, and snprintf). */
static const char *http_date(void)
{
    static __thread time_t made = -1;
    static __thread char text[64];
    time_t now = time(NULL);
    if (now != made) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        made = now;
    }
    return text;
}

void hf_http_reply(struct evhttp_request *req, int status, const char *content_type,
                   const void *body, size_t len)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Date", http_date());
    if (content_type)
        evhttp_add_header(out, "Content-Type", content_type);
    bool tunnel = evhttp_request_get_command(req) == EVHTTP_REQ_CONNECT && status < 300;
    if (status >= 200 && status != 204 && status != 304 && !tunnel) {
        /* Said here, not left to libevent 2.1: it leaves the length out for HEAD (and sends the
         * body all the same, which the client would read as the next answer) and for CONNECT
         * (where a keep-alive client could not tell where the answer ends). */
        char digits[24], *d = digits + sizeof digits;
        size_t v = body ? len : 0;
        *--d = '\0';
        do
            *--d = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        evhttp_add_header(out, "Content-Length", d);
    }
    if (body && len && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
        evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
    evhttp_send_reply(req, status, hf_http_reason(status), NULL);
}

void hf_http_reply_json(struct evhttp_request *req, int status, const char *json, size_t len)
{
    hf_http_reply(req, status, "application/json", json, len);
}

void hf_http_error_json(hf_buf *out, const char *error, const char *detail,
                        const char *extra_members)
{
    hf_buf_puts(out, "{\"error\":");
    hf_json_append_cstr(out, error);
    if (detail && *detail) {
        hf_buf_puts(out, ",\"detail\":");
        hf_json_append_cstr(out, detail);
    }
    if (extra_members && *extra_members) {
        hf_buf_putc(out, ',');
        hf_buf_puts(out, extra_members);
    }
    hf_buf_putc(out, '}');
}

void hf_http_reply_error(struct evhttp_request *req, int status, const char *error,
                         const char *detail)
{
    hf_buf b = {0};
    hf_http_error_json(&b, error, detail, NULL);
    hf_http_reply_json(req, status, b.data, b.len);
    hf_buf_free(&b);
}

struct event_base *hf_http_request_base(struct evhttp_request *req)
{
    return evhttp_connection_get_base(evhttp_request_get_connection(req));
}
