/* Unit tests for common/http_client against a tiny evhttp server (and a raw socket listener for
 * broken answers) on 127.0.0.1:0 in the test's own event base: methods, headers, bodies, Basic
 * auth, concurrency, connection reuse, timeouts, refused and cut connections, oversized bodies,
 * Retry-After, and cancellation on free. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "util.h"

/* ---- test server ---- */

typedef struct server {
    struct event_base *base;
    struct evhttp *http;
    int port;
    struct evconnlistener *raw; /* answers half a response and hangs up */
    int raw_port;
    int requests;     /* requests the evhttp server has seen */
    int slow_pending; /* /slow requests received and never answered */
    uint16_t peer_ports[64];
    int npeer_ports;
} server;

static const char *header_or_empty(struct evhttp_request *req, const char *name)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), name);
    return v ? v : "";
}

static const char *method_name(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    default:
        return "OTHER";
    }
}

static void note_peer(server *s, struct evhttp_request *req)
{
    char *addr = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &addr, &port);
    for (int i = 0; i < s->npeer_ports; i++)
        if (s->peer_ports[i] == port)
            return;
    if (s->npeer_ports < (int)HF_ARRAY_LEN(s->peer_ports))
        s->peer_ports[s->npeer_ports++] = port;
}

static void handle(struct evhttp_request *req, void *arg)
{
    server *s = arg;
    s->requests++;
    note_peer(s, req);
    const char *uri = evhttp_request_get_uri(req);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct evbuffer *reply = evbuffer_new();

    if (strncmp(uri, "/echo", 5) == 0) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t n = evbuffer_get_length(in);
        char *body = xmalloc(n + 1);
        evbuffer_remove(in, body, n);
        body[n] = '\0';
        evbuffer_add_printf(reply, "%s %s\nx-test: %s\nauthorization: %s\ncontent-type: %s\n%s",
                            method_name(evhttp_request_get_command(req)), uri,
                            header_or_empty(req, "X-Test"), header_or_empty(req, "Authorization"),
                            header_or_empty(req, "Content-Type"), body);
        free(body);
        evhttp_add_header(out, "Content-Type", "text/plain; charset=utf-8");
        evhttp_send_reply(req, 200, "OK", reply);
    } else if (strcmp(uri, "/created") == 0) {
        evbuffer_add_printf(reply, "{\"id\":\"42\"}");
        evhttp_add_header(out, "Content-Type", "application/json");
        evhttp_send_reply(req, 201, "Created", reply);
    } else if (strcmp(uri, "/ratelimited") == 0) {
        evhttp_add_header(out, "Retry-After", "120");
        evhttp_send_reply(req, 429, "Too Many Requests", reply);
    } else if (strcmp(uri, "/unavailable") == 0) {
        char date[64];
        time_t t = time(NULL) + 3600;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        evhttp_add_header(out, "Retry-After", date);
        evhttp_send_reply(req, 503, "Service Unavailable", reply);
    } else if (strcmp(uri, "/big") == 0) {
        size_t n = HF_HTTP_MAX_RESPONSE_BODY + 1024;
        char *big = xmalloc(n);
        memset(big, 'x', n);
        evbuffer_add(reply, big, n);
        free(big);
        evhttp_send_reply(req, 200, "OK", reply);
    } else if (strcmp(uri, "/exact") == 0) {
        size_t n = HF_HTTP_MAX_RESPONSE_BODY;
        char *big = xmalloc(n);
        memset(big, 'y', n);
        evbuffer_add(reply, big, n);
        free(big);
        evhttp_send_reply(req, 200, "OK", reply);
    } else if (strncmp(uri, "/redirect?to=", 13) == 0) {
        evhttp_add_header(out, "Location", uri + 13);
        evhttp_send_reply(req, 302, "Found", reply);
    } else if (strcmp(uri, "/slow") == 0) {
        /* Never answered; the client gives up or is freed, then the connection goes away. */
        s->slow_pending++;
    } else {
        evhttp_send_reply(req, 404, "Not Found", reply);
    }
    evbuffer_free(reply);
}

static void raw_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        bufferevent_free(bev);
}

