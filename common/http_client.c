/* http_client: outbound HTTP on a libevent base with libcurl's multi interface, so one thread
 * keeps many calls in flight over kept-alive connections. */
#include "http_client.h"

#include <ctype.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef struct xfer xfer;
typedef struct sock sock;

/* One socket libcurl asked us to watch. */
struct sock {
    hf_http_client *c;
    curl_socket_t fd;
    struct event *ev;
    sock *prev, *next;
};

/* One request from send to done. */
struct xfer {
    hf_http_client *c;
    xfer *prev, *next;
    CURL *easy;
    bool added;            /* easy is attached to the multi handle */
    struct event *fail_ev; /* set when the request could not start: reports soon */
    const char *fail_msg;
    struct curl_slist *headers;
    char *body;
    size_t body_len, body_sent; /* the request body, and how much of it libcurl has read */
    hf_buf resp;
    bool too_large;
    char *retry_after;
    hf_http_done_fn done;
    void *arg;
    int64_t started_ms;
    int64_t timeout_ms;
    char errbuf[CURL_ERROR_SIZE];
};

struct hf_http_client {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    xfer *xfers;
    size_t in_flight;
    sock *socks;
    int dispatching;   /* depth of our own callbacks on the stack */
    bool closing;      /* hf_http_client_free has started */
    bool free_pending; /* free was called from a done callback: finish when the stack unwinds */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
        hf_die("curl_global_init failed");
}

/* ---- lists ---- */

static void xfer_link(hf_http_client *c, xfer *x)
{
    x->next = c->xfers;
    if (c->xfers)
        c->xfers->prev = x;
    c->xfers = x;
    c->in_flight++;
}

static void xfer_unlink(hf_http_client *c, xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        c->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
    c->in_flight--;
}

