/* Unit tests for common/http_server: a real server on 127.0.0.1:0 in this process, driven over
 * plain blocking TCP sockets: status, body and headers of replies (Date, Content-Length,
 * Content-Type), keep-alive, JSON error bodies, reason phrases, body and header size limits,
 * several loop threads, the connection limit, slow and idle clients, stop_accepting, port
 * conflicts and bad listen addresses. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "http_server.h"
#include "log.h"
#include "util.h"

/* ---- the server side: a handler that records what it saw ---- */

typedef struct ctx {
    atomic_int requests;   /* requests that reached the handler */
    atomic_int null_bases; /* requests for which hf_http_request_base gave NULL */
    pthread_mutex_t lock;
    struct event_base *bases[8]; /* distinct bases seen (guarded by lock) */
    int nbases;
} ctx;

static void ctx_init(ctx *c)
{
    memset(c, 0, sizeof *c);
    atomic_init(&c->requests, 0);
    atomic_init(&c->null_bases, 0);
    pthread_mutex_init(&c->lock, NULL);
}

static void ctx_destroy(ctx *c)
{
    pthread_mutex_destroy(&c->lock);
}

static void note_base(ctx *c, struct event_base *base)
{
    if (!base) {
        atomic_fetch_add(&c->null_bases, 1);
        return;
    }
    pthread_mutex_lock(&c->lock);
    bool seen = false;
    for (int i = 0; i < c->nbases; i++)
        seen = seen || c->bases[i] == base;
    if (!seen && c->nbases < (int)HF_ARRAY_LEN(c->bases))
        c->bases[c->nbases++] = base;
    pthread_mutex_unlock(&c->lock);
}

static int distinct_bases(ctx *c)
{
    pthread_mutex_lock(&c->lock);
    int n = c->nbases;
    pthread_mutex_unlock(&c->lock);
    return n;
}

#define ERROR_DETAIL "say \"hi\"\n\tnow\x01 \\ end"
#define ERROR_BODY                                                                                 \
    "{\"error\":\"invalid_input\",\"detail\":\"say \\\"hi\\\"\\n\\tnow\\u0001 \\\\ end\"}"

static atomic_int busy_entered, busy_left;

static void answer_later(evutil_socket_t fd, short what, void *arg)
{
    hf_http_reply(arg, 200, "text/plain", "late", 4);
}

static void handle(struct evhttp_request *req, void *arg)
{
    ctx *c = arg;
    atomic_fetch_add(&c->requests, 1);
    note_base(c, hf_http_request_base(req));
    const char *uri = evhttp_request_get_uri(req);
    if (strcmp(uri, "/hello") == 0) {
        hf_http_reply(req, 200, "text/plain; charset=utf-8", "hello", 5);
    } else if (strcmp(uri, "/json") == 0) {
        hf_http_reply_json(req, 201, "{\"id\":1}", 8);
    } else if (strcmp(uri, "/error") == 0) {
        hf_http_reply_error(req, 422, "invalid_input", ERROR_DETAIL);
    } else if (strcmp(uri, "/error-nodetail") == 0) {
        hf_http_reply_error(req, 404, "not_found", NULL);
    } else if (strcmp(uri, "/empty") == 0) {
        hf_http_reply(req, 204, NULL, NULL, 0);
    } else if (strcmp(uri, "/busy") == 0) {
        /* Stays in the handler a while: test_sync_waits_for_a_running_handler. */
        atomic_store(&busy_entered, 1);
        usleep(300 * 1000);
        atomic_store(&busy_left, 1);
        hf_http_reply(req, 200, "text/plain", "done", 4);
    } else if (strcmp(uri, "/later") == 0) {
        /* Answered 1.5 s later from the loop, as ingest answers once Kafka has acknowledged. */
        struct timeval later = {1, 500000};
        event_base_once(hf_http_request_base(req), -1, EV_TIMEOUT, answer_later, req, &later);
    } else if (strcmp(uri, "/echo") == 0) {
        char text[32];
        size_t n = evbuffer_get_length(evhttp_request_get_input_buffer(req));
        int len = snprintf(text, sizeof text, "%zu", n);
        hf_http_reply(req, 200, "text/plain", text, (size_t)len);
    } else {
        hf_http_reply_error(req, 404, "no_route", uri);
    }
}

static hf_http_options test_options(void)
{
    hf_http_options o = {.listen = "127.0.0.1:0",
                         .threads = 1,
                         .max_body = 1 << 20,
                         .max_headers = 8192,
                         .timeout_ms = 5000,
                         .max_connections = 100};
    return o;
}

static hf_http_server *start_server(const hf_http_options *o, ctx *c)
{
    char err[256] = "";
    hf_http_server *s = hf_http_server_new(o, handle, c, err, sizeof err);
    if (!s)
        fail_msg("hf_http_server_new(%s): %s", o->listen, err);
    assert_true(hf_http_server_port(s) > 0);
    hf_http_server_start(s);
    return s;
}

/* Polls hf_http_server_connections until it equals want or deadline_ms pass; returns the last
 * value seen. */
static int64_t wait_connections(const hf_http_server *s, int64_t want, int deadline_ms)
{
    int64_t end = hf_now_ms() + deadline_ms;
    int64_t n = hf_http_server_connections(s);
    while (n != want && hf_now_ms() < end) {
        usleep(5 * 1000);
        n = hf_http_server_connections(s);
    }
    return n;
}

/* ---- the client side: blocking sockets with a receive timeout ---- */

typedef struct conn {
    int fd;
    char buf[16384]; /* received, not yet consumed */
    size_t len;
} conn;

typedef struct response {
    int status;
    char reason[64];
    char head[4096]; /* status line and headers, NUL-terminated */
    char body[8192]; /* NUL-terminated */
    size_t body_len;
} response;

static void set_recv_timeout(conn *c, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
}

static void conn_open(conn *c, int port, int recv_timeout_ms)
{
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c->fd >= 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        fail_msg("connect to 127.0.0.1:%d: %s", port, strerror(errno));
    set_recv_timeout(c, recv_timeout_ms);
}