static void raw_written(struct bufferevent *bev, void *arg)
{
    bufferevent_free(bev); /* closes the socket half-way through the promised body */
}

static void raw_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0)
        return;
    evbuffer_drain(in, evbuffer_get_length(in));
    static const char partial[] =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"par";
    bufferevent_setcb(bev, NULL, raw_written, raw_event, arg);
    bufferevent_write(bev, partial, sizeof partial - 1);
}

static void raw_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                       int socklen, void *arg)
{
    server *s = arg;
    struct bufferevent *bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, raw_read, NULL, raw_event, s);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static int bound_port(evutil_socket_t fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    return ntohs(sin.sin_port);
}

/* A port that was just free (bound, read back, closed): nothing listens there. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    int port = bound_port(fd);
    close(fd);
    return port;
}

static void server_start(server *s, struct event_base *base)
{
    memset(s, 0, sizeof *s);
    s->base = base;
    s->http = evhttp_new(base);
    assert_non_null(s->http);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE);
    evhttp_set_gencb(s->http, handle, s);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
    assert_non_null(bs);
    s->port = bound_port(evhttp_bound_socket_get_fd(bs));

    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->raw = evconnlistener_new_bind(base, raw_accept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                     16, (struct sockaddr *)&sin, sizeof sin);
    assert_non_null(s->raw);
    s->raw_port = bound_port(evconnlistener_get_fd(s->raw));
}

static void server_stop(server *s)
{
    evconnlistener_free(s->raw);
    evhttp_free(s->http);
}

/* ---- client side helpers ---- */

typedef struct result {
    int calls;
    long status;
    char *error;
    bool timed_out;
    bool maybe_sent;
    char *body;
    size_t body_len;
    char *retry_after;
    char *content_type;
    int64_t duration_ms;
} result;

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static void on_done(void *arg, const hf_http_response *r)
{
    result *out = arg;
    out->calls++;
    out->status = r->status;
    out->error = dup_or_null(r->error);
    out->timed_out = r->timed_out;
    out->maybe_sent = r->maybe_sent;
    out->body = xstrndup(r->body, r->body_len);
    out->body_len = r->body_len;
    out->retry_after = dup_or_null(r->retry_after);
    out->content_type = dup_or_null(r->content_type);
    out->duration_ms = r->duration_ms;
}

static void result_free(result *r)
{
    free(r->error);
    free(r->body);
    free(r->retry_after);
    free(r->content_type);
    memset(r, 0, sizeof *r);
}

/* Runs the loop until *count reaches want or timeout_ms passes. */
static void run_until(struct event_base *base, const int *count, int want, int64_t timeout_ms)
{
    int64_t deadline = hf_now_ms() + timeout_ms;
    while (*count < want && hf_now_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(200);
    if (*count < want)
        fail_msg("timed out waiting: %d of %d", *count, want);
}

typedef struct fixture {
    struct event_base *base;
    server srv;
    hf_http_client *client;
} fixture;

static int setup(void **state)
{
    fixture *f = xcalloc(1, sizeof *f);
    f->base = event_base_new();
    server_start(&f->srv, f->base);
    f->client = hf_http_client_new(f->base, 8);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    hf_http_client_free(f->client);
    server_stop(&f->srv);
    event_base_free(f->base);
    free(f);
    return 0;
}

static char *url(const fixture *f, const char *path)
{
    return xasprintf("http://127.0.0.1:%d%s", f->srv.port, path);
}

/* Sends req and waits for its answer. */
static void call(fixture *f, hf_http_request *req, result *out)
{
    memset(out, 0, sizeof *out);
    hf_http_client_send(f->client, req, on_done, out);
    assert_int_equal(out->calls, 0); /* never from inside send */
    run_until(f->base, &out->calls, 1, 10000);
    assert_int_equal(out->calls, 1);
    assert_int_equal(hf_http_client_in_flight(f->client), 0);
}

/* ---- tests ---- */

static void test_get_with_headers(void **state)
{
    fixture *f = *state;
    char *u = url(f, "/echo?x=1");
    const char *headers[] = {"X-Test: hello there", "Accept: application/json", NULL};
    hf_http_request req = {.method = "GET", .url = u, .headers = headers, .timeout_ms = 5000};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 200);
    assert_null(r.error);
    assert_false(r.timed_out);
    assert_string_equal(r.body, "GET /echo?x=1\nx-test: hello there\nauthorization: \n"
                                "content-type: \n");
    assert_string_equal(r.content_type, "text/plain; charset=utf-8");
    assert_null(r.retry_after);
    assert_true(r.duration_ms >= 0);
    result_free(&r);
    free(u);
}

