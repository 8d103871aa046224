/* ingest: the webhook front end: routing, verification through the provider modules, envelopes,
 * and answering only once Kafka has acknowledged every event of a delivery. */
#include "ingest.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "config.h"
#include "crypto.h"
#include "http_server.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "provider.h"
#include "secrets.h"

#define WEBHOOK_PREFIX "/api/integrations/webhooks/"

const hf_cfg_item ingest_config_items[] = {
    HF_CFG_STR("HOOKFLOW_KAFKA_BROKERS", "127.0.0.1:9092", ingest_config, kafka_brokers,
               "Kafka bootstrap servers"),
    HF_CFG_LST("HOOKFLOW_INGEST_LISTEN", "0.0.0.0:8080", ingest_config, listen,
               "address the webhook endpoint listens on"),
    HF_CFG_NUM("HOOKFLOW_INGEST_THREADS", "0", 0, 256, ingest_config, threads,
               "event-loop threads (0 = one per core)"),
    HF_CFG_STR("HOOKFLOW_SECRETS_DIR", "/run/secrets/hookflow", ingest_config, secrets_dir,
               "directory of <provider>/<name> secret files"),
    HF_CFG_STR("HOOKFLOW_TOPIC_PREFIX", "hookflow", ingest_config, topic_prefix,
               "prefix of the Kafka topics"),
    HF_CFG_STR("HOOKFLOW_PUBLIC_BASE_URL", "", ingest_config, public_base_url,
               "URL the platforms call, e.g. https://hooks.example.com (default: http://<Host>)"),
    HF_CFG_CHOICE("HOOKFLOW_LOG_LEVEL", "info",
                  ((const char *const[]){"debug", "info", "warn", "error", NULL}), ingest_config,
                  log_level, "log level"),
    HF_CFG_CHOICE("HOOKFLOW_LOG_FORMAT", "json", ((const char *const[]){"json", "text", NULL}),
                  ingest_config, log_format, "log format"),
    HF_CFG_NUM("HOOKFLOW_INGEST_MAX_BODY_BYTES", "1048576", 1024, 64LL << 20, ingest_config,
               max_body_bytes, "largest request body accepted (413 above)"),
    HF_CFG_NUM("HOOKFLOW_INGEST_MAX_HEADER_BYTES", "16384", 1024, 1 << 20, ingest_config,
               max_header_bytes, "largest request line + headers accepted"),
    HF_CFG_NUM("HOOKFLOW_INGEST_MAX_CONNECTIONS", "10000", 1, 1000000, ingest_config,
               max_connections, "open connections before accepting pauses"),
    HF_CFG_NUM("HOOKFLOW_INGEST_CLIENT_TIMEOUT_MS", "15000", 100, 600000, ingest_config,
               client_timeout_ms, "read/write inactivity timeout for slow or idle clients"),
    HF_CFG_NUM("HOOKFLOW_INGEST_ACK_TIMEOUT_MS", "2500", 50, 60000, ingest_config, ack_timeout_ms,
               "deadline for Kafka to acknowledge a delivery before answering 503"),
    HF_CFG_NUM("HOOKFLOW_INGEST_RETRY_AFTER_S", "5", 1, 3600, ingest_config, retry_after_s,
               "Retry-After seconds sent with 503"),
    HF_CFG_NUM("HOOKFLOW_INGEST_QUEUE_MAX_MESSAGES", "100000", 1, 10000000, ingest_config,
               queue_max_messages, "producer queue bound (503 when full)"),
    HF_CFG_NUM("HOOKFLOW_INGEST_MAX_IN_FLIGHT", "20000", 1, 10000000, ingest_config, max_in_flight,
               "deliveries waiting for Kafka before new ones get 503"),
    HF_CFG_NUM("HOOKFLOW_INGEST_MAX_IN_FLIGHT_BYTES", "268435456", 1048576, 68719476736LL,
               ingest_config, max_in_flight_bytes,
               "bytes of deliveries and their envelopes waiting for Kafka before new ones get "
               "503 (bounds memory while Kafka is slow)"),
    HF_CFG_NUM("HOOKFLOW_INGEST_MESSAGE_TIMEOUT_MS", "30000", 1000, 3600000, ingest_config,
               message_timeout_ms, "how long the producer keeps retrying one message"),
    HF_CFG_DECIMAL("HOOKFLOW_INGEST_LINGER_MS", "0.5", 0, 1000, ingest_config, linger_ms,
                   "producer batching delay in ms (fractions allowed)"),
    HF_CFG_NUM("HOOKFLOW_SHUTDOWN_TIMEOUT_MS", "10000", 0, 600000, ingest_config,
               shutdown_timeout_ms, "how long SIGTERM waits for in-flight deliveries"),
};
const size_t ingest_config_nitems = HF_ARRAY_LEN(ingest_config_items);

static const char *const provider_ids[] = {"xero",    "quickbooks", "hubspot",
                                           "klaviyo", "twilio",     "meta"};
#define NPROVIDERS HF_ARRAY_LEN(provider_ids)

