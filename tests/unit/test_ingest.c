/* Unit tests for ingest/ingest.c through ingest.h: a real server on 127.0.0.1:0 in this process,
 * called with libcurl, a temporary secrets directory, and librdkafka's in-process mock cluster
 * read back with a consumer: answers only after Kafka holds every envelope, envelope and key
 * contents, stable ids on redelivery, signature and routing errors, the body limit, the Meta
 * handshake, missing secrets, secret reloads, Kafka outages and refusals, the in-flight limit,
 * the operations endpoints and their counters, draining, and what the log may hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <errno.h>
#include <ftw.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest.h"
#include "json.h"
#include "kafka_mock.h"
#include "log.h"
#include "provider_request.h"
#include "util.h"

/* Kafka protocol API key of Produce (rdkafka_protocol.h is not installed). */
enum { API_PRODUCE = 0 };

#define PREFIX "hftest"
#define TOPIC PREFIX ".webhooks.messaging" /* meta's catalog category is messaging */
#define PAGE "104857362981245"
#define KEY "meta:" PAGE
#define APP_SECRET "test_app_secret_key"
#define VERIFY_TOKEN "verify-me-please"
#define WAIT_MS 10000
#define QUIET_MS 700 /* how long "nothing more arrives" is watched for */
#define META_PATH "/api/integrations/webhooks/meta"

/* ---- fixture: a mock cluster, a secrets directory, a configuration, the server ---- */

typedef struct fixture {
    km_cluster *kafka;
    char bootstraps[256]; /* cfg.kafka_brokers: a copy of kafka's, as the config is not const */
    char secrets_dir[64];
    char listen[32], prefix[32], empty[1], level[8], format[8];
    ingest_config cfg;
    ingest_server *server;
    int port;
    int log_fd; /* > 0 while the log goes to a file of the test's */
} fixture;

static void write_file(const char *path, const char *value)
{
    FILE *fp = fopen(path, "w");
    if (!fp)
        fail_msg("cannot write %s: %s", path, strerror(errno));
    fputs(value, fp);
    fclose(fp);
}

/* Writes <secrets>/<rel> with value and a trailing newline, as `echo` would. */
static void write_secret(const fixture *f, const char *rel, const char *value)
{
    char *path = xasprintf("%s/%s", f->secrets_dir, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", path, strerror(errno));
    *slash = '/';
    char *line = xasprintf("%s\n", value);
    write_file(path, line);
    free(line);
    free(path);
}

static void remove_secret(const fixture *f, const char *rel)
{
    char *path = xasprintf("%s/%s", f->secrets_dir, rel);
    if (unlink(path) != 0)
        fail_msg("unlink %s: %s", path, strerror(errno));
    free(path);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    static const char *const topics[] = {TOPIC};
    char err[256];
    fixture *f = xcalloc(1, sizeof *f);
    f->kafka = km_cluster_new(topics, HF_ARRAY_LEN(topics), err, sizeof err);
    if (!f->kafka) {
        free(f);
        return -1;
    }
    snprintf(f->bootstraps, sizeof f->bootstraps, "%s", f->kafka->bootstraps);
    snprintf(f->secrets_dir, sizeof f->secrets_dir, "/tmp/hf-test-ingest-XXXXXX");
    if (!mkdtemp(f->secrets_dir)) {
        km_cluster_free(f->kafka);
        free(f);
        return -1;
    }
    write_secret(f, "meta/app_secret", APP_SECRET);
    write_secret(f, "meta/verify_token", VERIFY_TOKEN);
    snprintf(f->listen, sizeof f->listen, "127.0.0.1:0");
    snprintf(f->prefix, sizeof f->prefix, PREFIX);
    snprintf(f->level, sizeof f->level, "error");
    snprintf(f->format, sizeof f->format, "text");
    /* The settings table's defaults, but for the listener, brokers, secrets and prefix. */
    f->cfg = (ingest_config){
        .kafka_brokers = f->bootstraps,
        .listen = f->listen,
        .threads = 2,
        .secrets_dir = f->secrets_dir,
        .topic_prefix = f->prefix,
        .public_base_url = f->empty,
        .log_level = f->level,
        .log_format = f->format,
        .max_body_bytes = 1048576,
        .max_header_bytes = 16384,
        .max_connections = 10000,
        .client_timeout_ms = 15000,
        .ack_timeout_ms = 2500,
        .retry_after_s = 5,
        .queue_max_messages = 100000,
        .max_in_flight = 20000,
        .max_in_flight_bytes = 268435456,
        .message_timeout_ms = 30000,
        .linger_ms = 0.5,
        .shutdown_timeout_ms = 10000,
    };
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ingest_server_free(f->server);
    f->server = NULL;
    if (f->log_fd > 0) {
        hf_log_set_fd(STDERR_FILENO);
        hf_log_init("test_ingest", HF_LOG_ERROR, HF_LOG_TEXT);
        close(f->log_fd);
    }
    nftw(f->secrets_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    km_cluster_destroy_later(f->kafka);
    free(f);
    return 0;
}

static void server_start(fixture *f)
{
    char err[512] = "";
    f->server = ingest_server_new(&f->cfg, err, sizeof err);
    if (!f->server)
        fail_msg("ingest_server_new: %s", err);
    ingest_server_start(f->server);
    f->port = ingest_server_port(f->server);
    assert_true(f->port > 0);
}

/* ---- HTTP with libcurl (no cmocka assertions: also used from other threads) ---- */

typedef struct reply {
    long status; /* 0: no answer (error says why) */
    char error[CURL_ERROR_SIZE];
    hf_buf body;
    char retry_after[32], content_type[96], allow[32], request_id[48], connection[32];
    long connects; /* connections opened for the request (0: an existing one was reused) */
} reply;

static void reply_free(reply *r)
{
    hf_buf_free(&r->body);
}

static const char *body_of(const reply *r)
{
    return r->body.data ? r->body.data : "";
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    hf_buf_append(&((reply *)arg)->body, data, size * n);
    return size * n;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t outlen)
{
    size_t n = strlen(name);
    if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0)
        return;
    const char *v = line + n + 1;
    const char *end = line + len;
    while (v < end && *v == ' ')
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    snprintf(out, outlen, "%.*s", (int)(end - v), v);
}

static size_t on_header(char *line, size_t size, size_t n, void *arg)
{
    reply *r = arg;
    size_t len = size * n;
    header_value(line, len, "Retry-After", r->retry_after, sizeof r->retry_after);
    header_value(line, len, "Content-Type", r->content_type, sizeof r->content_type);
    header_value(line, len, "Allow", r->allow, sizeof r->allow);
    header_value(line, len, "X-Request-Id", r->request_id, sizeof r->request_id);
    header_value(line, len, "Connection", r->connection, sizeof r->connection);
    return len;
}

/* One request to the server; headers is a NULL-terminated list of "Name: value" lines. With a
 * handle, its kept-alive connection is used; else a fresh handle (and connection). */
static void http_on(CURL *handle, int port, const char *method, const char *path,
                    const char *const *headers, const void *body, size_t len, reply *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = handle ? handle : curl_easy_init();
    char *url = xasprintf("http://127.0.0.1:%d%s", port, path);
    struct curl_slist *list = curl_slist_append(NULL, "Expect:");
    for (size_t i = 0; headers && headers[i]; i++)
        list = curl_slist_append(list, headers[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, out->error);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &out->connects);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(list);
    free(url);
    if (!handle)
        curl_easy_cleanup(c);
}

static void http(const fixture *f, const char *method, const char *path, reply *out)
{
    http_on(NULL, f->port, method, path, NULL, NULL, 0, out);
}

/* ---- Meta deliveries ---- */

/* A delivery of two messaging events of one page: a message and a postback. */
typedef struct delivery {
    char mid[2][48];
    char item[2][320]; /* each event exactly as in the body (the envelope's payload) */
    char body[1024];
} delivery;

static void meta_delivery(delivery *d, const char *tag)
{
    static int seq;
    int n = ++seq;
    snprintf(d->mid[0], sizeof d->mid[0], "m_%s_%d_msg", tag, n);
    snprintf(d->mid[1], sizeof d->mid[1], "m_%s_%d_pb", tag, n);
    snprintf(d->item[0], sizeof d->item[0],
             "{\"sender\":{\"id\":\"6523918047715832\"},\"recipient\":{\"id\":\"" PAGE "\"},"
             "\"timestamp\":1700000000000,\"message\":{\"mid\":\"%s\",\"text\":\"Is my order "
             "ready for pickup?\"}}",
             d->mid[0]);
    snprintf(d->item[1], sizeof d->item[1],
             "{\"sender\":{\"id\":\"7734190256618843\"},\"recipient\":{\"id\":\"" PAGE "\"},"
             "\"timestamp\":1700000000123,\"postback\":{\"mid\":\"%s\",\"title\":\"Confirm "
             "pickup\",\"payload\":\"CONFIRM_PICKUP_10045\"}}",
             d->mid[1]);
    snprintf(d->body, sizeof d->body,
             "{\"object\":\"page\",\"entry\":[{\"id\":\"" PAGE "\",\"time\":1700000000200,"
             "\"messaging\":[%s,%s]}]}",
             d->item[0], d->item[1]);
}

/* POSTs body to path signed with key (NULL: no signature header), plus extra header lines. */
static void post_signed_on(CURL *handle, int port, const char *path, const char *body, size_t len,
                           const char *key, const char *extra, reply *out)
{
    char hex[2 * 32 + 1];
    char sig[96];
    const char *headers[4] = {"Content-Type: application/json", NULL, NULL, NULL};
    size_t n = 1;
    if (key) {
        pr_hmac_hex(key, body, len, hex);
        snprintf(sig, sizeof sig, "X-Hub-Signature-256: sha256=%s", hex);
        headers[n++] = sig;
    }
    if (extra)
        headers[n++] = extra;
    http_on(handle, port, "POST", path, headers, body, len, out);
}

static void post_meta(const fixture *f, const char *body, const char *key, reply *out)
{
    post_signed_on(NULL, f->port, META_PATH, body, strlen(body), key, NULL, out);
}

/* ---- Kafka read-back ---- */

typedef struct kmsg {
    char *key, *value;
} kmsg;

typedef struct kmsgs {
    kmsg v[64];
    size_t n;
} kmsgs;

static void kmsgs_free(kmsgs *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].key);
        free(m->v[i].value);
    }
    m->n = 0;
}