static void test_post_put_patch_delete_with_body(void **state)
{
    fixture *f = *state;
    char *u = url(f, "/echo");
    const char *headers[] = {"Content-Type: application/json", "X-Test: 1", NULL};
    static const char *const methods[] = {"POST", "PUT", "PATCH", "DELETE"};
    for (size_t i = 0; i < HF_ARRAY_LEN(methods); i++) {
        const char body[] = "{\"a\":\"b\\u00e9\",\"n\":1}";
        char copy[sizeof body];
        memcpy(copy, body, sizeof body);
        hf_http_request req = {.method = methods[i],
                               .url = u,
                               .headers = headers,
                               .body = copy,
                               .body_len = strlen(copy),
                               .timeout_ms = 5000};
        result r;
        memset(&r, 0, sizeof r);
        hf_http_client_send(f->client, &req, on_done, &r);
        memset(copy, 0, sizeof copy); /* the body was copied */
        run_until(f->base, &r.calls, 1, 10000);
        assert_int_equal(r.status, 200);
        char *want = xasprintf("%s /echo\nx-test: 1\nauthorization: \ncontent-type: "
                               "application/json\n%s",
                               methods[i], body);
        assert_string_equal(r.body, want);
        free(want);
        result_free(&r);
    }
    free(u);
}

static void test_large_request_body_is_sent_whole(void **state)
{
    fixture *f = *state;
    char *u = url(f, "/echo");
    size_t n = 300 * 1024;
    char *body = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        body[i] = (char)('a' + i % 26);
    hf_http_request req = {
        .method = "POST", .url = u, .body = body, .body_len = n, .timeout_ms = 5000};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 200);
    const char *nl = r.body;
    for (int i = 0; i < 4; i++)
        nl = strchr(nl, '\n') + 1;
    assert_int_equal(strlen(nl), n);
    assert_memory_equal(nl, body, n);
    result_free(&r);
    free(body);
    free(u);
}

static void test_basic_auth(void **state)
{
    fixture *f = *state;
    char *u = url(f, "/echo");
    hf_http_request req = {.method = "POST",
                           .url = u,
                           .basic_user = "AC123",
                           .basic_password = "s3cret:with colon",
                           .timeout_ms = 5000};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 200);
    /* base64("AC123:s3cret:with colon") */
    assert_non_null(strstr(r.body, "authorization: Basic QUMxMjM6czNjcmV0OndpdGggY29sb24=\n"));
    result_free(&r);

    /* Only one of the two: no Authorization header at all. */
    hf_http_request half = {.method = "GET", .url = u, .basic_user = "AC123", .timeout_ms = 5000};
    call(f, &half, &r);
    assert_non_null(strstr(r.body, "authorization: \n"));
    result_free(&r);
    free(u);
}

static void test_status_codes_and_retry_after(void **state)
{
    fixture *f = *state;
    char *u = url(f, "/created");
    hf_http_request req = {.method = "POST", .url = u, .timeout_ms = 5000};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.body, "{\"id\":\"42\"}");
    assert_string_equal(r.content_type, "application/json");
    result_free(&r);
    free(u);

    u = url(f, "/ratelimited");
    req.url = u;
    call(f, &req, &r);
    assert_int_equal(r.status, 429);
    assert_null(r.error);
    assert_string_equal(r.retry_after, "120");
    assert_int_equal(hf_http_retry_after_ms(r.retry_after, hf_wall_ms()), 120000);
    result_free(&r);
    free(u);

    u = url(f, "/unavailable");
    req.url = u;
    call(f, &req, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(r.retry_after);
    int64_t ms = hf_http_retry_after_ms(r.retry_after, hf_wall_ms());
    assert_true(ms > 3590000 && ms <= 3600000);
    result_free(&r);
    free(u);

    u = url(f, "/nowhere");
    req.url = u;
    call(f, &req, &r);
    assert_int_equal(r.status, 404);
    assert_null(r.retry_after);
    result_free(&r);
    free(u);
}