/* Per-provider state fixed at start-up: the topic and the hot-path metrics. */
typedef struct provider_slot {
    const ingest_provider *provider;
    const hf_connector *connector;
    char *topic;
    hf_topic *rkt; /* the producer's handle for topic */
    hf_counter *received;
    hf_counter *accepted;
    hf_counter *events;
    hf_histogram *produce_latency;
} provider_slot;

/* Rejections by provider and reason (both static strings), so that a flood of them (a retry
 * storm while Kafka is down, a sender with the wrong key) costs neither a metrics-registry
 * lookup nor a log line per request: one line a second per provider and reason, telling how
 * many were not logged since the last. Entries are only appended; readers need no lock. */
#define MAX_REJECTION_KINDS 128
typedef struct rejection_kind {
    const char *provider, *reason;
    hf_counter *counter;
    atomic_int_fast64_t logged_ms; /* when the last line was written */
    atomic_int_fast64_t quiet;     /* rejections not logged since */
} rejection_kind;

typedef struct rejections {
    pthread_mutex_t lock; /* for appending */
    atomic_size_t n;
    rejection_kind kinds[MAX_REJECTION_KINDS];
} rejections;

typedef struct finished_queue finished_queue;

struct ingest_server {
    const ingest_config *cfg;
    size_t public_base_len; /* HOOKFLOW_PUBLIC_BASE_URL without trailing slashes */
    hf_catalog *catalog;
    hf_metrics *metrics;
    hf_producer *producer;
    hf_http_server *http;
    provider_slot slots[NPROVIDERS];
    pthread_rwlock_t secrets_lock; /* guards secrets: read per request, written on reload */
    hf_secrets *secrets;
    atomic_int_fast64_t in_flight;
    atomic_int_fast64_t in_flight_bytes; /* bodies + envelopes of those deliveries */
    atomic_bool draining;
    char retry_after[16];
    rejections rejected;
    pthread_mutex_t queues_lock; /* guards queues: one per event-loop thread */
    finished_queue *queues;
};

/* Deliveries whose every event has a report, waiting for their event-loop thread to answer
 * them. The delivery thread appends and wakes the loop once per batch of reports (not once per
 * delivery: each wake-up is a lock on the loop's base and, when it sleeps, a write to it). */
struct finished_queue {
    pthread_mutex_t lock;
    struct pending **v, **spare; /* filled by the delivery thread; swapped by the loop */
    size_t n, cap, spare_cap;
    struct event *wake; /* on the loop's base: answers what is queued */
    struct finished_queue *next;
};

/* A delivery whose events are being produced. Owned by its event-loop thread; the delivery
 * thread only decrements `outstanding`, sets `failed` and queues it on `finished`. */
typedef struct pending {
    ingest_server *server;
    provider_slot *slot;
    struct evhttp_request *req;
    finished_queue *finished;
    struct event *deadline;
    atomic_int outstanding;
    atomic_bool failed;
    bool answered;
    size_t nevents;
    int64_t bytes; /* counted in in_flight_bytes */
    int64_t started_us;
    char *response_body;
    const char *response_type;
    char request_id[40];
} pending;

/* Buffers each event-loop thread reuses from request to request (freed when the thread ends). */
typedef struct scratch {
    hf_buf env, key, url;
} scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
    scratch *sc = p;
    hf_buf_free(&sc->env);
    hf_buf_free(&sc->key);
    hf_buf_free(&sc->url);
    free(sc);
}

static void scratch_init(void)
{
    pthread_key_create(&scratch_key, scratch_free);
}

static scratch *thread_scratch(void)
{
    pthread_once(&scratch_once, scratch_init);
    scratch *sc = pthread_getspecific(scratch_key);
    if (!sc) {
        sc = xcalloc(1, sizeof *sc);
        pthread_setspecific(scratch_key, sc);
    }
    return sc;
}

static hf_counter *reject_counter(ingest_server *s, const char *provider, const char *reason)
{
    char labels[160];
    snprintf(labels, sizeof labels, "provider=\"%s\",reason=\"%s\"", provider, reason);
    return hf_metrics_counter(s->metrics, "hookflow_ingest_deliveries_rejected_total",
                              "Deliveries answered with an error, by reason", labels);
}

static rejection_kind *rejection_find(rejections *r, size_t n, const char *provider,
                                      const char *reason)
{
    for (size_t i = 0; i < n; i++) {
        rejection_kind *k = &r->kinds[i];
        if ((k->reason == reason || strcmp(k->reason, reason) == 0) &&
            (k->provider == provider || strcmp(k->provider, provider) == 0))
            return k;
    }
    return NULL;
}

/* The kind's entry, made on first use; NULL only if the table is full (never with today's
 * reasons). */