static void conn_close(conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void conn_send(conn *c, const char *data, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(c->fd, data + off, n - off, MSG_NOSIGNAL);
        if (w <= 0)
            fail_msg("send: %s", strerror(errno));
        off += (size_t)w;
    }
}

static void conn_send_str(conn *c, const char *data)
{
    conn_send(c, data, strlen(data));
}

/* Receives more bytes: >0 bytes, 0 at end of stream, -1 on timeout or error (errno). */
static ssize_t conn_fill(conn *c)
{
    if (c->len == sizeof c->buf) {
        errno = ENOBUFS;
        return -1;
    }
    ssize_t r;
    do
        r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    while (r < 0 && errno == EINTR);
    if (r > 0)
        c->len += (size_t)r;
    return r;
}

static const char *find_crlfcrlf(const char *p, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i++)
        if (memcmp(p + i, "\r\n\r\n", 4) == 0)
            return p + i;
    return NULL;
}

/* How many header lines in head are called name (case-insensitive). */
static int header_count(const char *head, const char *name)
{
    size_t n = strlen(name);
    int count = 0;
    for (const char *line = strstr(head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n"))
        if (strncasecmp(line + 2, name, n) == 0 && line[2 + n] == ':')
            count++;
    return count;
}

/* The value of the first header called name, or "" when there is none. */
static const char *header_value(const char *head, const char *name, char *out, size_t outlen)
{
    size_t n = strlen(name);
    out[0] = '\0';
    for (const char *line = strstr(head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n"))
        if (strncasecmp(line + 2, name, n) == 0 && line[2 + n] == ':') {
            const char *v = line + 3 + n;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t len = strcspn(v, "\r");
            if (len >= outlen)
                len = outlen - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            break;
        }
    return out;
}

/* Reads one whole response (by Content-Length, or to the end of the stream). Returns 1 for a
 * response, 0 when the stream ended before any byte of one, -1 on timeout, error or a malformed
 * or truncated response. */
static int read_response(conn *c, response *r)
{
    memset(r, 0, sizeof *r);
    const char *end;
    while (!(end = find_crlfcrlf(c->buf, c->len))) {
        ssize_t got = conn_fill(c);
        if (got == 0 && c->len == 0)
            return 0;
        if (got <= 0)
            return -1;
    }
    size_t hlen = (size_t)(end - c->buf) + 4;
    if (hlen >= sizeof r->head)
        return -1;
    memcpy(r->head, c->buf, hlen);
    r->head[hlen] = '\0';
    if (sscanf(r->head, "HTTP/1.1 %d %63[^\r]", &r->status, r->reason) < 1)
        return -1;
    char cl[32];
    header_value(r->head, "Content-Length", cl, sizeof cl);
    size_t body_len = 0;
    if (cl[0]) {
        body_len = strtoul(cl, NULL, 10);
        while (c->len < hlen + body_len)
            if (conn_fill(c) <= 0)
                return -1;
    } else if (r->status == 204 || r->status == 304 || r->status < 200) {
        body_len = 0;
    } else {
        ssize_t got;
        while ((got = conn_fill(c)) > 0)
            ;
        if (got < 0)
            return -1;
        body_len = c->len - hlen;
    }
    if (body_len >= sizeof r->body)
        return -1;
    memcpy(r->body, c->buf + hlen, body_len);
    r->body[body_len] = '\0';
    r->body_len = body_len;
    memmove(c->buf, c->buf + hlen + body_len, c->len - hlen - body_len);
    c->len -= hlen + body_len;
    return 1;
}

static int get(conn *c, const char *path, response *r)
{
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    conn_send_str(c, req);
    return read_response(c, r);
}

/* Waits for the server to close c: returns the milliseconds it took, or -1 when the connection
 * was not closed within the receive timeout or bytes came instead. */
static int64_t wait_closed(conn *c)
{
    int64_t start = hf_now_ms();
    ssize_t r = conn_fill(c);
    if (r == 0 || (r < 0 && errno == ECONNRESET))
        return hf_now_ms() - start;
    return -1;
}

/* Sends a request and checks no reply comes within the receive timeout. */
static void assert_no_reply(conn *c, const char *path)
{
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    conn_send_str(c, req);
    ssize_t r = conn_fill(c);
    assert_int_equal(r, -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    assert_int_equal(c->len, 0);
}

/* IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), canonical, and close to now. */
static void assert_imf_fixdate_now(const char *v)
{
    assert_int_equal(strlen(v), 29);
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    assert_non_null(rest);
    assert_int_equal(*rest, '\0');
    time_t t = timegm(&tm);
    struct tm again_tm;
    gmtime_r(&t, &again_tm);
    char again[64];
    strftime(again, sizeof again, "%a, %d %b %Y %H:%M:%S GMT", &again_tm);
    assert_string_equal(again, v); /* the weekday matches the date, fields are zero-padded */
    time_t now = time(NULL);
    assert_true(t >= now - 60 && t <= now + 60);
}

/* ---- replies ---- */

static void test_get_reply_has_status_body_type_one_date_and_length(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    hf_http_server *s = start_server(&o, &c);
    conn k;
    conn_open(&k, hf_http_server_port(s), 3000);
    response r;
    assert_int_equal(get(&k, "/hello", &r), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.reason, "OK");
    assert_string_equal(r.body, "hello");
    char v[128];
    assert_string_equal(header_value(r.head, "Content-Type", v, sizeof v),
                        "text/plain; charset=utf-8");
    assert_int_equal(header_count(r.head, "Content-Type"), 1);
    assert_string_equal(header_value(r.head, "Content-Length", v, sizeof v), "5");
    assert_int_equal(header_count(r.head, "Content-Length"), 1);
    assert_int_equal(header_count(r.head, "Date"), 1);
    assert_imf_fixdate_now(header_value(r.head, "Date", v, sizeof v));

    /* hf_http_reply_json: its status, reason and the JSON content type. */
    assert_int_equal(get(&k, "/json", &r), 1);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.reason, "Created");
    assert_string_equal(r.body, "{\"id\":1}");
    assert_string_equal(header_value(r.head, "Content-Type", v, sizeof v), "application/json");
    assert_string_equal(header_value(r.head, "Content-Length", v, sizeof v), "8");
    assert_int_equal(header_count(r.head, "Date"), 1);

    /* No body, no content type: a bodyless 204 with still one Date. */
    assert_int_equal(get(&k, "/empty", &r), 1);
    assert_int_equal(r.status, 204);
    assert_string_equal(r.reason, "No Content");
    assert_int_equal(r.body_len, 0);
    assert_int_equal(header_count(r.head, "Date"), 1);
    assert_int_equal(atomic_load(&c.requests), 3);
    conn_close(&k);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

static void test_keep_alive_answers_several_requests_on_one_connection(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    hf_http_server *s = start_server(&o, &c);
    conn k;
    conn_open(&k, hf_http_server_port(s), 3000);
    response r;
    assert_int_equal(get(&k, "/hello", &r), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    assert_int_equal(get(&k, "/json", &r), 1);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.body, "{\"id\":1}");
    assert_int_equal(hf_http_server_connections(s), 1);

    /* Two pipelined requests in one write: both answered, in order. */
    conn_send_str(&k,
                  "GET /hello HTTP/1.1\r\nHost: a\r\n\r\nGET /json HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 201);

    /* Connection: close is honoured: the answer, then the end of the stream. */
    conn_send_str(&k, "GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 200);
    char v[64];
    assert_string_equal(header_value(r.head, "Connection", v, sizeof v), "close");
    assert_true(wait_closed(&k) >= 0);

    assert_int_equal(atomic_load(&c.requests), 5);
    assert_int_equal(distinct_bases(&c), 1);
    assert_int_equal(atomic_load(&c.null_bases), 0);
    assert_int_equal(wait_connections(s, 0, 3000), 0);
    conn_close(&k);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

static void test_reply_error_is_json_with_escaped_detail(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    hf_http_server *s = start_server(&o, &c);
    conn k;
    conn_open(&k, hf_http_server_port(s), 3000);
    response r;
    char v[128];
    assert_int_equal(get(&k, "/error", &r), 1);
    assert_int_equal(r.status, 422);
    assert_string_equal(r.reason, "Unprocessable Entity");
    assert_string_equal(header_value(r.head, "Content-Type", v, sizeof v), "application/json");
    assert_string_equal(r.body, ERROR_BODY);
    snprintf(v, sizeof v, "%zu", strlen(ERROR_BODY));
    char cl[32];
    assert_string_equal(header_value(r.head, "Content-Length", cl, sizeof cl), v);

    /* A NULL detail is left out. */
    assert_int_equal(get(&k, "/error-nodetail", &r), 1);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.reason, "Not Found");
    assert_string_equal(r.body, "{\"error\":\"not_found\"}");
    conn_close(&k);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

static void test_error_json_leaves_out_empty_parts_and_appends_extra_members(void **state)
{
    (void)state;
    hf_buf b = {0};
    hf_http_error_json(&b, "e", "", NULL);
    assert_string_equal(b.data, "{\"error\":\"e\"}");
    hf_buf_reset(&b);
    hf_http_error_json(&b, "conflict", "d\"", "\"retry_after\":5");
    assert_string_equal(b.data, "{\"error\":\"conflict\",\"detail\":\"d\\\"\",\"retry_after\":5}");
    hf_buf_reset(&b);
    hf_http_error_json(&b, "quota", NULL, "\"limit\":10");
    assert_string_equal(b.data, "{\"error\":\"quota\",\"limit\":10}");
    hf_buf_free(&b);
}

static void test_reason_phrases_are_standard(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *reason;
    } cases[] = {
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {304, "Not Modified"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {409, "Conflict"},
        {413, "Payload Too Large"},
        {415, "Unsupported Media Type"},
        {422, "Unprocessable Entity"},
        {429, "Too Many Requests"},
        {500, "Internal Server Error"},
        {503, "Service Unavailable"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++)
        assert_string_equal(hf_http_reason(cases[i].status), cases[i].reason);
    /* Anything else still gets a non-empty phrase. */
    assert_string_equal(hf_http_reason(299), "Status");
    assert_string_equal(hf_http_reason(0), "Status");
}

/* ---- size limits ---- */

static void test_body_over_max_body_is_refused_before_the_handler(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.max_body = 64;
    hf_http_server *s = start_server(&o, &c);
    int port = hf_http_server_port(s);
    response r;
    char body[65];
    memset(body, 'b', sizeof body);

    /* Exactly max_body is fine. */
    conn k;
    conn_open(&k, port, 3000);
    conn_send_str(&k, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 64\r\n\r\n");
    conn_send(&k, body, 64);
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "64");
    conn_close(&k);
    assert_int_equal(atomic_load(&c.requests), 1);

    /* One byte more, announced by Content-Length: 413 from libevent before the body is even
     * sent, then the connection ends. */
    conn_open(&k, port, 3000);
    conn_send_str(&k, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 65\r\n\r\n");
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 413);
    assert_true(wait_closed(&k) >= 0);
    conn_close(&k);

    /* A chunked body whose first chunk is already too big: 413 too. */
    conn_open(&k, port, 3000);
    conn_send_str(&k, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n");
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 413);
    conn_close(&k);

    assert_int_equal(atomic_load(&c.requests), 1);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

static void test_headers_over_max_headers_are_refused_before_the_handler(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.max_headers = 1024;
    hf_http_server *s = start_server(&o, &c);
    int port = hf_http_server_port(s);
    response r;
    char req[4096];

    /* Well under the limit: served. */
    conn k;
    conn_open(&k, port, 3000);
    snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nHost: a\r\nX-Small: %0500d\r\n\r\n", 0);
    conn_send_str(&k, req);
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 200);
    conn_close(&k);

    /* A 1500-byte header: 431 with a JSON error, and the connection goes on. */
    conn_open(&k, port, 3000);
    snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nHost: a\r\nX-Big: %01500d\r\n\r\n", 0);
    conn_send_str(&k, req);
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 431);
    assert_non_null(strcasestr(r.head, "Content-Type: application/json"));
    assert_non_null(strstr(r.body, "\"error\":\"headers_too_large\""));
    conn_send_str(&k, "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 200);
    conn_close(&k);

    /* Line endings count: 36 headers of 29 bytes with theirs make 1,077 bytes in all (1,005
     * without line endings, which is how libevent counts). */
    conn_open(&k, port, 3000);
    hf_buf many = {0};
    hf_buf_puts(&many, "GET /hello HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < 36; i++)
        hf_buf_printf(&many, "X-H%02d: %020d\r\n", i, i);
    hf_buf_puts(&many, "\r\n");
    conn_send_str(&k, many.data);
    hf_buf_free(&many);
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 431);
    conn_close(&k);

    /* Past twice the limit libevent refuses on its own (400); a request line too. */
    conn_open(&k, port, 3000);
    snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nHost: a\r\nX-Big: %03000d\r\n\r\n", 0);
    conn_send_str(&k, req);
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 400);
    conn_close(&k);
    conn_open(&k, port, 3000);
    snprintf(req, sizeof req, "GET /%03000d HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    conn_send_str(&k, req);
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 400);
    conn_close(&k);

    assert_int_equal(atomic_load(&c.requests), 2);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

/* ---- framing: what libevent would misread ---- */

/* Reads the head of an answer that has no body (HEAD), leaving what follows in c->buf. */
static int read_head_only(conn *c, response *r)
{
    memset(r, 0, sizeof *r);
    const char *end;
    while (!(end = find_crlfcrlf(c->buf, c->len)))
        if (conn_fill(c) <= 0)
            return -1;
    size_t hlen = (size_t)(end - c->buf) + 4;
    if (hlen >= sizeof r->head)
        return -1;
    memcpy(r->head, c->buf, hlen);
    r->head[hlen] = '\0';
    memmove(c->buf, c->buf + hlen, c->len - hlen);
    c->len -= hlen;
    return sscanf(r->head, "HTTP/1.1 %d", &r->status) == 1 ? 1 : -1;
}

static void test_head_and_connect_answers_say_their_length(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    hf_http_server *s = start_server(&o, &c);
    conn k;
    conn_open(&k, hf_http_server_port(s), 3000);
    /* Pipelined: a body after the HEAD answer would be read as the start of the next one. */
    conn_send_str(&k, "HEAD /hello HTTP/1.1\r\nHost: a\r\n\r\n"
                      "HEAD /nowhere HTTP/1.1\r\nHost: a\r\n\r\n"
                      "CONNECT /nowhere HTTP/1.1\r\nHost: a\r\n\r\n"
                      "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
    response r;
    char v[32];
    assert_int_equal(read_head_only(&k, &r), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(header_value(r.head, "Content-Length", v, sizeof v), "5");
    assert_int_equal(read_head_only(&k, &r), 1);
    assert_int_equal(r.status, 404);
    assert_non_null(strcasestr(r.head, "Content-Type: application/json"));
    /* libevent would give a CONNECT answer no length: the client could not find its end. */
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 404);
    assert_true(header_value(r.head, "Content-Length", v, sizeof v)[0] != '\0');
    assert_non_null(strstr(r.body, "\"no_route\""));
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    conn_close(&k);
    assert_int_equal(atomic_load(&c.requests), 4);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

static void mark_prepared(struct evhttp_request *req, void *arg)
{
    (void)arg;
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Prepared", "yes");
}

/* Sends raw, expects a JSON refusal with status and error (marked by the prepare hook), then the
 * connection closed: whatever followed the request is never parsed as one. */
static void expect_refused_and_closed(int port, const char *raw, int status, const char *error)
{
    conn k;
    conn_open(&k, port, 3000);
    conn_send_str(&k, raw);
    response r;
    char v[32];
    bool head = strncmp(raw, "HEAD ", 5) == 0; /* its answer has no body */
    assert_int_equal(head ? read_head_only(&k, &r) : read_response(&k, &r), 1);
    assert_int_equal(r.status, status);
    assert_non_null(strcasestr(r.head, "Content-Type: application/json"));
    if (!head)
        assert_non_null(strstr(r.body, error));
    assert_string_equal(header_value(r.head, "X-Prepared", v, sizeof v), "yes");
    assert_true(wait_closed(&k) >= 0);
    conn_close(&k);
}

static void test_requests_libevent_would_misframe_are_refused_and_closed(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.max_headers = 256;
    o.prepare = mark_prepared;
    hf_http_server *s = start_server(&o, &c);
    int port = hf_http_server_port(s);
    /* Versions libevent takes and would echo in its status line ("HTTP/-1.1 200 OK"). */
    static const char *const versions[] = {"HTTP/1.10", "HTTP/1.2", "HTTP/0.9", "HTTP/-1.1",
                                           "HTTP/1.-1"};
    for (size_t i = 0; i < HF_ARRAY_LEN(versions); i++) {
        char req[128];
        snprintf(req, sizeof req, "GET /hello %s\r\nHost: a\r\n\r\n", versions[i]);
        expect_refused_and_closed(port, req, 505, "\"http_version_not_supported\"");
    }
    /* A transfer coding libevent ignores: the chunks would be parsed as the next request. */
    expect_refused_and_closed(
        port,
        "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, "
        "chunked\r\n\r\n1c\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n\r\n0\r\n\r\n",
        501, "\"transfer_encoding_not_supported\"");
    /* Content-Length other than digits ("+5" is 5 to libevent) or given twice differently
     * (libevent frames by the first, a proxy may by the last). */
    expect_refused_and_closed(port,
                              "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
                              400, "\"bad_content_length\"");
    expect_refused_and_closed(port,
                              "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                              "Content-Length: 34\r\n\r\nabcGET /json HTTP/1.1\r\nHost: a\r\n\r\n",
                              400, "\"bad_content_length\"");
    /* libevent never closes after a CONNECT: a refused one is closed all the same. */
    expect_refused_and_closed(
        port,
        "CONNECT /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"
        "GET /json HTTP/1.1\r\nHost: a\r\n\r\n",
        501, "\"transfer_encoding_not_supported\"");
    /* A body on a method libevent reads none for (HEAD, TRACE): it would be the next request. */
    expect_refused_and_closed(port,
                              "HEAD /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 31\r\n\r\n"
                              "GET /json HTTP/1.1\r\nHost: a\r\n\r\n",
                              400, "\"body_not_allowed\"");
    expect_refused_and_closed(port,
                              "TRACE /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                              "\r\n0\r\n\r\n",
                              400, "\"body_not_allowed\"");
    /* An HTTP/1.0 keep-alive request refused: one Connection header, and it says close. */
    conn k;
    conn_open(&k, port, 3000);
    conn_send_str(&k, "HEAD /hello HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n"
                      "\r\nabc");
    while (conn_fill(&k) > 0)
        ;
    k.buf[k.len < sizeof k.buf ? k.len : sizeof k.buf - 1] = '\0';
    assert_int_equal(header_count(k.buf, "Connection"), 1);
    assert_non_null(strstr(k.buf, "Connection: close"));
    conn_close(&k);
    /* The server's own 431 goes through the prepare hook too. */
    conn_open(&k, port, 3000);
    char req[512];
    snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nHost: a\r\nX-Big: %0300d\r\n\r\n", 0);
    conn_send_str(&k, req);
    response r;
    char v[32];
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 431);
    assert_string_equal(header_value(r.head, "X-Prepared", v, sizeof v), "yes");
    conn_close(&k);
    assert_int_equal(atomic_load(&c.requests), 0);

    /* What stays allowed: HTTP/1.0, a chunked POST, a body libevent reads on GET, an empty
     * declared body on HEAD. */
    conn_open(&k, port, 3000);
    conn_send_str(&k, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
                      "5\r\nhello\r\n0\r\n\r\n"
                      "GET /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                      "HEAD /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "5");
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "3");
    assert_int_equal(read_head_only(&k, &r), 1);
    assert_int_equal(r.status, 200);
    conn_close(&k);
    conn_open(&k, port, 3000);
    conn_send_str(&k, "GET /hello HTTP/1.0\r\n\r\n");
    char head[16];
    ssize_t got;
    while ((got = conn_fill(&k)) > 0)
        ;
    assert_true(k.len > 12);
    memcpy(head, k.buf, 12);
    head[12] = '\0';
    assert_string_equal(head, "HTTP/1.0 200");
    conn_close(&k);
    assert_int_equal(atomic_load(&c.requests), 4);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

/* ---- threads and connections ---- */

#define MANY 32

static void test_two_threads_answer_requests_on_many_connections(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.threads = 2;
    hf_http_server *s = start_server(&o, &c);
    int port = hf_http_server_port(s);
    conn *ks = xcalloc(MANY, sizeof *ks);
    for (int i = 0; i < MANY; i++)
        conn_open(&ks[i], port, 3000);
    for (int i = 0; i < MANY; i++)
        conn_send_str(&ks[i], "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
    response r;
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(read_response(&ks[i], &r), 1);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello");
    }
    assert_int_equal(atomic_load(&c.requests), MANY);
    assert_int_equal(hf_http_server_connections(s), MANY);
    /* Every request had a base, and both loops took connections (the kernel spreads them over
     * the two SO_REUSEPORT sockets; all 32 on one has odds of 2^-31). */
    assert_int_equal(atomic_load(&c.null_bases), 0);
    assert_int_equal(distinct_bases(&c), 2);
    /* A second round on the same connections. */
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(get(&ks[i], "/json", &r), 1);
        assert_int_equal(r.status, 201);
    }
    assert_int_equal(atomic_load(&c.requests), 2 * MANY);
    for (int i = 0; i < MANY; i++)
        conn_close(&ks[i]);
    assert_int_equal(wait_connections(s, 0, 3000), 0);
    free(ks);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

static void test_max_connections_pauses_accepting_until_one_closes(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    FILE *logf = tmpfile();
    assert_non_null(logf);
    hf_log_set_fd(fileno(logf));
    hf_http_options o = test_options();
    o.max_connections = 2;
    hf_http_server *s = start_server(&o, &c);
    int port = hf_http_server_port(s);
    response r;
    conn a, b, third;
    conn_open(&a, port, 3000);
    assert_int_equal(get(&a, "/hello", &r), 1);
    assert_int_equal(r.status, 200);
    assert_int_equal(hf_http_server_connections(s), 1);
    conn_open(&b, port, 3000);
    assert_int_equal(get(&b, "/hello", &r), 1);
    assert_int_equal(r.status, 200);
    assert_int_equal(hf_http_server_connections(s), 2);

    /* The third connects (kernel backlog) but is not served while two are open. */
    conn_open(&third, port, 400);
    assert_no_reply(&third, "/hello");
    assert_int_equal(hf_http_server_connections(s), 2);
    assert_int_equal(atomic_load(&c.requests), 2);
    /* The open ones still are. */
    assert_int_equal(get(&b, "/json", &r), 1);
    assert_int_equal(r.status, 201);

    /* Closing one lets the waiting one in: its request is answered. */
    conn_close(&a);
    set_recv_timeout(&third, 3000);
    assert_int_equal(read_response(&third, &r), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    assert_int_equal(wait_connections(s, 2, 3000), 2);
    assert_int_equal(atomic_load(&c.requests), 4);

    conn_close(&b);
    conn_close(&third);
    assert_int_equal(wait_connections(s, 0, 3000), 0);
    hf_http_server_free(s);
    hf_log_set_fd(2);

    /* Reaching the limit was logged. */
    char text[4096];
    rewind(logf);
    size_t n = fread(text, 1, sizeof text - 1, logf);
    text[n] = '\0';
    fclose(logf);
    assert_non_null(strstr(text, "http.connection_limit"));
    ctx_destroy(&c);
}

/* ---- timeouts ---- */

static void test_slow_client_is_closed_after_timeout(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.timeout_ms = 300;
    hf_http_server *s = start_server(&o, &c);
    conn k;
    conn_open(&k, hf_http_server_port(s), 5000);
    conn_send_str(&k, "GET /hello HTTP/1.1\r\nHost: a\r\n"); /* and never the blank line */
    int64_t took = wait_closed(&k);
    /* Not at once (the timer starts around our send; 150 leaves room for a stalled test thread) */
    assert_true(took >= 150);
    assert_true(took < 5000);
    assert_int_equal(atomic_load(&c.requests), 0);
    assert_int_equal(wait_connections(s, 0, 3000), 0);
    conn_close(&k);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

static void test_idle_keep_alive_connection_is_closed_after_timeout(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.timeout_ms = 300;
    hf_http_server *s = start_server(&o, &c);
    conn k;
    conn_open(&k, hf_http_server_port(s), 5000);
    response r;
    assert_int_equal(get(&k, "/hello", &r), 1);
    assert_int_equal(r.status, 200);
    int64_t took = wait_closed(&k);
    assert_true(took >= 150); /* kept open a while, then closed */
    assert_true(took < 5000);
    assert_int_equal(wait_connections(s, 0, 3000), 0);
    conn_close(&k);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

/* ---- stop_accepting ---- */

static void test_sync_waits_for_a_running_handler(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.threads = 2;
    hf_http_server *s = start_server(&o, &c);
    atomic_store(&busy_entered, 0);
    atomic_store(&busy_left, 0);
    conn k;
    conn_open(&k, hf_http_server_port(s), 5000);
    conn_send_str(&k, "GET /busy HTTP/1.1\r\nHost: t\r\n\r\n");
    int64_t until = hf_now_ms() + 5000;
    while (!atomic_load(&busy_entered) && hf_now_ms() < until)
        usleep(1000);
    assert_int_equal(atomic_load(&busy_entered), 1);
    hf_http_server_sync(s); /* the handler is in its 300 ms: sync returns after it */
    assert_int_equal(atomic_load(&busy_left), 1);
    response r;
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 200);
    hf_http_server_sync(s); /* nothing running: returns at once */
    conn_close(&k);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

static void test_stop_accepting_refuses_new_connections_but_serves_open_ones(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    hf_http_server *s = start_server(&o, &c);
    int port = hf_http_server_port(s);
    response r;
    conn open_one, late;
    conn_open(&open_one, port, 3000);
    assert_int_equal(get(&open_one, "/hello", &r), 1);
    assert_int_equal(r.status, 200);

    hf_http_server_stop_accepting(s);
    /* The open keep-alive connection goes on (and, as this request is handled on the loop after
     * the queued stop, the listener is off by the time the answer arrives). */
    assert_int_equal(get(&open_one, "/json", &r), 1);
    assert_int_equal(r.status, 201);

    /* A new connection may sit in the kernel backlog but is never served. */
    conn_open(&late, port, 400);
    assert_no_reply(&late, "/hello");
    assert_int_equal(hf_http_server_connections(s), 1);

    /* Still, the open one keeps working after that. */
    assert_int_equal(get(&open_one, "/hello", &r), 1);
    assert_int_equal(r.status, 200);
    assert_int_equal(atomic_load(&c.requests), 3);

    /* Freeing the server with one open connection and one never accepted. */
    hf_http_server_free(s);
    assert_true(wait_closed(&open_one) >= 0);
    conn_close(&open_one);
    conn_close(&late);
    ctx_destroy(&c);
}

/* ---- listen addresses ---- */

static void test_second_server_on_a_used_port_fails_clearly(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    hf_http_server *s = start_server(&o, &c);
    int port = hf_http_server_port(s);

    char listen[64], err[256] = "", want[96];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    hf_http_options o2 = test_options();
    o2.listen = listen;
    o2.threads = 2;
    ctx c2;
    ctx_init(&c2);
    hf_http_server *s2 = hf_http_server_new(&o2, handle, &c2, err, sizeof err);
    assert_null(s2);
    snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%d", port);
    assert_non_null(strstr(err, want));
    assert_non_null(strstr(err, "in use"));

    /* The first server still has the port to itself. */
    response r;
    for (int i = 0; i < 4; i++) {
        conn k;
        conn_open(&k, port, 3000);
        assert_int_equal(get(&k, "/hello", &r), 1);
        assert_int_equal(r.status, 200);
        conn_close(&k);
    }
    assert_int_equal(atomic_load(&c.requests), 4);
    assert_int_equal(atomic_load(&c2.requests), 0);
    hf_http_server_free(s);

    /* Once it is gone the fixed port can be had (made and freed without being started). */
    err[0] = '\0';
    s2 = hf_http_server_new(&o2, handle, &c2, err, sizeof err);
    if (!s2)
        fail_msg("fixed port %d after free: %s", port, err);
    assert_int_equal(hf_http_server_port(s2), port);
    hf_http_server_free(s2);
    ctx_destroy(&c2);
    ctx_destroy(&c);
}

static void test_bad_listen_address_gives_null_and_err(void **state)
{
    (void)state;
    static const struct {
        const char *listen;
        const char *err_has;
    } cases[] = {
        {"127.0.0.1", "bad listen address \"127.0.0.1\""},
        {"127.0.0.1:65536", "bad listen address"},
        {"127.0.0.1:http", "bad listen address"},
        {"127.0.0.1:-1", "bad listen address"},
        {"no-such-host.invalid:8080", "\"no-such-host.invalid\" is not an IP address"},
        /* TEST-NET-1 is no address of this machine: bind fails. */
        {"192.0.2.1:0", "cannot listen on 192.0.2.1:0"},
    };
    ctx c;
    ctx_init(&c);
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        hf_http_options o = test_options();
        o.listen = cases[i].listen;
        o.threads = 2;
        char err[256] = "";
        hf_http_server *s = hf_http_server_new(&o, handle, &c, err, sizeof err);
        if (s) {
            hf_http_server_free(s);
            fail_msg("listen \"%s\" was accepted", cases[i].listen);
        }
        if (!strstr(err, cases[i].err_has))
            fail_msg("listen \"%s\": err \"%s\" lacks \"%s\"", cases[i].listen, err,
                     cases[i].err_has);
    }
    ctx_destroy(&c);
}

/* ---- freeing ----
 *
 * Regressions: freeing a server whose loop was paused at the connection limit re-enabled the
 * listener evhttp_free had already freed (valgrind: invalid read; a glibc-malloc build could hang
 * in evconnlistener_enable), and freeing it right after starting lost the stop request when a
 * loop thread had not yet entered its loop (pthread_join waited forever). */
static void test_free_with_connections_open_at_the_limit(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.max_connections = 1;
    hf_http_server *s = start_server(&o, &c);
    conn k;
    conn_open(&k, hf_http_server_port(s), 3000);
    response r;
    assert_int_equal(get(&k, "/hello", &r), 1);
    assert_int_equal(r.status, 200);
    assert_int_equal(hf_http_server_connections(s), 1); /* full: the listener is paused */
    hf_http_server_free(s); /* the close callbacks must not touch the freed listener */
    assert_true(wait_closed(&k) >= 0);
    conn_close(&k);
    ctx_destroy(&c);
}

static atomic_int start_free_done;

static void *start_free_many(void *arg)
{
    (void)arg;
    ctx c;
    ctx_init(&c);
    for (int i = 0; i < 50; i++) {
        hf_http_options o = test_options();
        o.threads = 2;
        char err[256];
        hf_http_server *s = hf_http_server_new(&o, handle, &c, err, sizeof err);
        if (!s)
            break;
        hf_http_server_start(s);
        hf_http_server_free(s);
    }
    ctx_destroy(&c);
    atomic_store(&start_free_done, 1);
    return NULL;
}

static void test_free_right_after_start_returns(void **state)
{
    (void)state;
    pthread_t t;
    atomic_store(&start_free_done, 0);
    assert_int_equal(pthread_create(&t, NULL, start_free_many, NULL), 0);
    int64_t end = hf_now_ms() + 10000;
    while (!atomic_load(&start_free_done) && hf_now_ms() < end)
        usleep(10 * 1000);
    if (!atomic_load(&start_free_done)) {
        pthread_detach(t); /* stuck in pthread_join inside hf_http_server_free */
        fail_msg("hf_http_server_free right after hf_http_server_start hung");
    }
    pthread_join(t, NULL);
}

/* ---- limits under load: found in review ---- */

/* A loop at its limit stops accepting at once: a burst waiting in the backlog stays there. */
static void test_max_connections_holds_when_a_burst_waits_in_the_backlog(void **state)
{
    (void)state;
    enum { WAITING = 5 };
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.max_connections = 2;
    hf_http_server *s = start_server(&o, &c);
    int port = hf_http_server_port(s);
    response r;
    conn a, b, w[WAITING];
    conn_open(&a, port, 3000);
    assert_int_equal(get(&a, "/hello", &r), 1);
    conn_open(&b, port, 3000);
    assert_int_equal(get(&b, "/hello", &r), 1);
    assert_int_equal(hf_http_server_connections(s), 2); /* full: the listener is paused */
    /* Several clients queue in the kernel backlog, each with a request. */
    for (int i = 0; i < WAITING; i++) {
        conn_open(&w[i], port, 3000);
        conn_send_str(&w[i], "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
    }
    usleep(200 * 1000);
    assert_int_equal(hf_http_server_connections(s), 2);
    /* One slot frees: one waiting connection may come in, not all of them. */
    conn_close(&a);
    int64_t most = 0, until = hf_now_ms() + 1000;
    while (hf_now_ms() < until) {
        int64_t n = hf_http_server_connections(s);
        most = n > most ? n : most;
        usleep(2 * 1000);
    }
    int answered_early = atomic_load(&c.requests) - 2;
    for (int i = 0; i < WAITING; i++)
        conn_close(&w[i]);
    conn_close(&b);
    assert_int_equal(wait_connections(s, 0, 3000), 0);
    hf_http_server_free(s);
    ctx_destroy(&c);
    if (most > 2 || answered_early > 1)
        fail_msg("max_connections 2: %lld open at once, %d waiting clients served", (long long)most,
                 answered_early);
}

/* max_connections below the thread count is still the total (fewer loops run). */
static void test_max_connections_below_the_thread_count_is_still_the_total(void **state)
{
    (void)state;
    enum { CONNS = 12 };
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.threads = 4;
    o.max_connections = 1;
    hf_http_server *s = start_server(&o, &c);
    int port = hf_http_server_port(s);
    /* One at a time (no burst in any backlog): each either gets its answer or waits. */
    conn ks[CONNS];
    int served = 0;
    for (int i = 0; i < CONNS; i++) {
        conn_open(&ks[i], port, 300);
        response r;
        conn_send_str(&ks[i], "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
        if (read_response(&ks[i], &r) == 1)
            served++;
    }
    int64_t open_now = hf_http_server_connections(s);
    for (int i = 0; i < CONNS; i++)
        conn_close(&ks[i]);
    hf_http_server_free(s);
    ctx_destroy(&c);
    /* The kernel spreads the connections over the 4 SO_REUSEPORT sockets: all 12 on one loop
     * has odds of 4^-11. */
    if (open_now > 1 || served > 1)
        fail_msg("max_connections 1 with 4 threads: %lld open, %d served at once",
                 (long long)open_now, served);
}

/* A client trickling header bytes faster than timeout_ms is closed once the request deadline
 * (4 x timeout_ms) passes (slowloris). */
static void test_client_trickling_headers_is_closed_in_bounded_time(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.timeout_ms = 300;
    hf_http_server *s = start_server(&o, &c);
    conn k;
    conn_open(&k, hf_http_server_port(s), 3000);
    conn_send_str(&k, "GET /hello HTTP/1.1\r\nHost: a\r\nX-Slow: ");
    /* One byte every 100 ms for 3 s: ten times the timeout, well under max_headers. */
    bool closed = false;
    int64_t start = hf_now_ms();
    while (!closed && hf_now_ms() - start < 3000) {
        usleep(100 * 1000);
        closed = send(k.fd, "x", 1, MSG_NOSIGNAL) != 1;
    }
    if (!closed) {
        /* Still open: one more probe after the server would have had to close it. */
        usleep(50 * 1000);
        closed = send(k.fd, "\r\n\r\n", 4, MSG_NOSIGNAL) != 4;
        response r;
        if (!closed)
            closed = read_response(&k, &r) != 1;
    }
    conn_close(&k);
    int served = atomic_load(&c.requests);
    hf_http_server_free(s);
    ctx_destroy(&c);
    if (!closed)
        fail_msg("a request trickled over 3 s with timeout_ms 300 was kept open and served "
                 "(%d request(s) reached the handler)",
                 served);
}

/* The request deadline is the client's, not the handler's: an answer that takes longer than it
 * (ingest waiting for Kafka) still goes out, and the connection serves the next request. */
static void test_slow_answer_is_not_cut_by_the_request_deadline(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.timeout_ms = 300; /* deadline 1.2 s; the answer takes 1.5 s */
    hf_http_server *s = start_server(&o, &c);
    conn k;
    conn_open(&k, hf_http_server_port(s), 5000);
    conn_send_str(&k, "GET /later HTTP/1.1\r\nHost: a\r\n\r\n");
    response r;
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 200);
    conn_send_str(&k, "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(read_response(&k, &r), 1);
    assert_int_equal(r.status, 200);
    conn_close(&k);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

/* Clients connecting, asking and closing on both loops while another thread reads the
 * connection count, syncs and finally stops accepting: no request is lost on a connection that
 * was accepted, the count returns to 0 and (under TSan) nothing races. */
typedef struct churn_arg {
    int port;
    atomic_bool stop;
    atomic_int served, unserved;
} churn_arg;

static void *churn_main(void *p)
{
    churn_arg *a = p;
    while (!atomic_load(&a->stop)) {
        conn k;
        conn_open(&k, a->port, 2000);
        response r;
        if (get(&k, "/hello", &r) == 1 && r.status == 200)
            atomic_fetch_add(&a->served, 1);
        else
            atomic_fetch_add(&a->unserved, 1);
        conn_close(&k);
    }
    return NULL;
}

static void test_connection_churn_with_sync_and_stop_accepting_from_another_thread(void **state)
{
    (void)state;
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.threads = 2;
    hf_http_server *s = start_server(&o, &c);
    churn_arg a = {.port = hf_http_server_port(s)};
    atomic_init(&a.stop, false);
    atomic_init(&a.served, 0);
    atomic_init(&a.unserved, 0);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn_main, &a), 0);
    while (atomic_load(&a.served) < 300) {
        assert_true(hf_http_server_connections(s) >= 0);
        hf_http_server_sync(s);
    }
    atomic_store(&a.stop, true);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&a.unserved), 0);
    assert_int_equal(wait_connections(s, 0, 5000), 0);
    hf_http_server_stop_accepting(s);
    hf_http_server_sync(s);
    assert_int_equal(hf_http_server_connections(s), 0);
    hf_http_server_free(s);
    ctx_destroy(&c);
}

/* max_connections is the total across threads, not fixed per-loop shares: the kernel hashes each
 * new connection to one SO_REUSEPORT socket, and with shares of 1 (2 threads, limit 2) every new
 * connection hashed to the loop holding the one open connection waited in the backlog although
 * the server had room. With 1 of 2 open, each of 16 new connections is served (with shares, the
 * odds of all 16 landing on the free loop were 2^-16). */
static void test_max_connections_is_a_total_not_a_per_thread_share(void **state)
{
    (void)state;
    enum { TRIES = 16 };
    ctx c;
    ctx_init(&c);
    hf_http_options o = test_options();
    o.threads = 2;
    o.max_connections = 2;
    hf_http_server *s = start_server(&o, &c);
    int port = hf_http_server_port(s);
    response r;
    conn held;
    conn_open(&held, port, 3000);
    assert_int_equal(get(&held, "/hello", &r), 1);
    assert_int_equal(r.status, 200);
    int unserved = 0;
    for (int i = 0; i < TRIES && unserved == 0; i++) {
        /* Only `held` is open: the previous probe is closed and gone before the next starts. */
        assert_int_equal(wait_connections(s, 1, 3000), 1);
        conn k;
        conn_open(&k, port, 2000);
        if (get(&k, "/hello", &r) != 1 || r.status != 200)
            unserved++;
        conn_close(&k);
    }
    conn_close(&held);
    hf_http_server_free(s);
    ctx_destroy(&c);
    if (unserved)
        fail_msg("with 1 of max_connections 2 open, a new connection was not served "
                 "(it waits in the backlog of the loop whose share is used up)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_reply_has_status_body_type_one_date_and_length),
        cmocka_unit_test(test_keep_alive_answers_several_requests_on_one_connection),
        cmocka_unit_test(test_reply_error_is_json_with_escaped_detail),
        cmocka_unit_test(test_error_json_leaves_out_empty_parts_and_appends_extra_members),
        cmocka_unit_test(test_reason_phrases_are_standard),
        cmocka_unit_test(test_body_over_max_body_is_refused_before_the_handler),
        cmocka_unit_test(test_headers_over_max_headers_are_refused_before_the_handler),
        cmocka_unit_test(test_head_and_connect_answers_say_their_length),
        cmocka_unit_test(test_requests_libevent_would_misframe_are_refused_and_closed),
        cmocka_unit_test(test_two_threads_answer_requests_on_many_connections),
        cmocka_unit_test(test_max_connections_pauses_accepting_until_one_closes),
        cmocka_unit_test(test_slow_client_is_closed_after_timeout),
        cmocka_unit_test(test_idle_keep_alive_connection_is_closed_after_timeout),
        cmocka_unit_test(test_sync_waits_for_a_running_handler),
        cmocka_unit_test(test_stop_accepting_refuses_new_connections_but_serves_open_ones),
        cmocka_unit_test(test_second_server_on_a_used_port_fails_clearly),
        cmocka_unit_test(test_bad_listen_address_gives_null_and_err),
        cmocka_unit_test(test_free_with_connections_open_at_the_limit),
        cmocka_unit_test(test_free_right_after_start_returns),
        cmocka_unit_test(test_max_connections_holds_when_a_burst_waits_in_the_backlog),
        cmocka_unit_test(test_max_connections_below_the_thread_count_is_still_the_total),
        cmocka_unit_test(test_client_trickling_headers_is_closed_in_bounded_time),
        cmocka_unit_test(test_slow_answer_is_not_cut_by_the_request_deadline),
        cmocka_unit_test(test_connection_churn_with_sync_and_stop_accepting_from_another_thread),
        cmocka_unit_test(test_max_connections_is_a_total_not_a_per_thread_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