typedef struct many {
    int done;
    int ok;
    int index_seen[50];
} many;

typedef struct one {
    many *m;
    int i;
} one;

static void on_many_done(void *arg, const hf_http_response *r)
{
    one *o = arg;
    o->m->done++;
    char want[64];
    snprintf(want, sizeof want, "POST /echo?i=%d\n", o->i);
    if (r->status == 200 && strncmp(r->body, want, strlen(want)) == 0) {
        char tail[64];
        snprintf(tail, sizeof tail, "\nbody-%d", o->i);
        if (strstr(r->body, tail))
            o->m->ok++;
    }
    o->m->index_seen[o->i]++;
}

static void test_fifty_concurrent_requests(void **state)
{
    fixture *f = *state;
    many m = {0};
    one ones[50];
    const char *headers[] = {"Content-Type: text/plain", NULL};
    char bodies[50][16];
    for (int i = 0; i < 50; i++) {
        char path[32];
        snprintf(path, sizeof path, "/echo?i=%d", i);
        char *u = url(f, path);
        snprintf(bodies[i], sizeof bodies[i], "body-%d", i);
        ones[i] = (one){&m, i};
        hf_http_request req = {.method = "POST",
                               .url = u,
                               .headers = headers,
                               .body = bodies[i],
                               .body_len = strlen(bodies[i]),
                               .timeout_ms = 10000};
        hf_http_client_send(f->client, &req, on_many_done, &ones[i]);
        free(u);
    }
    assert_int_equal(hf_http_client_in_flight(f->client), 50);
    run_until(f->base, &m.done, 50, 20000);
    assert_int_equal(m.ok, 50);
    for (int i = 0; i < 50; i++)
        assert_int_equal(m.index_seen[i], 1);
    assert_int_equal(hf_http_client_in_flight(f->client), 0);
    /* In parallel over several connections, at most 8 per host, each reused. */
    assert_true(f->srv.npeer_ports >= 2);
    assert_true(f->srv.npeer_ports <= 8);
}

static void test_sequential_requests_reuse_one_connection(void **state)
{
    fixture *f = *state;
    char *u = url(f, "/echo");
    for (int i = 0; i < 5; i++) {
        hf_http_request req = {.method = i % 2 ? "POST" : "GET",
                               .url = u,
                               .body = "x",
                               .body_len = i % 2,
                               .timeout_ms = 5000};
        result r;
        call(f, &req, &r);
        assert_int_equal(r.status, 200);
        result_free(&r);
    }
    assert_int_equal(f->srv.requests, 5);
    assert_int_equal(f->srv.npeer_ports, 1);
    free(u);
}

static void test_timeout(void **state)
{
    fixture *f = *state;
    char *u = url(f, "/slow");
    hf_http_request req = {
        .method = "POST", .url = u, .body = "{}", .body_len = 2, .timeout_ms = 300};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 0);
    assert_true(r.timed_out);
    assert_non_null(r.error);
    assert_non_null(strstr(r.error, "timed out"));
    assert_true(r.maybe_sent); /* the server has the request: outcome unknown */
    assert_int_equal(f->srv.slow_pending, 1);
    assert_true(r.duration_ms >= 250);
    result_free(&r);
    free(u);
}

static void test_connection_refused(void **state)
{
    fixture *f = *state;
    char *u = xasprintf("http://127.0.0.1:%d/x", closed_port());
    hf_http_request req = {
        .method = "POST", .url = u, .body = "a", .body_len = 1, .timeout_ms = 5000};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(r.error);
    assert_false(r.timed_out);
    assert_false(r.maybe_sent);
    assert_string_equal(r.body, "");
    result_free(&r);
    free(u);
}