static rejection_kind *rejection_kind_of(ingest_server *s, const char *provider, const char *reason)
{
    rejections *r = &s->rejected;
    rejection_kind *k = rejection_find(r, atomic_load(&r->n), provider, reason);
    if (k)
        return k;
    pthread_mutex_lock(&r->lock);
    size_t n = atomic_load(&r->n);
    k = rejection_find(r, n, provider, reason);
    if (!k && n < MAX_REJECTION_KINDS) {
        k = &r->kinds[n];
        k->provider = provider;
        k->reason = reason;
        k->counter = reject_counter(s, provider, reason);
        atomic_init(&k->logged_ms, 0);
        atomic_init(&k->quiet, 0);
        atomic_store(&r->n, n + 1); /* publishes the entry */
    }
    pthread_mutex_unlock(&r->lock);
    return k;
}

/* Counts a rejection; true when it should be logged, with how many went unlogged before it. */
static bool count_reject(ingest_server *s, const char *provider, const char *reason,
                         int64_t *suppressed)
{
    *suppressed = 0;
    rejection_kind *k = rejection_kind_of(s, provider, reason);
    if (!k) {
        hf_counter_add(reject_counter(s, provider, reason), 1);
        return true;
    }
    hf_counter_add(k->counter, 1);
    int64_t now = hf_now_ms(), last = atomic_load(&k->logged_ms);
    if (now - last >= 1000 && atomic_compare_exchange_strong(&k->logged_ms, &last, now)) {
        *suppressed = atomic_exchange(&k->quiet, 0);
        return true;
    }
    atomic_fetch_add(&k->quiet, 1);
    return false;
}

static const char *header_lookup(const ingest_request *r, const char *name)
{
    return evhttp_find_header((struct evkeyvalq *)r->header_ctx, name);
}

/* The server's prepare hook: every answer carries X-Request-Id, the refusals the HTTP server
 * makes itself (431, 505, ...) included; handle() reads it back. */
static void set_request_id(struct evhttp_request *req, void *arg)
{
    (void)arg;
    char out[40];
    const char *given = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    size_t n = given ? strlen(given) : 0;
    bool sane = n > 0 && n < 40;
    for (size_t i = 0; sane && i < n; i++)
        sane = (given[i] >= '0' && given[i] <= '9') || (given[i] >= 'a' && given[i] <= 'z') ||
               (given[i] >= 'A' && given[i] <= 'Z') || given[i] == '-' || given[i] == '_';
    if (sane) {
        memcpy(out, given, n + 1);
    } else {
        /* A random per-thread prefix and a counter: unique, and no RNG call per request. */
        static __thread unsigned char prefix[6];
        static __thread uint64_t counter;
        if (counter == 0)
            hf_random_bytes(prefix, sizeof prefix);
        counter++;
        unsigned char raw[12];
        memcpy(raw, prefix, sizeof prefix);
        for (int i = 0; i < 6; i++)
            raw[6 + i] = (unsigned char)(counter >> (8 * (5 - i)));
        hf_hex_encode(raw, sizeof raw, out);
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Request-Id", out);
}

/* 404 for a path naming no provider: counted, not logged (anyone can probe paths). */
static void reply_unknown_provider(ingest_server *s, struct evhttp_request *req, const char *detail)
{
    int64_t quiet;
    (void)count_reject(s, "unknown", "unknown_provider", &quiet);
    hf_http_reply_error(req, 404, "unknown_provider", detail);
}

/* Xero wants empty bodies on every answer, errors included. */
static bool wants_empty_bodies(const provider_slot *slot)
{
    return strcmp(slot->provider->id, "xero") == 0;
}

static void reply_provider_error(ingest_server *s, struct evhttp_request *req, provider_slot *slot,
                                 int status, const char *reason, const char *detail,
                                 const char *request_id)
{
    int64_t quiet;
    bool log = count_reject(s, slot->provider->id, reason, &quiet);
    if (status == 503)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", s->retry_after);
    if (status == 405)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          slot->provider->accepts_get ? "GET, POST" : "POST");
    if (log) {
        char n[24];
        snprintf(n, sizeof n, "%lld", (long long)quiet);
        hf_log_kv(status >= 500 ? HF_LOG_WARN : HF_LOG_INFO, "webhook.rejected", "request_id",
                  request_id, "provider", slot->provider->id, "reason", reason, "detail", detail,
                  "suppressed", n, NULL);
    }
    if (wants_empty_bodies(slot))
        hf_http_reply(req, status, NULL, NULL, 0);
    else
        hf_http_reply_error(req, status, reason, detail);
}

static void pending_free(pending *p)
{
    event_del(p->deadline);
    free(p->response_body);
    atomic_fetch_sub(&p->server->in_flight, 1);
    atomic_fetch_sub(&p->server->in_flight_bytes, p->bytes);
    free(p);
}

static void answer_unavailable(pending *p, const char *why)
{
    ingest_server *s = p->server;
    p->answered = true;
    reply_provider_error(s, p->req, p->slot, 503, "kafka_unavailable", why, p->request_id);
}