static rd_kafka_t *consumer_new(const fixture *f)
{
    static const char *const props[] = {"fetch.wait.max.ms", "50", NULL};
    return km_consumer_new(f->kafka, "test_ingest", props);
}

static void kmsgs_add(const rd_kafka_message_t *m, void *arg)
{
    kmsgs *out = arg;
    out->v[out->n].key = xstrndup(m->key ? m->key : "", m->key_len);
    out->v[out->n].value = xstrndup(m->payload ? m->payload : "", m->len);
    out->n++;
}

/* Reads the topic (one partition) from the beginning until want messages have arrived or
 * timeout_ms has passed; out gets every message read (at most 64). */
static void consume(const fixture *f, size_t want, int timeout_ms, kmsgs *out)
{
    out->n = 0;
    rd_kafka_t *rk = consumer_new(f);
    km_consume(rk, TOPIC, want < HF_ARRAY_LEN(out->v) ? want : HF_ARRAY_LEN(out->v), timeout_ms,
               kmsgs_add, out);
    km_consumer_free(rk);
}

/* The topic's high watermark (messages in it), asked of the broker now; -1 on error. */
static int64_t messages_in_topic(rd_kafka_t *rk)
{
    int64_t lo = -1, hi = -1;
    if (rd_kafka_query_watermark_offsets(rk, TOPIC, 0, &lo, &hi, 5000))
        return -1;
    return hi;
}

/* True when some message of m is an envelope whose "id" is "meta:<mid>". */
static bool has_mid(const kmsgs *m, const char *mid)
{
    char *id = xasprintf("meta:%s", mid);
    bool found = false;
    for (size_t i = 0; i < m->n && !found; i++) {
        hf_json v = hf_json_parse(m->v[i].value, strlen(m->v[i].value), NULL, 0);
        const char *got = hf_json_str(hf_json_get(v, "id"));
        found = got && strcmp(got, id) == 0;
        hf_json_free(v);
    }
    free(id);
    return found;
}

static const char *str_member(hf_json v, const char *name)
{
    const char *s = hf_json_str(hf_json_get(v, name));
    if (!s)
        fail_msg("envelope member %s missing or not a string", name);
    return s;
}