static void test_server_closes_mid_response(void **state)
{
    fixture *f = *state;
    char *u = xasprintf("http://127.0.0.1:%d/cut", f->srv.raw_port);
    hf_http_request req = {
        .method = "PUT", .url = u, .body = "{}", .body_len = 2, .timeout_ms = 5000};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(r.error);
    assert_false(r.timed_out);
    assert_true(r.maybe_sent);
    assert_int_equal(r.body_len, 0);
    result_free(&r);
    free(u);
}

static void test_response_body_cap(void **state)
{
    fixture *f = *state;
    char *u = url(f, "/big");
    hf_http_request req = {.method = "GET", .url = u, .timeout_ms = 10000};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(r.error);
    assert_non_null(strstr(r.error, "4 MiB"));
    assert_true(r.maybe_sent);
    result_free(&r);
    free(u);

    u = url(f, "/exact");
    req.url = u;
    call(f, &req, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, HF_HTTP_MAX_RESPONSE_BODY);
    result_free(&r);
    free(u);
}

static void test_malformed_url_reports_from_the_loop(void **state)
{
    fixture *f = *state;
    hf_http_request req = {.method = "GET", .url = "ftp://127.0.0.1/x", .timeout_ms = 1000};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(r.error);
    assert_false(r.maybe_sent);
    result_free(&r);
}

typedef struct cancel_count {
    int calls;
    int cancelled;
    int maybe_sent;
} cancel_count;

static void on_cancel_done(void *arg, const hf_http_response *r)
{
    cancel_count *cc = arg;
    cc->calls++;
    if (r->status == 0 && r->error && strcmp(r->error, "cancelled") == 0)
        cc->cancelled++;
    if (r->maybe_sent)
        cc->maybe_sent++;
}

static void test_free_cancels_requests_in_flight(void **state)
{
    fixture *f = *state;
    hf_http_client *c = hf_http_client_new(f->base, 2);
    char *u = url(f, "/slow");
    cancel_count cc = {0};
    for (int i = 0; i < 3; i++) {
        hf_http_request req = {
            .method = "POST", .url = u, .body = "{}", .body_len = 2, .timeout_ms = 30000};
        hf_http_client_send(c, &req, on_cancel_done, &cc);
    }
    assert_int_equal(hf_http_client_in_flight(c), 3);
    /* Two reach the server (two connections allowed); the third waits for a connection. */
    run_until(f->base, &f->srv.slow_pending, 2, 5000);
    assert_int_equal(cc.calls, 0);
    hf_http_client_free(c);
    assert_int_equal(cc.calls, 3);
    assert_int_equal(cc.cancelled, 3);
    assert_int_equal(cc.maybe_sent, 2);
    free(u);
}

typedef struct reentrant {
    hf_http_client *client;
    struct event_base *base;
    char *url;
    int calls;
    int cancelled;
} reentrant;

static void on_second_done(void *arg, const hf_http_response *r)
{
    reentrant *re = arg;
    re->calls++;
    if (r->error && strcmp(r->error, "cancelled") == 0)
        re->cancelled++;
}

/* The first answer sends another request and then frees the client from inside done. */
static void on_first_done(void *arg, const hf_http_response *r)
{
    reentrant *re = arg;
    re->calls++;
    hf_http_request req = {.method = "GET", .url = re->url, .timeout_ms = 5000};
    hf_http_client_send(re->client, &req, on_second_done, re);
    hf_http_client_free(re->client);
    re->client = NULL;
}

static void test_free_from_inside_done(void **state)
{
    fixture *f = *state;
    reentrant re = {.client = hf_http_client_new(f->base, 4), .base = f->base};
    re.url = url(f, "/echo");
    hf_http_request req = {.method = "GET", .url = re.url, .timeout_ms = 5000};
    hf_http_client_send(re.client, &req, on_first_done, &re);
    run_until(f->base, &re.calls, 2, 5000);
    assert_null(re.client);
    assert_int_equal(re.cancelled, 1);
    /* The loop keeps running fine afterwards. */
    for (int i = 0; i < 10; i++)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    free(re.url);
}