/* Every event of the delivery has a delivery report: answer if the deadline has not. */
static void on_done(pending *p)
{
    if (!p->answered) {
        event_del(p->deadline);
        if (atomic_load(&p->failed)) {
            answer_unavailable(p, "Kafka did not accept every event; retry later");
        } else {
            p->answered = true;
            hf_histogram_observe(p->slot->produce_latency,
                                 (double)(hf_now_us() - p->started_us) / 1e6);
            hf_counter_add(p->slot->accepted, 1);
            hf_counter_add(p->slot->events, p->nevents);
            hf_log_kv(HF_LOG_DEBUG, "webhook.accepted", "request_id", p->request_id, "provider",
                      p->slot->provider->id, NULL);
            const char *body = wants_empty_bodies(p->slot) ? NULL : p->response_body;
            hf_http_reply(p->req, 200, p->response_type, body, body ? strlen(body) : 0);
        }
    }
    pending_free(p);
}

/* The deadline passed first: answer 503 now; the pending lives on until every report is in. */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    pending *p = arg;
    if (!p->answered)
        answer_unavailable(p, "Kafka did not acknowledge in time; retry later");
}

/* On p's event loop: answers every delivery queued since the last time. */
static void answer_finished(evutil_socket_t fd, short what, void *arg)
{
    finished_queue *q = arg;
    pthread_mutex_lock(&q->lock);
    pending **v = q->v;
    size_t n = q->n, cap = q->cap;
    q->v = q->spare;
    q->cap = q->spare_cap;
    q->n = 0;
    q->spare = NULL;
    q->spare_cap = 0;
    pthread_mutex_unlock(&q->lock);
    for (size_t i = 0; i < n; i++)
        on_done(v[i]);
    pthread_mutex_lock(&q->lock);
    q->spare = v;
    q->spare_cap = cap;
    pthread_mutex_unlock(&q->lock);
}

/* Any thread: p has every report; its loop answers it. */
static void queue_finished(pending *p)
{
    finished_queue *q = p->finished;
    pthread_mutex_lock(&q->lock);
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 64;
        q->v = xrealloc(q->v, q->cap * sizeof *q->v);
    }
    q->v[q->n++] = p;
    bool wake = q->n == 1; /* else a wake-up is already due */
    pthread_mutex_unlock(&q->lock);
    if (wake)
        event_active(q->wake, 0, 0);
}

/* This event-loop thread's queue of finished deliveries, made on first use. */
static finished_queue *finished_queue_of(ingest_server *s, struct event_base *base)
{
    static __thread finished_queue *cached;
    static __thread const ingest_server *cached_server;
    if (cached && cached_server == s)
        return cached;
    finished_queue *q = xcalloc(1, sizeof *q);
    pthread_mutex_init(&q->lock, NULL);
    q->wake = event_new(base, -1, 0, answer_finished, q);
    pthread_mutex_lock(&s->queues_lock);
    q->next = s->queues;
    s->queues = q;
    pthread_mutex_unlock(&s->queues_lock);
    cached = q;
    cached_server = s;
    return q;
}

/* Delivery thread: one report per message. */
static void on_delivery(void *opaque, const char *err)
{
    pending *p = opaque;
    if (err) {
        atomic_store(&p->failed, true);
        hf_log_kv(HF_LOG_WARN, "kafka.delivery_failed", "request_id", p->request_id, "error", err,
                  NULL);
    }
    if (atomic_fetch_sub(&p->outstanding, 1) == 1)
        queue_finished(p);
}

static void append_envelope(hf_buf *b, const provider_slot *slot, const ingest_event *e,
                            const char *received_at, const char *request_id)
{
    const char *event =
        slot->connector ? hf_connector_event_for_native(slot->connector, e->native_type) : NULL;
    hf_buf_puts(b, "{\"id\":");
    hf_json_append_cstr(b, e->id);
    hf_buf_puts(b, ",\"provider\":");
    hf_json_append_cstr(b, slot->provider->id);
    hf_buf_puts(b, ",\"event\":");
    hf_json_append_cstr(b, event ? event : e->native_type);
    hf_buf_puts(b, ",\"native_type\":");
    hf_json_append_cstr(b, e->native_type);
    hf_buf_puts(b, ",\"account\":");
    hf_json_append_cstr(b, e->account);
    hf_buf_puts(b, ",\"resource\":");
    if (e->resource)
        hf_json_append_cstr(b, e->resource);
    else
        hf_buf_puts(b, "null");
    hf_buf_puts(b, ",\"occurred_at\":");
    hf_json_append_cstr(b, e->occurred_at ? e->occurred_at : received_at);
    hf_buf_puts(b, ",\"received_at\":");
    hf_json_append_cstr(b, received_at);
    hf_buf_puts(b, ",\"request_id\":");
    hf_json_append_cstr(b, request_id);
    hf_buf_puts(b, ",\"payload\":");
    hf_buf_puts(b, e->payload);
    hf_buf_puts(b, "}");
}

/* A pending and its deadline event in one allocation (the event follows the struct). */
static pending *pending_new(struct event_base *base)
{
    size_t head = (sizeof(pending) + 15) & ~(size_t)15;
    pending *p = xcalloc(1, head + event_get_struct_event_size());
    p->deadline = (struct event *)((char *)p + head);
    evtimer_assign(p->deadline, base, on_deadline, p);
    return p;
}