/* Detaches the easy handle from the multi and frees everything the transfer owns. */
static void xfer_free(xfer *x)
{
    if (x->easy) {
        if (x->added)
            curl_multi_remove_handle(x->c->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    if (x->fail_ev)
        event_free(x->fail_ev);
    curl_slist_free_all(x->headers);
    free(x->body);
    hf_buf_free(&x->resp);
    free(x->retry_after);
    free(x);
}

static void sock_free(hf_http_client *c, sock *k)
{
    if (k->prev)
        k->prev->next = k->next;
    else
        c->socks = k->next;
    if (k->next)
        k->next->prev = k->prev;
    if (k->ev)
        event_free(k->ev);
    free(k);
}

/* ---- teardown ---- */

static void client_destroy(hf_http_client *c)
{
    /* curl_multi_cleanup closes cached connections and may call the socket and timer callbacks,
     * so both must still work here. */
    curl_multi_cleanup(c->multi);
    while (c->socks)
        sock_free(c, c->socks);
    event_free(c->timer);
    free(c);
}

static void dispatch_begin(hf_http_client *c)
{
    c->dispatching++;
}

/* Finishes a free that a done callback asked for once none of our frames is on the stack. */
static void dispatch_end(hf_http_client *c)
{
    if (--c->dispatching == 0 && c->free_pending)
        client_destroy(c);
}

/* ---- completion ---- */

/* Builds the response of x, unlinks it, calls done and frees it. result is libcurl's code, or
 * -1 for a cancellation and -2 for a request that could not start. */
static void xfer_finish(hf_http_client *c, xfer *x, int result)
{
    hf_http_response r = {0};
    char msg[CURL_ERROR_SIZE + 64];
    long status = 0;
    curl_off_t request_size = 0;
    char *content_type = NULL;

    if (x->easy && x->added) {
        long sent = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        /* Bytes of request written to the connection: none means the server cannot have
         * received the request, so retrying it cannot duplicate anything. */
        if (curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK)
            request_size = sent;
        curl_easy_getinfo(x->easy, CURLINFO_CONTENT_TYPE, &content_type);
    }
    r.duration_ms = hf_now_ms() - x->started_ms;
    r.maybe_sent = request_size > 0;
    r.retry_after = x->retry_after;
    r.content_type = content_type;
    r.body = x->resp.data ? x->resp.data : "";
    r.body_len = x->resp.len;

    if (result == -1) {
        r.error = "cancelled";
    } else if (result == -2) {
        r.error = x->fail_msg;
    } else if (result != CURLE_OK) {
        if (x->too_large) {
            r.error = "response body larger than 4 MiB";
        } else if (result == CURLE_OPERATION_TIMEDOUT) {
            r.timed_out = true;
            snprintf(msg, sizeof msg, "timed out after %lld ms", (long long)r.duration_ms);
            r.error = msg;
        } else {
            snprintf(msg, sizeof msg, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(result));
            r.error = msg;
        }
    }
    /* An incomplete answer is no answer: status is set exactly when error is not. */
    r.status = r.error ? 0 : status;
    if (r.error) {
        r.body = "";
        r.body_len = 0;
    }

    xfer_unlink(c, x);
    x->done(x->arg, &r);
    xfer_free(x);
}

static void check_done(hf_http_client *c)
{
    CURLMsg *m;
    int left;
    while (!c->closing && (m = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURLcode result = m->data.result;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        if (priv)
            xfer_finish(c, (xfer *)(void *)priv, (int)result);
    }
}

/* ---- libevent <-> libcurl glue ---- */

static void on_sock_event(evutil_socket_t fd, short what, void *arg)
{
    sock *k = arg;
    hf_http_client *c = k->c; /* k may be freed inside socket_action */
    int flags =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running = 0;
    dispatch_begin(c);
    curl_multi_socket_action(c->multi, fd, flags, &running);
    check_done(c);
    dispatch_end(c);
}

static void on_timer_event(evutil_socket_t fd, short what, void *arg)
{
    hf_http_client *c = arg;
    int running = 0;
    dispatch_begin(c);
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
    dispatch_end(c);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    hf_http_client *c = userp;
    sock *k = socketp;
    if (what == CURL_POLL_REMOVE) {
        /* libcurl forgets the association itself after this call. */
        if (k)
            sock_free(c, k);
        return 0;
    }
    if (!k) {
        k = xcalloc(1, sizeof *k);
        k->c = c;
        k->fd = fd;
        k->next = c->socks;
        if (c->socks)
            c->socks->prev = k;
        c->socks = k;
        curl_multi_assign(c->multi, fd, k);
    } else if (k->ev) {
        event_free(k->ev);
        k->ev = NULL;
    }
    short flags = EV_PERSIST;
    if (what & CURL_POLL_IN)
        flags |= EV_READ;
    if (what & CURL_POLL_OUT)
        flags |= EV_WRITE;
    k->ev = event_new(c->base, fd, flags, on_sock_event, k);
    if (!k->ev || event_add(k->ev, NULL) != 0)
        return -1;
    return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    hf_http_client *c = userp;
    if (timeout_ms < 0) {
        evtimer_del(c->timer);
        return 0;
    }
    /* Even a 0 timeout goes through the loop: libcurl must not be re-entered from here. */
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    return evtimer_add(c->timer, &tv) == 0 ? 0 : -1;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    xfer *x = ud;
    size_t len = size * n;
    if (len > HF_HTTP_MAX_RESPONSE_BODY - x->resp.len) {
        x->too_large = true;
        return 0; /* anything but len aborts the transfer */
    }
    hf_buf_append(&x->resp, p, len);
    return len;
}

static bool header_is(const char *line, size_t len, const char *name, size_t *value_at)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return false;
    *value_at = n + 1;
    return true;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    xfer *x = ud;
    size_t len = size * n, at = 0;
    /* A new status line starts a new response (after 1xx): forget the earlier headers. */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        free(x->retry_after);
        x->retry_after = NULL;
    } else if (header_is(p, len, "retry-after", &at)) {
        size_t end = len;
        while (at < end && (p[at] == ' ' || p[at] == '\t'))
            at++;
        while (end > at && isspace((unsigned char)p[end - 1]))
            end--;
        free(x->retry_after);
        x->retry_after = xstrndup(p + at, end - at);
    }
    return len;
}

static void on_fail_event(evutil_socket_t fd, short what, void *arg)
{
    xfer *x = arg;
    hf_http_client *c = x->c;
    dispatch_begin(c);
    xfer_finish(c, x, -2);
    dispatch_end(c);
}

/* ---- public ---- */

hf_http_client *hf_http_client_new(struct event_base *base, int max_connections_per_host)
{
    pthread_once(&curl_once, curl_init_once);
    hf_http_client *c = xcalloc(1, sizeof *c);
    c->base = base;
    c->multi = curl_multi_init();
    if (!c->multi)
        hf_die("curl_multi_init failed");
    c->timer = evtimer_new(base, on_timer_event, c);
    if (!c->timer)
        hf_die("evtimer_new failed");
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    if (max_connections_per_host > 0)
        curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)max_connections_per_host);
    /* HTTP/1.1 only: no multiplexing, one request per connection at a time. */
    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
    return c;
}