/* Checks one envelope (and its key) against what the delivery sent. */
static void assert_envelope(const kmsg *m, const char *mid, const char *event, const char *native,
                            const char *psid, const char *occurred_at, const char *payload,
                            const char *request_id)
{
    assert_string_equal(m->key, KEY);
    char err[256];
    hf_json v = hf_json_parse(m->value, strlen(m->value), err, sizeof err);
    if (!v)
        fail_msg("envelope is not JSON (%s): %s", err, m->value);
    char *id = xasprintf("meta:%s", mid);
    char *resource = xasprintf("psid:%s", psid);
    assert_string_equal(str_member(v, "id"), id);
    assert_string_equal(str_member(v, "provider"), "meta");
    assert_string_equal(str_member(v, "event"), event);
    assert_string_equal(str_member(v, "native_type"), native);
    assert_string_equal(str_member(v, "account"), PAGE);
    assert_string_equal(str_member(v, "resource"), resource);
    assert_string_equal(str_member(v, "occurred_at"), occurred_at);
    assert_string_equal(str_member(v, "request_id"), request_id);
    int64_t received_ms;
    assert_true(hf_parse_rfc3339(str_member(v, "received_at"), &received_ms));
    assert_true(llabs((long long)(received_ms - hf_wall_ms())) < 60000);
    size_t len;
    const char *raw = hf_json_raw(hf_json_get(v, "payload"), &len);
    assert_non_null(raw);
    assert_int_equal(len, strlen(payload));
    assert_memory_equal(raw, payload, len);
    free(resource);
    free(id);
    hf_json_free(v);
}

/* ---- answers ---- */

/* status, a JSON content type and {"error": error, "detail": "...detail..."}. */
static void assert_json_error(const reply *r, long status, const char *error, const char *detail)
{
    if (r->status != status)
        fail_msg("status %ld (%s), want %ld: %s", r->status, r->error, status, body_of(r));
    assert_string_equal(r->content_type, "application/json");
    char err[256];
    hf_json v = hf_json_parse(body_of(r), r->body.len, err, sizeof err);
    if (!v)
        fail_msg("error body is not JSON (%s): %s", err, body_of(r));
    assert_true(hf_json_is_object(v));
    assert_string_equal(hf_json_str(hf_json_get(v, "error")), error);
    const char *d = hf_json_str(hf_json_get(v, "detail"));
    assert_non_null(d);
    if (detail && !strstr(d, detail))
        fail_msg("detail \"%s\" does not say \"%s\"", d, detail);
    hf_json_free(v);
}

static void assert_status(const reply *r, long status)
{
    if (r->status != status)
        fail_msg("status %ld (%s), want %ld: %s", r->status, r->error, status, body_of(r));
}

/* The value of one series ("name{labels}") in /metrics, -1 when absent. */
static long long metric(const fixture *f, const char *series)
{
    reply r;
    http(f, "GET", "/metrics", &r);
    assert_status(&r, 200);
    char *needle = xasprintf("\n%s ", series);
    const char *at = strstr(body_of(&r), needle);
    long long v = at ? strtoll(at + strlen(needle), NULL, 10) : -1;
    free(needle);
    reply_free(&r);
    return v;
}

/* Polls a metric until it equals want or timeout_ms passes; returns the last value. */
static long long metric_wait(const fixture *f, const char *series, long long want, int timeout_ms)
{
    int64_t until = hf_now_ms() + timeout_ms;
    long long v = metric(f, series);
    while (v != want && hf_now_ms() < until) {
        usleep(10 * 1000);
        v = metric(f, series);
    }
    return v;
}

/* Polls GET path until it answers want or timeout_ms passes; returns the last status. */
static long status_wait(const fixture *f, const char *path, long want, int timeout_ms)
{
    int64_t until = hf_now_ms() + timeout_ms;
    long status;
    for (;;) {
        reply r;
        http(f, "GET", path, &r);
        status = r.status;
        reply_free(&r);
        if (status == want || hf_now_ms() >= until)
            return status;
        usleep(20 * 1000);
    }
}

/* ---- tests ---- */

/* Two events, answered 200 only once both are in Kafka, with the right key and envelopes; the
 * same delivery again gives envelopes with the same ids. */
static void signed_delivery_is_answered_after_both_envelopes_are_in_kafka(void **state)
{
    fixture *f = *state;
    f->cfg.linger_ms = 100; /* an answer before the acknowledgement would find Kafka empty */
    server_start(f);
    rd_kafka_t *watcher = consumer_new(f);
    assert_int_equal(messages_in_topic(watcher), 0);
    delivery d;
    meta_delivery(&d, "ok");
    reply r;
    post_signed_on(NULL, f->port, META_PATH, d.body, strlen(d.body), APP_SECRET,
                   "X-Request-Id: first-try", &r);
    int64_t in_kafka = messages_in_topic(watcher);
    assert_status(&r, 200);
    assert_string_equal(body_of(&r), "");
    assert_string_equal(r.request_id, "first-try");
    assert_int_equal(in_kafka, 2);
    reply_free(&r);

    post_signed_on(NULL, f->port, META_PATH, d.body, strlen(d.body), APP_SECRET,
                   "X-Request-Id: second-try", &r);
    in_kafka = messages_in_topic(watcher);
    assert_status(&r, 200);
    assert_int_equal(in_kafka, 4);
    reply_free(&r);
    km_consumer_free(watcher);

    kmsgs m;
    consume(f, 4, WAIT_MS, &m);
    assert_int_equal(m.n, 4);
    for (size_t i = 0; i < 4; i += 2) {
        const char *rid = i == 0 ? "first-try" : "second-try";
        assert_envelope(&m.v[i], d.mid[0], "message", "message", "6523918047715832",
                        "2023-11-14T22:13:20.000Z", d.item[0], rid);
        assert_envelope(&m.v[i + 1], d.mid[1], "messaging_postbacks", "postback",
                        "7734190256618843", "2023-11-14T22:13:20.123Z", d.item[1], rid);
    }
    kmsgs_free(&m);
}

/* Bad, missing or malformed signatures and tampered bodies: 401 with a JSON error, and nothing
 * reaches Kafka (a later good delivery is the first and only message there). */
static void bad_signature_is_401_and_produces_nothing(void **state)
{
    fixture *f = *state;
    server_start(f);
    delivery d;
    meta_delivery(&d, "bad");
    reply r;
    post_meta(f, d.body, "not-the-app-secret", &r);
    assert_json_error(&r, 401, "bad_signature", "X-Hub-Signature-256");
    reply_free(&r);
    post_meta(f, d.body, NULL, &r);
    assert_json_error(&r, 401, "missing_signature", "X-Hub-Signature-256");
    reply_free(&r);

    /* signed, then one byte of the body changed */
    char hex[65], sig[96];
    pr_hmac_hex(APP_SECRET, d.body, strlen(d.body), hex);
    snprintf(sig, sizeof sig, "X-Hub-Signature-256: sha256=%s", hex);
    char *tampered = xstrdup(d.body);
    *strstr(tampered, "pickup?") = 'P';
    const char *headers[] = {sig, NULL};
    http_on(NULL, f->port, "POST", META_PATH, headers, tampered, strlen(tampered), &r);
    assert_json_error(&r, 401, "bad_signature", NULL);
    reply_free(&r);
    free(tampered);
    /* the right MAC in a malformed header */
    snprintf(sig, sizeof sig, "X-Hub-Signature-256: sha1=%s", hex);
    http_on(NULL, f->port, "POST", META_PATH, headers, d.body, strlen(d.body), &r);
    assert_json_error(&r, 401, "bad_signature", NULL);
    reply_free(&r);

    delivery marker;
    meta_delivery(&marker, "marker");
    post_meta(f, marker.body, APP_SECRET, &r);
    assert_status(&r, 200);
    reply_free(&r);
    kmsgs m;
    consume(f, 3, QUIET_MS, &m);
    assert_int_equal(m.n, 2);
    assert_true(has_mid(&m, marker.mid[0]));
    assert_true(has_mid(&m, marker.mid[1]));
    kmsgs_free(&m);
}