/* Every delivery waits the same time: a libevent common timeout keeps them in a queue rather
 * than the timer heap. One per event base, found again through this thread's cache. */
static const struct timeval *ack_timeout(const ingest_server *s, struct event_base *base)
{
    static __thread struct event_base *cached_base;
    static __thread const struct timeval *cached_tv;
    if (base != cached_base) {
        struct timeval tv = {s->cfg->ack_timeout_ms / 1000, (s->cfg->ack_timeout_ms % 1000) * 1000};
        cached_tv = event_base_init_common_timeout(base, &tv);
        cached_base = base;
    }
    return cached_tv;
}

/* Produces every event; the reply comes from on_done or on_deadline. Takes res's events. */
static void produce_delivery(ingest_server *s, struct evhttp_request *req, provider_slot *slot,
                             ingest_result *res, size_t body_len, const char *request_id)
{
    struct event_base *base = hf_http_request_base(req);
    pending *p = pending_new(base);
    p->finished = finished_queue_of(s, base);
    p->server = s;
    p->slot = slot;
    p->req = req;
    p->nevents = res->nevents;
    p->started_us = hf_now_us();
    p->response_body = res->response_body;
    p->response_type = res->response_type;
    res->response_body = NULL;
    size_t idlen = strnlen(request_id, sizeof p->request_id - 1);
    memcpy(p->request_id, request_id, idlen);
    p->request_id[idlen] = '\0';
    /* One extra count stands for this function, so no report can finish p while it sends. */
    atomic_store(&p->outstanding, (int)res->nevents + 1);
    atomic_fetch_add(&s->in_flight, 1);
    p->bytes = (int64_t)body_len; /* held by evhttp until the answer */
    evtimer_add(p->deadline, ack_timeout(s, base));

    char received_at[40];
    hf_format_rfc3339(hf_wall_ms(), received_at, sizeof received_at);
    /* Per-thread buffers, kept between requests: librdkafka copies what it is given. */
    scratch *sc = thread_scratch();
    hf_buf *env = &sc->env, *key = &sc->key;
    bool refused = false; /* by the local queue (p->failed may also come from a report) */
    for (size_t i = 0; i < res->nevents; i++) {
        const ingest_event *e = &res->events[i];
        hf_buf_reset(env);
        hf_buf_reset(key);
        append_envelope(env, slot, e, received_at, request_id);
        p->bytes += (int64_t)env->len; /* librdkafka's copy, until its report */
        hf_buf_puts(key, slot->provider->id);
        hf_buf_putc(key, ':');
        hf_buf_puts(key, e->account);
        char err[256];
        if (hf_producer_send(s->producer, slot->rkt, key->data, key->len, env->data, env->len, p,
                             err, sizeof err) != 0) {
            /* Nothing after this event is sent: the delivery fails as a whole and the platform
             * retries it; the events already queued are deduplicated downstream by id. */
            atomic_store(&p->failed, true);
            refused = true;
            hf_log_kv(HF_LOG_WARN, "kafka.queue_refused", "request_id", request_id, "error", err,
                      NULL);
            atomic_fetch_sub(&p->outstanding, (int)(res->nevents - i));
            break;
        }
    }
    if (env->cap > (64u << 10)) /* a huge delivery does not pin its memory */
        hf_buf_free(env);
    if (refused) {
        /* The answer is decided: 503 now, not at the deadline (the events already queued are
         * reported on their own, and p lives on until they are). */
        event_del(p->deadline);
        answer_unavailable(p, "the local queue for Kafka is full; retry later");
    }
    atomic_fetch_add(&s->in_flight_bytes, p->bytes); /* before p can be freed */
    if (atomic_fetch_sub(&p->outstanding, 1) == 1)
        queue_finished(p);
}