static void test_retry_after_parsing(void **state)
{
    (void)state;
    /* 2015-10-21T07:27:30Z */
    const int64_t now = 1445412450000LL;
    assert_int_equal(hf_http_retry_after_ms("120", now), 120000);
    assert_int_equal(hf_http_retry_after_ms("  0 ", now), 0);
    assert_int_equal(hf_http_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", now), 30000);
    assert_int_equal(hf_http_retry_after_ms("Wednesday, 21-Oct-15 07:28:00 GMT", now), 30000);
    assert_int_equal(hf_http_retry_after_ms("Wed Oct 21 07:28:00 2015", now), 30000);
    assert_int_equal(hf_http_retry_after_ms("Wed Oct  1 07:28:00 2015", now), 0); /* past */
    assert_int_equal(hf_http_retry_after_ms("Tue, 20 Oct 2015 07:28:00 GMT", now), 0);
    assert_true(hf_http_retry_after_ms("99999999999999999999999", now) > 0);
    static const char *const bad[] = {
        "",
        "  ",
        "soon",
        "-5",
        "1.5",
        "12s",
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "Wed, 21 Foo 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 07:28:00 PST",
        "Wed, 21 Oct 2015 25:28:00 GMT",
        "Wed, 21 Oct 2015 07:28:00 GMT trailing",
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++)
        if (hf_http_retry_after_ms(bad[i], now) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(hf_http_retry_after_ms(NULL, now), -1);
}

/* Retry-After dates that do not exist ("31 Nov", "30 Feb") are refused, not rolled over. */
static void test_retry_after_refuses_impossible_dates(void **state)
{
    (void)state;
    const int64_t now = 1445412450000LL; /* 2015-10-21T07:27:30Z */
    static const char *const bad[] = {
        "Tue, 31 Nov 2015 07:28:00 GMT", /* November has 30 days */
        "Tue, 30 Feb 2016 07:28:00 GMT", /* no year has a 30 February */
        "Mon Nov 31 07:28:00 2015",
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++) {
        int64_t ms = hf_http_retry_after_ms(bad[i], now);
        if (ms != -1)
            fail_msg("accepted \"%s\" as %lld ms", bad[i], (long long)ms);
    }
}

/* ---- review tests ---- */

/* A listener that answers the first request of each connection (200, kept alive) and hangs up
 * on the second one after reading it whole, without answering: a connection that dies after the
 * server received (and may have acted on) the request. */
typedef struct dying {
    struct event_base *base;
    struct evconnlistener *l;
    int port;
    int requests;    /* complete requests received, over all connections */
    int connections; /* connections accepted */
    struct bufferevent *open[16];
} dying;

typedef struct dying_conn {
    dying *d;
    int served;
    int slot;
} dying_conn;

static void dying_close(dying_conn *dc, struct bufferevent *bev)
{
    dc->d->open[dc->slot] = NULL;
    free(dc);
    bufferevent_free(bev);
}

static void dying_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        dying_close(arg, bev);
}

static void dying_read(struct bufferevent *bev, void *arg)
{
    dying_conn *dc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (end.pos < 0)
            return;
        size_t head = (size_t)end.pos + 4;
        char *h = xmalloc(head + 1);
        evbuffer_copyout(in, h, head);
        h[head] = '\0';
        size_t clen = 0;
        for (char *q = h; *q; q++)
            if (strncasecmp(q, "\r\ncontent-length:", 17) == 0)
                clen = (size_t)strtoul(q + 17, NULL, 10);
        free(h);
        if (evbuffer_get_length(in) < head + clen)
            return;
        evbuffer_drain(in, head + clen);
        dc->d->requests++;
        if (dc->served++ == 0) {
            static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                     "Content-Length: 2\r\n\r\nok";
            bufferevent_write(bev, ok, sizeof ok - 1);
        } else {
            dying_close(dc, bev); /* received, never answered */
            return;
        }
    }
}