/* Paths naming no provider are 404, methods other than POST (and Meta's GET) are 405, each with
 * a JSON body (Xero's answers are empty, as Xero wants). */
static void routing_errors_are_404_and_405_with_json_bodies(void **state)
{
    fixture *f = *state;
    server_start(f);
    reply r;
    const char *headers[] = {"Content-Type: application/json", NULL};
    http_on(NULL, f->port, "POST", "/api/integrations/webhooks/shopify", headers, "{}", 2, &r);
    assert_json_error(&r, 404, "unknown_provider", "expected one of");
    reply_free(&r);
    http_on(NULL, f->port, "POST", META_PATH "/extra", headers, "{}", 2, &r);
    assert_json_error(&r, 404, "unknown_provider", "no such webhook endpoint");
    reply_free(&r);
    http_on(NULL, f->port, "POST", "/api/integrations/webhooks/", headers, "{}", 2, &r);
    assert_json_error(&r, 404, "unknown_provider", NULL);
    reply_free(&r);
    http(f, "GET", "/nope", &r);
    assert_json_error(&r, 404, "not_found", NULL);
    reply_free(&r);

    static const char *const methods[] = {"PUT", "DELETE", "PATCH"};
    for (size_t i = 0; i < HF_ARRAY_LEN(methods); i++) {
        http_on(NULL, f->port, methods[i], META_PATH, headers, "{}", 2, &r);
        assert_json_error(&r, 405, "method_not_allowed", NULL);
        assert_string_equal(r.allow, "GET, POST");
        reply_free(&r);
    }
    http(f, "GET", "/api/integrations/webhooks/hubspot", &r);
    assert_json_error(&r, 405, "method_not_allowed", "use POST");
    assert_string_equal(r.allow, "POST");
    reply_free(&r);
    http(f, "GET", "/api/integrations/webhooks/xero", &r);
    assert_status(&r, 405);
    assert_string_equal(r.allow, "POST");
    assert_string_equal(body_of(&r), "");
    reply_free(&r);
    http_on(NULL, f->port, "POST", "/healthz", headers, "{}", 2, &r);
    assert_json_error(&r, 405, "method_not_allowed", NULL);
    assert_string_equal(r.allow, "GET");
    reply_free(&r);
}

/* Pads a delivery's body with trailing blanks (still valid JSON) to exactly len bytes. */
static char *padded(const delivery *d, size_t len)
{
    size_t n = strlen(d->body);
    assert_true(len >= n);
    char *body = xmalloc(len + 1);
    memcpy(body, d->body, n);
    memset(body + n, ' ', len - n);
    body[len] = '\0';
    return body;
}

/* One byte over max_body_bytes is 413 even when correctly signed, and produces nothing; at the
 * limit exactly the body is read, verified and accepted; far over it libevent refuses it. */
static void body_over_the_limit_is_413(void **state)
{
    fixture *f = *state;
    f->cfg.max_body_bytes = 2048;
    server_start(f);
    delivery over, at;
    meta_delivery(&over, "over");
    meta_delivery(&at, "at");
    char *body = padded(&over, 2049);
    reply r;
    post_meta(f, body, APP_SECRET, &r);
    assert_json_error(&r, 413, "payload_too_large", "the body is over the 2048-byte limit");
    reply_free(&r);
    free(body);
    body = padded(&over, 3 * 2048);
    post_meta(f, body, APP_SECRET, &r);
    assert_status(&r, 413);
    reply_free(&r);
    free(body);

    body = padded(&at, 2048);
    post_meta(f, body, APP_SECRET, &r);
    assert_status(&r, 200);
    reply_free(&r);
    free(body);
    kmsgs m;
    consume(f, 3, QUIET_MS, &m);
    assert_int_equal(m.n, 2);
    assert_true(has_mid(&m, at.mid[0]));
    assert_true(has_mid(&m, at.mid[1]));
    kmsgs_free(&m);
    assert_int_equal(
        metric(f,
               "hookflow_ingest_deliveries_rejected_total{provider=\"meta\",reason=\"payload_too_"
               "large\"}"),
        1);
}

#define HANDSHAKE META_PATH "?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token="

/* The subscription handshake echoes hub.challenge for the configured verify token only. */
static void meta_handshake_echoes_the_challenge_for_the_right_token_only(void **state)
{
    fixture *f = *state;
    server_start(f);
    reply r;
    http(f, "GET", HANDSHAKE VERIFY_TOKEN, &r);
    assert_status(&r, 200);
    assert_string_equal(body_of(&r), "1158201444");
    assert_string_equal(r.content_type, "text/plain");
    reply_free(&r);
    http(f, "GET", HANDSHAKE "verify-me-not", &r);
    assert_json_error(&r, 403, "bad_verify_token", "does not match");
    assert_null(strstr(body_of(&r), "1158201444"));
    reply_free(&r);
    http(f, "GET", META_PATH "?hub.mode=subscribe&hub.challenge=1158201444", &r);
    assert_json_error(&r, 403, "bad_verify_token", "missing");
    reply_free(&r);
    http(f, "GET",
         META_PATH "?hub.mode=unsubscribe&hub.challenge=1158201444&hub.verify_token=" VERIFY_TOKEN,
         &r);
    assert_json_error(&r, 403, "bad_verify_token", "subscribe");
    reply_free(&r);
    http(f, "GET", META_PATH "?hub.mode=subscribe&hub.verify_token=" VERIFY_TOKEN, &r);
    assert_json_error(&r, 400, "malformed", "hub.challenge");
    reply_free(&r);
    assert_int_equal(metric(f, "hookflow_ingest_deliveries_accepted_total{provider=\"meta\"}"), 1);
    assert_int_equal(
        metric(f, "hookflow_ingest_deliveries_rejected_total{provider=\"meta\",reason=\"bad_"
                  "verify_token\"}"),
        3);
    kmsgs m;
    consume(f, 1, QUIET_MS, &m);
    assert_int_equal(m.n, 0);
}