static void handle_webhook(ingest_server *s, struct evhttp_request *req, const char *provider_id,
                           const char *request_id)
{
    provider_slot *slot = NULL;
    for (size_t i = 0; i < NPROVIDERS; i++)
        if (s->slots[i].provider && strcmp(s->slots[i].provider->id, provider_id) == 0)
            slot = &s->slots[i];
    if (!slot) {
        reply_unknown_provider(s, req,
                               "no such provider; expected one of xero, quickbooks, hubspot, "
                               "klaviyo, twilio, meta");
        return;
    }
    hf_counter_add(slot->received, 1);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *method = cmd == EVHTTP_REQ_POST ? "POST" : cmd == EVHTTP_REQ_GET ? "GET" : NULL;
    if (!method || (cmd == EVHTTP_REQ_GET && !slot->provider->accepts_get)) {
        reply_provider_error(s, req, slot, 405, "method_not_allowed",
                             "use POST for webhook deliveries", request_id);
        return;
    }
    if (atomic_load(&s->draining)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        reply_provider_error(s, req, slot, 503, "shutting_down", "this instance is shutting down",
                             request_id);
        return;
    }
    if (atomic_load(&s->in_flight) >= s->cfg->max_in_flight) {
        reply_provider_error(s, req, slot, 503, "overloaded",
                             "too many deliveries waiting for Kafka", request_id);
        return;
    }

    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t body_len = evbuffer_get_length(in);
    if (body_len > (size_t)s->cfg->max_body_bytes) {
        char detail[96];
        snprintf(detail, sizeof detail, "the body is over the %lld-byte limit",
                 s->cfg->max_body_bytes);
        reply_provider_error(s, req, slot, 413, "payload_too_large", detail, request_id);
        return;
    }
    /* Memory: a delivery alone is always let through, so the limit never refuses everything. */
    int64_t held = atomic_load(&s->in_flight_bytes);
    if (held > 0 && held + (int64_t)body_len > s->cfg->max_in_flight_bytes) {
        reply_provider_error(s, req, slot, 503, "overloaded",
                             "too many bytes of deliveries waiting for Kafka", request_id);
        return;
    }
    const unsigned char *body = body_len ? evbuffer_pullup(in, -1) : (const unsigned char *)"";
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *raw_uri = evhttp_request_get_uri(req);
    hf_buf *public_url = &thread_scratch()->url;
    hf_buf_reset(public_url);
    if (s->cfg->public_base_url[0]) {
        hf_buf_append(public_url, s->cfg->public_base_url, s->public_base_len);
    } else {
        /* The Host header as sent: evhttp_request_get_host() drops its port, and a signature
         * over the URL covers the port the platform called. */
        const char *host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
        hf_buf_puts(public_url, "http://");
        hf_buf_puts(public_url, host ? host : "localhost");
    }
    hf_buf_puts(public_url, raw_uri);

    ingest_request r = {
        .method = method,
        .path = evhttp_uri_get_path(uri),
        .query = evhttp_uri_get_query(uri),
        .public_url = public_url->data,
        .body = body,
        .body_len = body_len,
        .header = header_lookup,
        .header_ctx = evhttp_request_get_input_headers(req),
        .now_ms = hf_wall_ms(),
    };
    ingest_result res = {0};
    pthread_rwlock_rdlock(&s->secrets_lock);
    r.secrets = s->secrets;
    slot->provider->handle(&r, &res);
    pthread_rwlock_unlock(&s->secrets_lock);

    if (res.status < 200 || res.status > 299) {
        reply_provider_error(s, req, slot, res.status ? res.status : 500,
                             res.reason ? res.reason : "error", res.detail, request_id);
    } else if (res.nevents == 0) {
        /* Handshakes (Meta subscribe, Xero intent-to-receive) and empty batches. */
        hf_counter_add(slot->accepted, 1);
        hf_log_kv(HF_LOG_INFO, "webhook.handshake", "request_id", request_id, "provider",
                  slot->provider->id, "reason", res.reason ? res.reason : "accepted", NULL);
        hf_http_reply(req, res.status, res.response_type, res.response_body,
                      res.response_body ? strlen(res.response_body) : 0);
    } else {
        produce_delivery(s, req, slot, &res, body_len, request_id);
    }
    ingest_result_free(&res);
}

static void reply_text(struct evhttp_request *req, int status, const char *text)
{
    hf_http_reply(req, status, "text/plain; version=0.0.4", text, strlen(text));
}

static void handle(struct evhttp_request *req, void *arg)
{
    ingest_server *s = arg;
    const char *request_id =
        evhttp_find_header(evhttp_request_get_output_headers(req), "X-Request-Id");
    if (!request_id)
        request_id = "";
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path)
        path = "/";
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (strncmp(path, WEBHOOK_PREFIX, strlen(WEBHOOK_PREFIX)) == 0) {
        const char *provider = path + strlen(WEBHOOK_PREFIX);
        char id[32];
        size_t n = strcspn(provider, "/");
        if (n == 0 || n >= sizeof id || (provider[n] == '/' && provider[n + 1] != '\0')) {
            reply_unknown_provider(s, req, "no such webhook endpoint");
            return;
        }
        memcpy(id, provider, n);
        id[n] = '\0';
        handle_webhook(s, req, id, request_id);
        return;
    }
    bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
    if (strcmp(path, "/healthz") == 0 && get) {
        static const char ok[] = "{\"status\":\"ok\"}";
        hf_http_reply_json(req, 200, ok, sizeof ok - 1);
    } else if (strcmp(path, "/readyz") == 0 && get) {
        if (atomic_load(&s->draining)) {
            hf_http_reply_error(req, 503, "shutting_down", "this instance is shutting down");
        } else if (!hf_producer_ready(s->producer)) {
            hf_http_reply_error(req, 503, "kafka_unreachable", "no Kafka broker answers");
        } else {
            static const char ok[] = "{\"status\":\"ready\"}";
            hf_http_reply_json(req, 200, ok, sizeof ok - 1);
        }
    } else if (strcmp(path, "/metrics") == 0 && get) {
        hf_buf b = {0};
        hf_metrics_render(s->metrics, &b);
        reply_text(req, 200, b.data ? b.data : "");
        hf_buf_free(&b);
    } else if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0 ||
               strcmp(path, "/metrics") == 0) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
        hf_http_reply_error(req, 405, "method_not_allowed", "use GET");
    } else {
        hf_http_reply_error(req, 404, "not_found", "no such endpoint");
    }
}