static void dying_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                         int socklen, void *arg)
{
    dying *d = arg;
    dying_conn *dc = xcalloc(1, sizeof *dc);
    dc->d = d;
    dc->slot = d->connections++;
    assert_true(dc->slot < (int)HF_ARRAY_LEN(d->open));
    struct bufferevent *bev = bufferevent_socket_new(d->base, fd, BEV_OPT_CLOSE_ON_FREE);
    d->open[dc->slot] = bev;
    bufferevent_setcb(bev, dying_read, NULL, dying_event, dc);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void dying_start(dying *d, struct event_base *base)
{
    memset(d, 0, sizeof *d);
    d->base = base;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    d->l = evconnlistener_new_bind(base, dying_accept, d, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                   16, (struct sockaddr *)&sin, sizeof sin);
    assert_non_null(d->l);
    d->port = bound_port(evconnlistener_get_fd(d->l));
}

static void dying_stop(dying *d)
{
    for (size_t i = 0; i < HF_ARRAY_LEN(d->open); i++) {
        if (d->open[i]) {
            void *dc = NULL;
            bufferevent_getcb(d->open[i], NULL, NULL, NULL, &dc);
            dying_close(dc, d->open[i]);
        }
    }
    if (d->l)
        evconnlistener_free(d->l);
}

/* A POST sent on a kept-alive connection that dies after the server received it (no answer) is
 * reported as maybe sent, not sent again: libcurl's "connection died, retrying a fresh connect"
 * resent it on a new connection and reported the second answer as the only outcome, so a
 * platform without idempotency keys (Twilio) sent two SMS and the run recorded one call. */
static void test_post_not_resent_after_reused_connection_dies(void **state)
{
    fixture *f = *state;
    dying d;
    dying_start(&d, f->base);
    char *u = xasprintf("http://127.0.0.1:%d/2010-04-01/Accounts/AC1/Messages.json", d.port);
    hf_http_request req = {
        .method = "POST", .url = u, .body = "Body=hi", .body_len = 7, .timeout_ms = 5000};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(d.requests, 1);
    result_free(&r);

    call(f, &req, &r); /* goes out on the kept-alive connection, which then dies */
    int requests = d.requests, connections = d.connections;
    long status = r.status;
    bool maybe_sent = r.maybe_sent;
    result_free(&r);
    dying_stop(&d);
    free(u);
    if (requests != 2 || status != 0 || !maybe_sent)
        fail_msg("the server received the POST %d times over %d connections (want 2 over 1); "
                 "reported status %ld, maybe_sent %d (want 0, 1)",
                 requests, connections, status, maybe_sent);
}

/* A POST without a body (nothing for libcurl to rewind, so the read callback cannot stop its
 * resend) goes out on a connection of its own: the server still gets each POST once. */
static void test_empty_body_post_is_not_resent_either(void **state)
{
    fixture *f = *state;
    dying d;
    dying_start(&d, f->base);
    char *u = xasprintf("http://127.0.0.1:%d/v1/actions/send", d.port);
    hf_http_request req = {.method = "POST", .url = u, .body = "", .timeout_ms = 5000};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 200);
    result_free(&r);
    call(f, &req, &r);
    int requests = d.requests, connections = d.connections;
    result_free(&r);
    dying_stop(&d);
    free(u);
    if (requests != 2)
        fail_msg("the server received the two empty POSTs %d times over %d connections", requests,
                 connections);
}

/* The same death of a kept-alive connection when libcurl's silent second attempt then cannot
 * connect (the host went away): the server has the POST, so the answer must say maybe_sent (the
 * executor repeats calls with !maybe_sent as never sent). */
static void test_reused_connection_death_reports_maybe_sent(void **state)
{
    fixture *f = *state;
    dying d;
    dying_start(&d, f->base);
    char *u = xasprintf("http://127.0.0.1:%d/2010-04-01/Accounts/AC1/Messages.json", d.port);
    hf_http_request req = {
        .method = "POST", .url = u, .body = "Body=hi", .body_len = 7, .timeout_ms = 5000};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 200);
    result_free(&r);
    evconnlistener_free(d.l); /* no new connections from now on: refused */
    d.l = NULL;

    call(f, &req, &r);
    int requests = d.requests;
    long status = r.status;
    bool maybe_sent = r.maybe_sent;
    char *error = r.error ? xstrdup(r.error) : NULL;
    result_free(&r);
    dying_stop(&d);
    free(u);
    assert_int_equal(requests, 2); /* the server got the second POST */
    assert_int_equal(status, 0);
    if (!maybe_sent)
        fail_msg("the server received the POST but the answer says maybe_sent = false (%s)",
                 error ? error : "no error");
    free(error);
}