/* Without meta/app_secret every Meta delivery, signed or not, is 503 (the platform retries) with
 * an error naming the secret; the handshake, whose secret is there, still works; once the
 * secret is written and reloaded deliveries are accepted, and only those reach Kafka. */
static void missing_secret_is_503_and_nothing_is_accepted_unsigned(void **state)
{
    fixture *f = *state;
    remove_secret(f, "meta/app_secret");
    server_start(f);
    delivery d;
    meta_delivery(&d, "nosecret");
    reply r;
    post_meta(f, d.body, APP_SECRET, &r);
    assert_json_error(&r, 503, "missing_secret", "meta/app_secret is not configured");
    assert_string_equal(r.retry_after, "5");
    reply_free(&r);
    post_meta(f, d.body, NULL, &r);
    assert_json_error(&r, 503, "missing_secret", "meta/app_secret is not configured");
    reply_free(&r);
    post_meta(f, d.body, "", &r);
    assert_json_error(&r, 503, "missing_secret", NULL);
    reply_free(&r);
    const char *headers[] = {"Content-Type: application/json", NULL};
    http_on(NULL, f->port, "POST", "/api/integrations/webhooks/hubspot", headers, "[]", 2, &r);
    assert_json_error(&r, 503, "missing_secret", "hubspot/client_secret");
    reply_free(&r);
    http(f, "GET", HANDSHAKE VERIFY_TOKEN, &r);
    assert_status(&r, 200);
    reply_free(&r);
    assert_int_equal(
        metric(f, "hookflow_ingest_deliveries_rejected_total{provider=\"meta\",reason=\"missing_"
                  "secret\"}"),
        3);

    write_secret(f, "meta/app_secret", APP_SECRET);
    char err[256] = "";
    if (ingest_server_reload_secrets(f->server, err, sizeof err) != 0)
        fail_msg("reload: %s", err);
    delivery later;
    meta_delivery(&later, "later");
    post_meta(f, later.body, APP_SECRET, &r);
    assert_status(&r, 200);
    reply_free(&r);
    kmsgs m;
    consume(f, 3, QUIET_MS, &m);
    assert_int_equal(m.n, 2);
    assert_true(has_mid(&m, later.mid[0]));
    assert_true(has_mid(&m, later.mid[1]));
    kmsgs_free(&m);
}

/* Posts a fresh delivery signed with key; returns the status. */
static long post_fresh(const fixture *f, const char *key, delivery *d)
{
    meta_delivery(d, "fresh");
    reply r;
    post_meta(f, d->body, key, &r);
    long status = r.status;
    reply_free(&r);
    return status;
}

/* A reload switches to the new app secret at once; a <name>.previous beside it keeps the old
 * one valid too, and removing it ends that. */
static void reload_secrets_rotates_keys_and_honours_previous(void **state)
{
    fixture *f = *state;
    server_start(f);
    delivery d;
    char err[256] = "";
    assert_int_equal(post_fresh(f, APP_SECRET, &d), 200);

    write_secret(f, "meta/app_secret", "rotated-app-secret");
    if (ingest_server_reload_secrets(f->server, err, sizeof err) != 0)
        fail_msg("reload: %s", err);
    assert_int_equal(post_fresh(f, "rotated-app-secret", &d), 200);
    assert_int_equal(post_fresh(f, APP_SECRET, &d), 401);

    write_secret(f, "meta/app_secret.previous", APP_SECRET);
    if (ingest_server_reload_secrets(f->server, err, sizeof err) != 0)
        fail_msg("reload: %s", err);
    assert_int_equal(post_fresh(f, "rotated-app-secret", &d), 200);
    assert_int_equal(post_fresh(f, APP_SECRET, &d), 200);
    assert_int_equal(post_fresh(f, "never-configured", &d), 401);

    remove_secret(f, "meta/app_secret.previous");
    if (ingest_server_reload_secrets(f->server, err, sizeof err) != 0)
        fail_msg("reload: %s", err);
    assert_int_equal(post_fresh(f, APP_SECRET, &d), 401);
    assert_int_equal(post_fresh(f, "rotated-app-secret", &d), 200);

    /* five deliveries accepted, two events each */
    kmsgs m;
    consume(f, 11, QUIET_MS, &m);
    assert_int_equal(m.n, 10);
    assert_true(has_mid(&m, d.mid[0]));
    kmsgs_free(&m);
}

/* A reload that cannot read the directory fails with a reason and keeps the old secrets. */
static void failed_reload_keeps_the_old_secrets(void **state)
{
    fixture *f = *state;
    server_start(f);
    delivery d;
    write_secret(f, "meta/app_secret", "half-written-secret");
    char *broken = xasprintf("%s/meta/broken", f->secrets_dir);
    assert_int_equal(symlink("/nonexistent/hookflow-secret", broken), 0);
    char err[256] = "";
    assert_int_equal(ingest_server_reload_secrets(f->server, err, sizeof err), -1);
    assert_non_null(strstr(err, "meta/broken"));
    assert_int_equal(post_fresh(f, APP_SECRET, &d), 200);
    assert_int_equal(post_fresh(f, "half-written-secret", &d), 401);

    assert_int_equal(unlink(broken), 0);
    free(broken);
    err[0] = '\0';
    if (ingest_server_reload_secrets(f->server, err, sizeof err) != 0)
        fail_msg("reload: %s", err);
    assert_int_equal(post_fresh(f, "half-written-secret", &d), 200);
    assert_int_equal(post_fresh(f, APP_SECRET, &d), 401);
}

/* Creates the server with a reconnect backoff short enough for a broker's return to be noticed
 * at once (the default grows to 10 s). */
static void server_start_quick_reconnect(fixture *f)
{
    setenv("HOOKFLOW_KAFKA_RECONNECT_BACKOFF_MAX_MS", "200", 1);
    server_start(f);
    unsetenv("HOOKFLOW_KAFKA_RECONNECT_BACKOFF_MAX_MS");
}

/* With the broker down deliveries get 503 + Retry-After within ack_timeout_ms and /readyz says
 * so; once it is back deliveries are accepted again, and every delivery answered 200 is in
 * Kafka. */