static int64_t gauge_in_flight_bytes(void *arg)
{
    return atomic_load(&((ingest_server *)arg)->in_flight_bytes);
}

static int64_t gauge_in_flight(void *arg)
{
    return atomic_load(&((ingest_server *)arg)->in_flight);
}

/* The producer gauges, like every use of the producer from a handler, look at draining first
 * (see ingest_server_free): at shutdown the producer may be gone. */
static int64_t gauge_queue(void *arg)
{
    ingest_server *s = arg;
    return atomic_load(&s->draining) ? 0 : hf_producer_queue_len(s->producer);
}

static int64_t gauge_connections(void *arg)
{
    ingest_server *s = arg;
    return s->http ? hf_http_server_connections(s->http) : 0;
}

static int64_t gauge_ready(void *arg)
{
    ingest_server *s = arg;
    return !atomic_load(&s->draining) && hf_producer_ready(s->producer) ? 1 : 0;
}

static void register_metrics(ingest_server *s)
{
    static const double latency_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                            0.1,   0.25,   0.5,   1,    2.5,   5};
    for (size_t i = 0; i < NPROVIDERS; i++) {
        provider_slot *slot = &s->slots[i];
        char labels[64];
        snprintf(labels, sizeof labels, "provider=\"%s\"", provider_ids[i]);
        slot->received = hf_metrics_counter(s->metrics, "hookflow_ingest_deliveries_received_total",
                                            "Webhook deliveries received", labels);
        slot->accepted =
            hf_metrics_counter(s->metrics, "hookflow_ingest_deliveries_accepted_total",
                               "Deliveries answered 2xx (every event in Kafka)", labels);
        slot->events = hf_metrics_counter(s->metrics, "hookflow_ingest_events_total",
                                          "Events acknowledged by Kafka", labels);
        slot->produce_latency = hf_metrics_histogram(
            s->metrics, "hookflow_ingest_produce_latency_seconds",
            "Time from producing a delivery's first event to Kafka acknowledging its last", labels,
            latency_bounds, HF_ARRAY_LEN(latency_bounds));
    }
    hf_metrics_gauge_fn(s->metrics, "hookflow_ingest_in_flight",
                        "Deliveries waiting for Kafka acknowledgement", NULL, gauge_in_flight, s);
    hf_metrics_gauge_fn(s->metrics, "hookflow_ingest_in_flight_bytes",
                        "Bytes of deliveries and envelopes waiting for Kafka acknowledgement", NULL,
                        gauge_in_flight_bytes, s);
    hf_metrics_gauge_fn(s->metrics, "hookflow_ingest_kafka_queue_depth",
                        "Messages in the producer queue", NULL, gauge_queue, s);
    hf_metrics_gauge_fn(s->metrics, "hookflow_ingest_connections", "Open client connections", NULL,
                        gauge_connections, s);
    hf_metrics_gauge_fn(s->metrics, "hookflow_ingest_kafka_ready",
                        "1 when a Kafka broker answered recently", NULL, gauge_ready, s);
}