/* The standard proxy variables are honoured, as README says (an egress proxy is how many
 * clusters reach the internet): with http_proxy set the call goes to the proxy, and with the host
 * in no_proxy it goes straight to its URL (here a closed port: refused). */
static void test_env_proxy_and_no_proxy_are_honoured(void **state)
{
    fixture *f = *state;
    char *proxy = xasprintf("http://127.0.0.1:%d", f->srv.port);
    char *u = xasprintf("http://127.0.0.1:%d/echo", closed_port());
    setenv("http_proxy", proxy, 1);
    hf_http_request req = {.method = "POST",
                           .url = u,
                           .basic_user = "AC1",
                           .basic_password = "secret",
                           .timeout_ms = 5000};
    result r;
    call(f, &req, &r);
    int via_proxy = f->srv.requests;
    result_free(&r);
    setenv("no_proxy", "127.0.0.1", 1);
    call(f, &req, &r);
    unsetenv("no_proxy");
    unsetenv("http_proxy");
    int after = f->srv.requests;
    long status = r.status;
    result_free(&r);
    free(proxy);
    free(u);
    assert_int_equal(via_proxy, 1);
    assert_int_equal(after, 1);
    assert_int_equal(status, 0);
}

/* Redirects are not followed: a 302 is the answer, and the Location's host (which would get
 * the Basic credentials) sees nothing. */
static void test_redirect_is_not_followed(void **state)
{
    fixture *f = *state;
    dying d;
    dying_start(&d, f->base);
    char *path = xasprintf("/redirect?to=http://127.0.0.1:%d/x", d.port);
    char *u = url(f, path);
    hf_http_request req = {.method = "POST",
                           .url = u,
                           .basic_user = "AC1",
                           .basic_password = "secret",
                           .timeout_ms = 5000};
    result r;
    call(f, &req, &r);
    assert_int_equal(r.status, 302);
    assert_null(r.error);
    assert_int_equal(d.connections, 0);
    result_free(&r);
    dying_stop(&d);
    free(path);
    free(u);
}

/* Retry-After edge cases: an asctime date with a two-digit day, surrounding tabs, a huge value
 * that stays positive, and a header value with a sign or fraction refused. */
static void test_retry_after_more_forms(void **state)
{
    (void)state;
    const int64_t now = 1445412450000LL; /* 2015-10-21T07:27:30Z */
    assert_int_equal(hf_http_retry_after_ms("\t30\t", now), 30000);
    assert_int_equal(hf_http_retry_after_ms("Wed Oct 21 07:28:00 2015", now), 30000);
    assert_int_equal(hf_http_retry_after_ms("Thu, 22 Oct 2015 07:27:30 GMT", now), 86400000);
    assert_int_equal(hf_http_retry_after_ms("1000000000000000000000", now), 1000000000000000LL);
    assert_int_equal(hf_http_retry_after_ms("+5", now), -1);
    assert_int_equal(hf_http_retry_after_ms("5 5", now), -1);
    assert_int_equal(hf_http_retry_after_ms("wed, 21 oct 2015 07:28:00 gmt", now), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_with_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_put_patch_delete_with_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_request_body_is_sent_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_basic_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_codes_and_retry_after, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifty_concurrent_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sequential_requests_reuse_one_connection, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_closes_mid_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_response_body_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_url_reports_from_the_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_cancels_requests_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_from_inside_done, setup, teardown),
        cmocka_unit_test(test_retry_after_parsing),
        cmocka_unit_test(test_retry_after_refuses_impossible_dates),
        cmocka_unit_test_setup_teardown(test_post_not_resent_after_reused_connection_dies, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_empty_body_post_is_not_resent_either, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reused_connection_death_reports_maybe_sent, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_env_proxy_and_no_proxy_are_honoured, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redirect_is_not_followed, setup, teardown),
        cmocka_unit_test(test_retry_after_more_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