static void broker_down_is_503_with_retry_after_and_recovers(void **state)
{
    fixture *f = *state;
    f->cfg.ack_timeout_ms = 300;
    f->cfg.retry_after_s = 7;
    server_start_quick_reconnect(f);
    delivery accepted[16];
    size_t naccepted = 0;
    assert_int_equal(post_fresh(f, APP_SECRET, &accepted[naccepted]), 200);
    naccepted++;
    assert_int_equal(status_wait(f, "/readyz", 200, WAIT_MS), 200);

    rd_kafka_mock_broker_set_down(f->kafka->mock, 1);
    assert_int_equal(status_wait(f, "/readyz", 503, WAIT_MS), 503);
    reply r;
    http(f, "GET", "/readyz", &r);
    assert_json_error(&r, 503, "kafka_unreachable", NULL);
    reply_free(&r);
    for (int i = 0; i < 3; i++) {
        delivery d;
        meta_delivery(&d, "down");
        int64_t start = hf_now_ms();
        post_meta(f, d.body, APP_SECRET, &r);
        int64_t took = hf_now_ms() - start;
        assert_json_error(&r, 503, "kafka_unavailable", "retry later");
        assert_string_equal(r.retry_after, "7");
        assert_true(took >= 250 && took < 5000);
        reply_free(&r);
    }
    assert_int_equal(
        metric(f, "hookflow_ingest_deliveries_rejected_total{provider=\"meta\",reason=\"kafka_"
                  "unavailable\"}"),
        3);

    rd_kafka_mock_broker_set_up(f->kafka->mock, 1);
    assert_int_equal(status_wait(f, "/readyz", 200, WAIT_MS), 200);
    int64_t until = hf_now_ms() + WAIT_MS;
    long status = 0;
    while (status != 200 && naccepted < HF_ARRAY_LEN(accepted) && hf_now_ms() < until) {
        status = post_fresh(f, APP_SECRET, &accepted[naccepted]);
        if (status == 200)
            naccepted++;
        else if (status != 503)
            fail_msg("status %ld after the broker came back", status);
    }
    assert_int_equal(status, 200);

    /* The refused deliveries' events may reach Kafka later (still queued when refused): the
     * platform's retry is deduplicated by id. What was answered 200 must be there. */
    kmsgs m;
    consume(f, 64, 1500, &m);
    for (size_t i = 0; i < naccepted; i++) {
        assert_true(has_mid(&m, accepted[i].mid[0]));
        assert_true(has_mid(&m, accepted[i].mid[1]));
    }
    kmsgs_free(&m);
}

/* A broker refusing the produce request: 503, none of the delivery's events in Kafka; later
 * deliveries are accepted. */