ingest_server *ingest_server_new(const ingest_config *cfg, char *err, size_t errlen)
{
    const char *base = cfg->public_base_url;
    if (base[0] && strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
        hf_err(err, errlen,
               "HOOKFLOW_PUBLIC_BASE_URL must be the http:// or https:// address the platforms "
               "call (e.g. https://hooks.example.com)");
        return NULL;
    }
    ingest_server *s = xcalloc(1, sizeof *s);
    s->cfg = cfg;
    /* "https://hooks.example.com/" as often written: the request's path brings its own slash. */
    s->public_base_len = strlen(base);
    while (s->public_base_len > 0 && base[s->public_base_len - 1] == '/')
        s->public_base_len--;
    pthread_rwlock_init(&s->secrets_lock, NULL);
    pthread_mutex_init(&s->rejected.lock, NULL);
    pthread_mutex_init(&s->queues_lock, NULL);
    snprintf(s->retry_after, sizeof s->retry_after, "%lld", cfg->retry_after_s);
    char cerr[512];
    s->catalog = hf_catalog_load(hf_catalog_default_dir(), cerr, sizeof cerr);
    if (!s->catalog) {
        hf_err(err, errlen, "catalog: %s", cerr);
        goto fail;
    }
    s->secrets = hf_secrets_load(cfg->secrets_dir, err, errlen);
    if (!s->secrets)
        goto fail;
    for (size_t i = 0; i < NPROVIDERS; i++) {
        provider_slot *slot = &s->slots[i];
        slot->provider = ingest_provider_find(provider_ids[i]);
        slot->connector = hf_catalog_find(s->catalog, provider_ids[i]);
        if (!slot->provider || !slot->connector) {
            hf_err(err, errlen, "provider %s is missing from the %s", provider_ids[i],
                   slot->provider ? "catalog" : "build");
            goto fail;
        }
        slot->topic =
            xasprintf("%s.webhooks.%s", cfg->topic_prefix, hf_connector_category(slot->connector));
    }
    s->metrics = hf_metrics_new();
    register_metrics(s);
    /* The port first: a conflict fails start-up before anything connects anywhere. */
    long threads = cfg->threads > 0 ? (long)cfg->threads : sysconf(_SC_NPROCESSORS_ONLN);
    hf_http_options hopts = {
        .listen = cfg->listen,
        .threads = threads > 0 ? (int)threads : 1,
        /* Bodies up to twice the limit are read so the limit itself is answered in JSON (see
         * handle_webhook); past that libevent refuses them before reading them. */
        .max_body = (size_t)cfg->max_body_bytes * 2,
        .max_headers = (size_t)cfg->max_header_bytes,
        .timeout_ms = (int)cfg->client_timeout_ms,
        .max_connections = (int)cfg->max_connections,
        .prepare = set_request_id,
    };
    s->http = hf_http_server_new(&hopts, handle, s, err, errlen);
    if (!s->http)
        goto fail;
    hf_producer_options popts = {
        .brokers = cfg->kafka_brokers,
        .message_timeout_ms = cfg->message_timeout_ms,
        .queue_max_messages = cfg->queue_max_messages,
        .linger_ms = cfg->linger_ms,
        .client_id = "hookflow-ingest",
    };
    s->producer = hf_producer_new(&popts, on_delivery, err, errlen);
    if (!s->producer)
        goto fail;
    for (size_t i = 0; i < NPROVIDERS; i++)
        s->slots[i].rkt = hf_producer_topic(s->producer, s->slots[i].topic);
    return s;
fail:
    ingest_server_free(s);
    return NULL;
}

int ingest_server_port(const ingest_server *s)
{
    return hf_http_server_port(s->http);
}

void ingest_server_start(ingest_server *s)
{
    hf_http_server_start(s->http);
}

int ingest_server_reload_secrets(ingest_server *s, char *err, size_t errlen)
{
    hf_secrets *fresh = hf_secrets_load(s->cfg->secrets_dir, err, errlen);
    if (!fresh)
        return -1;
    pthread_rwlock_wrlock(&s->secrets_lock);
    hf_secrets *old = s->secrets;
    s->secrets = fresh;
    pthread_rwlock_unlock(&s->secrets_lock);
    hf_secrets_free(old);
    return 0;
}

int ingest_server_drain(ingest_server *s, int64_t timeout_ms)
{
    atomic_store(&s->draining, true);
    hf_http_server_stop_accepting(s->http);
    int64_t until = hf_now_ms() + timeout_ms;
    while (atomic_load(&s->in_flight) > 0 && hf_now_ms() < until)
        usleep(10 * 1000);
    int64_t left = atomic_load(&s->in_flight);
    if (left > 0) {
        /* Give up on what Kafka has not taken: those deliveries are answered 503 (the platform
         * retries them) while the loops still run. */
        hf_producer_purge(s->producer);
        until = hf_now_ms() + 2000;
        while (atomic_load(&s->in_flight) > 0 && hf_now_ms() < until)
            usleep(10 * 1000);
    }
    hf_producer_flush(s->producer, 5000);
    return (int)left;
}

void ingest_server_free(ingest_server *s)
{
    if (!s)
        return;
    /* The producer goes first, while the loops still run: its last delivery reports (flushed or
     * purged) activate events on the loops' bases and answer their requests there. Freeing the
     * loops first would leave a late report activating an event of a freed base. Requests
     * still arriving meanwhile are refused without producing (draining). */
    atomic_store(&s->draining, true);
    /* A handler that read draining before it was set may still be producing: once every loop
     * has finished what it was running, the handlers that follow see draining. */
    if (s->http)
        hf_http_server_sync(s->http);
    hf_producer_free(s->producer);
    /* The queues' events go before their bases (event_free waits for a wake-up running on a
     * loop). What is still queued then could only be answered by a loop that is stopping: its
     * connection closes with the server. */
    while (s->queues) {
        finished_queue *q = s->queues;
        s->queues = q->next;
        event_free(q->wake);
        for (size_t i = 0; i < q->n; i++)
            pending_free(q->v[i]);
        free(q->v);
        free(q->spare);
        pthread_mutex_destroy(&q->lock);
        free(q);
    }
    hf_http_server_free(s->http);
    for (size_t i = 0; i < NPROVIDERS; i++)
        free(s->slots[i].topic);
    hf_metrics_free(s->metrics);
    hf_secrets_free(s->secrets);
    hf_catalog_free(s->catalog);
    pthread_rwlock_destroy(&s->secrets_lock);
    pthread_mutex_destroy(&s->rejected.lock);
    pthread_mutex_destroy(&s->queues_lock);
    free(s);
}