/* The request body goes to libcurl through a read callback, not whole (POSTFIELDS), so that it
 * cannot be rewound once read: libcurl sends a request again on a new connection when a
 * kept-alive one dies before its answer, and the platform may have acted on the first (a second
 * SMS, with nothing recorded). The call is reported as maybe sent instead, and the executor
 * repeats it only when that is safe. */
static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
    xfer *x = arg;
    size_t k = x->body_len - x->body_sent;
    if (k > size * n)
        k = size * n;
    memcpy(buf, x->body + x->body_sent, k);
    x->body_sent += k;
    return k;
}

static int on_seek(void *arg, curl_off_t offset, int origin)
{
    xfer *x = arg;
    return origin == SEEK_SET && offset == 0 && x->body_sent == 0 ? CURL_SEEKFUNC_OK
                                                                  : CURL_SEEKFUNC_CANTSEEK;
}

/* Configures x->easy for req; false (with x->fail_msg) if libcurl refuses an option. */
static bool xfer_setup(xfer *x, const hf_http_request *req)
{
    CURL *e = x->easy;
    const char *method = req->method && req->method[0] ? req->method : "GET";
    bool ok = true;
#define SET(opt, val) ok = ok && curl_easy_setopt(e, opt, val) == CURLE_OK
    SET(CURLOPT_PRIVATE, (void *)x);
    SET(CURLOPT_URL, req->url ? req->url : "");
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_ERRORBUFFER, x->errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)x);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)x);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_ACCEPT_ENCODING, "");
    if (req->timeout_ms > 0)
        SET(CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    if (req->basic_user && req->basic_password) {
        SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        SET(CURLOPT_USERNAME, req->basic_user);
        SET(CURLOPT_PASSWORD, req->basic_password);
    }

    bool with_body = req->body_len > 0 || strcmp(method, "POST") == 0 ||
                     strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0;
    if (with_body) {
        x->body = xmalloc(req->body_len + 1);
        if (req->body_len)
            memcpy(x->body, req->body, req->body_len);
        x->body[req->body_len] = '\0';
        x->body_len = req->body_len;
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        SET(CURLOPT_READFUNCTION, on_read);
        SET(CURLOPT_READDATA, (void *)x);
        SET(CURLOPT_SEEKFUNCTION, on_seek);
        SET(CURLOPT_SEEKDATA, (void *)x);
        /* Without a body there is nothing to refuse to rewind: a kept-alive connection is not
         * risked at all then. */
        if (req->body_len == 0)
            SET(CURLOPT_FRESH_CONNECT, 1L);
        if (strcmp(method, "POST") != 0)
            SET(CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") == 0) {
        SET(CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else {
        SET(CURLOPT_CUSTOMREQUEST, method);
    }

    for (const char *const *h = req->headers; h && *h; h++) {
        struct curl_slist *l = curl_slist_append(x->headers, *h);
        if (!l) {
            ok = false;
            break;
        }
        x->headers = l;
    }
    /* No "Expect: 100-continue" round trip before larger bodies. */
    struct curl_slist *l = curl_slist_append(x->headers, "Expect:");
    if (l)
        x->headers = l;
    ok = ok && l;
    SET(CURLOPT_HTTPHEADER, x->headers);
#undef SET
    if (!ok)
        x->fail_msg = "invalid request options";
    return ok;
}

void hf_http_client_send(hf_http_client *c, const hf_http_request *req, hf_http_done_fn done,
                         void *arg)
{
    if (c->closing) {
        hf_http_response r = {.error = "cancelled", .body = ""};
        done(arg, &r);
        return;
    }
    xfer *x = xcalloc(1, sizeof *x);
    x->c = c;
    x->done = done;
    x->arg = arg;
    x->started_ms = hf_now_ms();
    x->timeout_ms = req->timeout_ms;
    xfer_link(c, x);

    x->easy = curl_easy_init();
    if (!x->easy)
        x->fail_msg = "cannot create a curl handle";
    else if (xfer_setup(x, req)) {
        if (curl_multi_add_handle(c->multi, x->easy) == CURLM_OK)
            x->added = true;
        else
            x->fail_msg = "cannot start the request";
    }
    if (!x->added) {
        /* Report from the loop, not from inside send, as for every other outcome. */
        x->fail_ev = evtimer_new(c->base, on_fail_event, x);
        struct timeval now = {0, 0};
        if (!x->fail_ev || evtimer_add(x->fail_ev, &now) != 0)
            hf_die("cannot schedule an HTTP failure report");
    }
}

size_t hf_http_client_in_flight(const hf_http_client *c)
{
    return c->in_flight;
}

void hf_http_client_free(hf_http_client *c)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    dispatch_begin(c);
    while (c->xfers)
        xfer_finish(c, c->xfers, -1);
    c->free_pending = true;
    dispatch_end(c);
}

/* ---- Retry-After ---- */

static int month_index(const char *m)
{
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (int i = 0; i < 12; i++)
        if (strcmp(m, months[i]) == 0)
            return i;
    return -1;
}

/* Parses the three HTTP-date forms of RFC 9110 section 5.6.7 into epoch seconds. */
static bool parse_http_date(const char *s, time_t *out)
{
    char wday[16], mon[4];
    int day, year, hh, mm, ss, used = 0;
    size_t len = strlen(s);
    bool ok = false;
    /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    if (sscanf(s, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", wday, &day, mon, &year, &hh,
               &mm, &ss, &used) == 7 &&
        (size_t)used == len)
        ok = true;
    /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
    else if (used = 0, sscanf(s, "%15[A-Za-z], %2d-%3[A-Za-z]-%2d %2d:%2d:%2d GMT%n", wday, &day,
                              mon, &year, &hh, &mm, &ss, &used) == 7 &&
                           (size_t)used == len) {
        year += year < 70 ? 2000 : 1900;
        ok = true;
    }
    /* asctime: Sun Nov  6 08:49:37 1994 */
    else if (used = 0, sscanf(s, "%3[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d %4d%n", wday, mon, &day,
                              &hh, &mm, &ss, &year, &used) == 7 &&
                           (size_t)used == len)
        ok = true;
    if (!ok)
        return false;
    int m = month_index(mon);
    if (m < 0 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 || year < 1970 || hh < 0 ||
        mm < 0 || ss < 0)
        return false;
    struct tm tm = {.tm_year = year - 1900,
                    .tm_mon = m,
                    .tm_mday = day,
                    .tm_hour = hh,
                    .tm_min = mm,
                    .tm_sec = ss};
    time_t t = timegm(&tm);
    /* timegm rolls an impossible day over ("31 Nov" -> 1 Dec): such a date is refused. */
    if (t == (time_t)-1 || tm.tm_mday != day || tm.tm_mon != m)
        return false;
    *out = t;
    return true;
}

int64_t hf_http_retry_after_ms(const char *value, int64_t now_wall_ms)
{
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen(value);
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len == 0 || len > 64)
        return -1;
    char s[65];
    memcpy(s, value, len);
    s[len] = '\0';

    if (isdigit((unsigned char)s[0])) {
        /* Clamped at about 31,700 years, far beyond any retry horizon, to stay in range. */
        const int64_t max_secs = 1000000000000LL;
        int64_t secs = 0;
        for (size_t i = 0; i < len; i++) {
            if (!isdigit((unsigned char)s[i]))
                return -1;
            secs = secs * 10 + (s[i] - '0');
            if (secs > max_secs)
                secs = max_secs;
        }
        return secs * 1000;
    }
    time_t t;
    if (!parse_http_date(s, &t))
        return -1;
    int64_t at = (int64_t)t * 1000;
    return at > now_wall_ms ? at - now_wall_ms : 0;
}