static void produce_refused_by_the_broker_is_503_and_not_in_kafka(void **state)
{
    fixture *f = *state;
    server_start(f);
    assert_int_equal(status_wait(f, "/readyz", 200, WAIT_MS), 200);
    rd_kafka_mock_push_request_errors(f->kafka->mock, API_PRODUCE, 1,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    delivery refused;
    meta_delivery(&refused, "refused");
    reply r;
    post_meta(f, refused.body, APP_SECRET, &r);
    assert_json_error(&r, 503, "kafka_unavailable", "Kafka did not accept every event");
    assert_string_equal(r.retry_after, "5");
    reply_free(&r);

    delivery later;
    int64_t until = hf_now_ms() + WAIT_MS;
    long status = 0;
    while (status != 200 && hf_now_ms() < until)
        status = post_fresh(f, APP_SECRET, &later);
    assert_int_equal(status, 200);
    kmsgs m;
    consume(f, 64, 1000, &m);
    assert_false(has_mid(&m, refused.mid[0]));
    assert_false(has_mid(&m, refused.mid[1]));
    assert_true(has_mid(&m, later.mid[0]));
    assert_true(has_mid(&m, later.mid[1]));
    kmsgs_free(&m);
}

/* Retriable produce errors are retried by the producer before the answer: 200, and each event
 * in Kafka exactly once. */
static void retriable_produce_errors_are_retried_before_answering(void **state)
{
    fixture *f = *state;
    server_start(f);
    rd_kafka_mock_push_request_errors(
        f->kafka->mock, API_PRODUCE, 3, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
    delivery d;
    assert_int_equal(post_fresh(f, APP_SECRET, &d), 200);
    kmsgs m;
    consume(f, 3, QUIET_MS, &m);
    assert_int_equal(m.n, 2);
    assert_true(has_mid(&m, d.mid[0]));
    assert_true(has_mid(&m, d.mid[1]));
    kmsgs_free(&m);
}

#define RECEIVED(p) "hookflow_ingest_deliveries_received_total{provider=\"" p "\"}"
#define ACCEPTED(p) "hookflow_ingest_deliveries_accepted_total{provider=\"" p "\"}"
#define REJECTED(p, why)                                                                           \
    "hookflow_ingest_deliveries_rejected_total{provider=\"" p "\",reason=\"" why "\"}"

/* /healthz and /readyz answer, and /metrics counts exactly what was sent. */
static void health_ready_and_metrics_count_what_happened(void **state)
{
    fixture *f = *state;
    server_start(f);
    reply r;
    http(f, "GET", "/healthz", &r);
    assert_status(&r, 200);
    assert_string_equal(body_of(&r), "{\"status\":\"ok\"}");
    reply_free(&r);
    assert_int_equal(status_wait(f, "/readyz", 200, WAIT_MS), 200);
    http(f, "GET", "/readyz", &r);
    assert_string_equal(body_of(&r), "{\"status\":\"ready\"}");
    assert_string_equal(r.content_type, "application/json");
    reply_free(&r);
    http(f, "GET", "/metrics", &r);
    assert_status(&r, 200);
    assert_non_null(strstr(r.content_type, "text/plain"));
    reply_free(&r);
    assert_int_equal(metric(f, RECEIVED("meta")), 0);
    assert_int_equal(metric(f, ACCEPTED("meta")), 0);
    assert_int_equal(metric(f, REJECTED("meta", "bad_signature")), -1);

    delivery d;
    assert_int_equal(post_fresh(f, APP_SECRET, &d), 200);
    assert_int_equal(post_fresh(f, "not-the-app-secret", &d), 401);
    assert_int_equal(post_fresh(f, "not-the-app-secret", &d), 401);
    const char *headers[] = {"Content-Type: application/json", NULL};
    http_on(NULL, f->port, "POST", "/api/integrations/webhooks/shopify", headers, "{}", 2, &r);
    assert_status(&r, 404);
    reply_free(&r);
    http_on(NULL, f->port, "PUT", META_PATH, headers, "{}", 2, &r);
    assert_status(&r, 405);
    reply_free(&r);
    http(f, "GET", HANDSHAKE VERIFY_TOKEN, &r);
    assert_status(&r, 200);
    reply_free(&r);

    assert_int_equal(metric(f, RECEIVED("meta")), 5);
    assert_int_equal(metric(f, ACCEPTED("meta")), 2); /* the delivery and the handshake */
    assert_int_equal(metric(f, "hookflow_ingest_events_total{provider=\"meta\"}"), 2);
    assert_int_equal(metric(f, REJECTED("meta", "bad_signature")), 2);
    assert_int_equal(metric(f, REJECTED("meta", "method_not_allowed")), 1);
    assert_int_equal(metric(f, REJECTED("unknown", "unknown_provider")), 1);
    assert_int_equal(metric(f, RECEIVED("xero")), 0);
    assert_int_equal(metric(f, ACCEPTED("xero")), 0);
    assert_int_equal(metric(f, "hookflow_ingest_produce_latency_seconds_count{provider=\"meta\"}"),
                     1);
    assert_int_equal(metric(f, "hookflow_ingest_in_flight"), 0);
    assert_int_equal(metric(f, "hookflow_ingest_kafka_ready"), 1);

    http_on(NULL, f->port, "POST", "/metrics", headers, "{}", 2, &r);
    assert_json_error(&r, 405, "method_not_allowed", NULL);
    reply_free(&r);
}

/* A delivery POSTed from its own thread. */
typedef struct post_job {
    pthread_t thread;
    int port;
    delivery d;
    reply r;
} post_job;

static void *post_main(void *arg)
{
    post_job *j = arg;
    post_signed_on(NULL, j->port, META_PATH, j->d.body, strlen(j->d.body), APP_SECRET, NULL, &j->r);
    return NULL;
}

static void post_job_start(post_job *j, const fixture *f, const char *tag)
{
    memset(j, 0, sizeof *j);
    j->port = f->port;
    meta_delivery(&j->d, tag);
    assert_int_equal(pthread_create(&j->thread, NULL, post_main, j), 0);
}

/* Drain waits for the delivery in flight to be answered (200, its events in Kafka) and returns
 * 0; afterwards the instance refuses deliveries and readiness on open connections. */
static void drain_returns_zero_once_in_flight_deliveries_are_answered(void **state)
{
    fixture *f = *state;
    f->cfg.linger_ms = 500; /* the delivery stays in flight long enough to be seen */
    server_start(f);
    CURL *kept = curl_easy_init();
    reply r;
    http_on(kept, f->port, "GET", "/healthz", NULL, NULL, 0, &r);
    assert_status(&r, 200);
    reply_free(&r);

    post_job job;
    post_job_start(&job, f, "drain");
    long long in_flight = metric_wait(f, "hookflow_ingest_in_flight", 1, WAIT_MS);
    int left = ingest_server_drain(f->server, WAIT_MS);
    pthread_join(job.thread, NULL);
    assert_int_equal(in_flight, 1);
    assert_int_equal(left, 0);
    assert_status(&job.r, 200);
    reply_free(&job.r);
    rd_kafka_t *watcher = consumer_new(f);
    assert_int_equal(messages_in_topic(watcher), 2);

    http_on(kept, f->port, "GET", "/readyz", NULL, NULL, 0, &r);
    assert_int_equal(r.connects, 0);
    assert_json_error(&r, 503, "shutting_down", NULL);
    reply_free(&r);
    delivery late;
    meta_delivery(&late, "late");
    post_signed_on(kept, f->port, META_PATH, late.body, strlen(late.body), APP_SECRET, NULL, &r);
    assert_int_equal(r.connects, 0);
    assert_json_error(&r, 503, "shutting_down", NULL);
    assert_string_equal(r.connection, "close");
    assert_string_equal(r.retry_after, "5");
    reply_free(&r);
    curl_easy_cleanup(kept);
    assert_int_equal(messages_in_topic(watcher), 2);
    km_consumer_free(watcher);
}

/* Drain with Kafka down: gives up after its timeout, returns how many deliveries were still
 * unanswered, and those are answered 503 (not 200) with nothing in Kafka. */
static void drain_with_kafka_down_returns_the_unanswered_and_answers_them_503(void **state)
{
    fixture *f = *state;
    f->cfg.ack_timeout_ms = 20000;
    rd_kafka_mock_broker_set_down(f->kafka->mock, 1);
    server_start_quick_reconnect(f);
    post_job job;
    post_job_start(&job, f, "stuck");
    long long in_flight = metric_wait(f, "hookflow_ingest_in_flight", 1, WAIT_MS);
    int64_t start = hf_now_ms();
    int left = ingest_server_drain(f->server, 300);
    int64_t took = hf_now_ms() - start;
    pthread_join(job.thread, NULL);
    assert_int_equal(in_flight, 1);
    assert_int_equal(left, 1);
    assert_true(took >= 300 && took < 8000);
    assert_json_error(&job.r, 503, "kafka_unavailable", NULL);
    assert_string_equal(job.r.retry_after, "5");
    reply_free(&job.r);

    rd_kafka_mock_broker_set_up(f->kafka->mock, 1);
    kmsgs m;
    consume(f, 1, QUIET_MS, &m);
    assert_int_equal(m.n, 0);
}

/* With max_in_flight deliveries waiting for Kafka, the next one is 503 at once; the one waiting
 * is answered 200 when the broker returns, and only it and later ones reach Kafka. */
static void deliveries_beyond_max_in_flight_are_503(void **state)
{
    fixture *f = *state;
    f->cfg.max_in_flight = 1;
    f->cfg.ack_timeout_ms = 20000;
    rd_kafka_mock_broker_set_down(f->kafka->mock, 1);
    server_start_quick_reconnect(f);
    post_job job;
    post_job_start(&job, f, "waiting");
    assert_int_equal(metric_wait(f, "hookflow_ingest_in_flight", 1, WAIT_MS), 1);
    delivery extra;
    meta_delivery(&extra, "extra");
    reply r;
    int64_t start = hf_now_ms();
    post_meta(f, extra.body, APP_SECRET, &r);
    assert_true(hf_now_ms() - start < 2000);
    assert_json_error(&r, 503, "overloaded", "too many deliveries waiting for Kafka");
    assert_string_equal(r.retry_after, "5");
    reply_free(&r);

    rd_kafka_mock_broker_set_up(f->kafka->mock, 1);
    pthread_join(job.thread, NULL);
    assert_status(&job.r, 200);
    reply_free(&job.r);
    assert_int_equal(metric_wait(f, "hookflow_ingest_in_flight", 0, WAIT_MS), 0);
    delivery after;
    assert_int_equal(post_fresh(f, APP_SECRET, &after), 200);
    kmsgs m;
    consume(f, 5, QUIET_MS, &m);
    assert_int_equal(m.n, 4);
    assert_true(has_mid(&m, job.d.mid[0]));
    assert_true(has_mid(&m, job.d.mid[1]));
    assert_true(has_mid(&m, after.mid[0]));
    assert_false(has_mid(&m, extra.mid[0]));
    kmsgs_free(&m);
}

/* Memory is bounded in bytes too: with a delivery (and its envelopes) waiting for Kafka and a
 * byte budget it fills, the next delivery is 503 at once; the one waiting is answered 200 when
 * the broker returns and the bytes are given back. */
static void deliveries_beyond_max_in_flight_bytes_are_503(void **state)
{
    fixture *f = *state;
    f->cfg.max_in_flight_bytes = 1; /* the first delivery alone is always let through */
    f->cfg.ack_timeout_ms = 20000;
    rd_kafka_mock_broker_set_down(f->kafka->mock, 1);
    server_start_quick_reconnect(f);
    post_job job;
    post_job_start(&job, f, "heavy");
    assert_int_equal(metric_wait(f, "hookflow_ingest_in_flight", 1, WAIT_MS), 1);
    long long held = metric(f, "hookflow_ingest_in_flight_bytes");
    assert_true(held > (long long)strlen(job.d.body)); /* the body and its two envelopes */
    delivery extra;
    meta_delivery(&extra, "extra");
    reply r;
    post_meta(f, extra.body, APP_SECRET, &r);
    assert_json_error(&r, 503, "overloaded", "too many bytes of deliveries waiting for Kafka");
    assert_string_equal(r.retry_after, "5");
    reply_free(&r);

    rd_kafka_mock_broker_set_up(f->kafka->mock, 1);
    pthread_join(job.thread, NULL);
    assert_status(&job.r, 200);
    reply_free(&job.r);
    assert_int_equal(metric_wait(f, "hookflow_ingest_in_flight_bytes", 0, WAIT_MS), 0);
    delivery after;
    assert_int_equal(post_fresh(f, APP_SECRET, &after), 200);
    kmsgs m;
    consume(f, 5, QUIET_MS, &m);
    assert_int_equal(m.n, 4);
    assert_false(has_mid(&m, extra.mid[0]));
    kmsgs_free(&m);
}

/* Rejections are logged with their request id and reason, at debug level acceptances too, and
 * no line holds a secret, a signature or anything the log had to redact. */
static void log_lines_carry_request_ids_and_never_a_secret_or_signature(void **state)
{
    fixture *f = *state;
    char path[] = "/tmp/hf-test-ingest-log-XXXXXX";
    f->log_fd = mkstemp(path);
    assert_true(f->log_fd > 0);
    unlink(path);
    hf_log_set_fd(f->log_fd);
    hf_log_init("test_ingest", HF_LOG_DEBUG, HF_LOG_JSON);
    server_start(f);
    delivery d;
    meta_delivery(&d, "logged");
    char wrong_sig[65], right_sig[65];
    pr_hmac_hex("wrong-secret-1234", d.body, strlen(d.body), wrong_sig);
    pr_hmac_hex(APP_SECRET, d.body, strlen(d.body), right_sig);
    reply r;
    post_signed_on(NULL, f->port, META_PATH, d.body, strlen(d.body), "wrong-secret-1234",
                   "X-Request-Id: log-check-rejected", &r);
    assert_status(&r, 401);
    reply_free(&r);
    http(f, "GET", HANDSHAKE "verify-me-not", &r);
    assert_status(&r, 403);
    reply_free(&r);
    post_signed_on(NULL, f->port, META_PATH, d.body, strlen(d.body), APP_SECRET,
                   "X-Request-Id: log-check-accepted", &r);
    assert_status(&r, 200);
    reply_free(&r);
    /* the next server's lines would not belong here */
    ingest_server_free(f->server);
    f->server = NULL;

    size_t len = 0;
    char err[256];
    char fdpath[64];
    snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", f->log_fd);
    char *log = hf_read_file(fdpath, &len, err, sizeof err);
    if (!log)
        fail_msg("log: %s", err);
    assert_non_null(strstr(log, "\"webhook.rejected\""));
    assert_non_null(strstr(log, "\"log-check-rejected\""));
    assert_non_null(strstr(log, "\"bad_signature\""));
    assert_non_null(strstr(log, "\"bad_verify_token\""));
    assert_non_null(strstr(log, "\"webhook.accepted\""));
    assert_non_null(strstr(log, "\"log-check-accepted\""));
    static const char *const never[] = {APP_SECRET, VERIFY_TOKEN, "verify-me-not",
                                        "wrong-secret-1234", "[redacted]"};
    for (size_t i = 0; i < HF_ARRAY_LEN(never); i++)
        if (strstr(log, never[i]))
            fail_msg("the log holds \"%s\"", never[i]);
    assert_null(strstr(log, wrong_sig));
    assert_null(strstr(log, right_sig));
    free(log);
}

#define INGEST_TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    /* Hermetic: no configuration file, no Kafka passthrough from the caller; only error lines. */
    unsetenv("HOOKFLOW_CONFIG_FILE");
    unsetenv("HOOKFLOW_CATALOG_DIR");
    hf_log_init("test_ingest", HF_LOG_ERROR, HF_LOG_TEXT);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        INGEST_TEST(signed_delivery_is_answered_after_both_envelopes_are_in_kafka),
        INGEST_TEST(bad_signature_is_401_and_produces_nothing),
        INGEST_TEST(routing_errors_are_404_and_405_with_json_bodies),
        INGEST_TEST(body_over_the_limit_is_413),
        INGEST_TEST(meta_handshake_echoes_the_challenge_for_the_right_token_only),
        INGEST_TEST(missing_secret_is_503_and_nothing_is_accepted_unsigned),
        INGEST_TEST(reload_secrets_rotates_keys_and_honours_previous),
        INGEST_TEST(failed_reload_keeps_the_old_secrets),
        INGEST_TEST(broker_down_is_503_with_retry_after_and_recovers),
        INGEST_TEST(produce_refused_by_the_broker_is_503_and_not_in_kafka),
        INGEST_TEST(retriable_produce_errors_are_retried_before_answering),
        INGEST_TEST(health_ready_and_metrics_count_what_happened),
        INGEST_TEST(drain_returns_zero_once_in_flight_deliveries_are_answered),
        INGEST_TEST(drain_with_kafka_down_returns_the_unanswered_and_answers_them_503),
        INGEST_TEST(deliveries_beyond_max_in_flight_are_503),
        INGEST_TEST(deliveries_beyond_max_in_flight_bytes_are_503),
        INGEST_TEST(log_lines_carry_request_ids_and_never_a_secret_or_signature),
    };
    int failed = cmocka_run_group_tests(tests, NULL, km_reapers_join);
    curl_global_cleanup();
    return failed;
}
