/* Unit tests for common/kafka: delivery reports, readiness, broker refusals, purge, the
 * HOOKFLOW_KAFKA_* passthrough, topic handles and shutdown, against librdkafka's mock cluster. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kafka.h"
#include "kafka_mock.h"
#include "log.h"
#include "util.h"

/* Kafka protocol API keys (rdkafka_protocol.h is not installed). */
enum { API_PRODUCE = 0, API_INIT_PRODUCER_ID = 22 };

#define TOPIC_A "hf-test-a"
#define TOPIC_B "hf-test-b"
#define NOWHERE "127.0.0.1:1" /* nothing listens there: connections are refused at once */
#define WAIT_MS 5000

/* What every delivery report of one test adds up to; on_delivery runs on the producer's thread. */
typedef struct tally {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int ok, failed;
} tally;

/* The opaque of one message: its own reports, guarded by t->lock. */
typedef struct report {
    tally *t;
    int ok, failed;
    char err[128]; /* the first failure's text */
} report;

static int cluster_setup(void **state)
{
    static const char *const topics[] = {TOPIC_A, TOPIC_B};
    char err[256];
    *state = km_cluster_new(topics, HF_ARRAY_LEN(topics), err, sizeof err);
    return *state ? 0 : -1;
}

static int cluster_teardown(void **state)
{
    km_cluster_destroy_later(*state);
    return 0;
}

static void tally_init(tally *t)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
}

static void tally_destroy(tally *t)
{
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cond);
}

static void tally_read(tally *t, int *ok, int *failed)
{
    pthread_mutex_lock(&t->lock);
    *ok = t->ok;
    *failed = t->failed;
    pthread_mutex_unlock(&t->lock);
}

/* Waits up to timeout_ms until t has counted n reports; returns how many it counted. */
static int tally_wait(tally *t, int n, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&t->lock);
    while (t->ok + t->failed < n)
        if (pthread_cond_timedwait(&t->cond, &t->lock, &until) == ETIMEDOUT)
            break;
    int seen = t->ok + t->failed;
    pthread_mutex_unlock(&t->lock);
    return seen;
}

static void on_delivery(void *opaque, const char *err)
{
    report *r = opaque;
    pthread_mutex_lock(&r->t->lock);
    if (err) {
        if (r->ok + r->failed == 0)
            snprintf(r->err, sizeof r->err, "%s", err);
        r->failed++;
        r->t->failed++;
    } else {
        r->ok++;
        r->t->ok++;
    }
    pthread_cond_broadcast(&r->t->cond);
    pthread_mutex_unlock(&r->t->lock);
}

/* Reads r's counts under its tally's lock. */
static void report_read(report *r, int *ok, int *failed, char *err, size_t errlen)
{
    pthread_mutex_lock(&r->t->lock);
    *ok = r->ok;
    *failed = r->failed;
    if (err)
        snprintf(err, errlen, "%s", r->err);
    pthread_mutex_unlock(&r->t->lock);
}

/* Polls hf_producer_ready until it equals want or timeout_ms passes; returns the last value. */
static bool ready_wait(hf_producer *p, bool want, int timeout_ms)
{
    int64_t until = hf_now_ms() + timeout_ms;
    bool ready = hf_producer_ready(p);
    while (ready != want && hf_now_ms() < until) {
        usleep(20 * 1000);
        ready = hf_producer_ready(p);
    }
    return ready;
}

/* Polls hf_producer_queue_len until it equals want or timeout_ms passes; returns the last value.
 * (The count includes error events the delivery thread has not served yet, so a producer whose
 * broker is down may show a few more for a moment.) */
static int64_t queue_len_wait(hf_producer *p, int64_t want, int timeout_ms)
{
    int64_t until = hf_now_ms() + timeout_ms;
    int64_t len = hf_producer_queue_len(p);
    while (len != want && hf_now_ms() < until) {
        usleep(10 * 1000);
        len = hf_producer_queue_len(p);
    }
    return len;
}

static hf_producer_options options(const char *brokers)
{
    return (hf_producer_options){
        .brokers = brokers,
        .message_timeout_ms = 10000,
        .queue_max_messages = 10000,
        .linger_ms = 0.5,
        .client_id = "test_kafka",
    };
}

static hf_producer *producer_new(const hf_producer_options *opts)
{
    char err[512] = "";
    hf_producer *p = hf_producer_new(opts, on_delivery, err, sizeof err);
    if (!p)
        fail_msg("hf_producer_new: %s", err);
    return p;
}

static void send_one(hf_producer *p, hf_topic *topic, report *r, const char *value)
{
    char err[256] = "";
    int rc = hf_producer_send(p, topic, "key", 3, value, strlen(value), r, err, sizeof err);
    if (rc != 0)
        fail_msg("hf_producer_send: rc %d: %s", rc, err);
}

/* A message's key and value copied into the caller's buffers. */
typedef struct key_value {
    char *key, *value;
    size_t keylen, valuelen;
} key_value;

static void copy_key_value(const rd_kafka_message_t *m, void *arg)
{
    key_value *kv = arg;
    snprintf(kv->key, kv->keylen, "%.*s", (int)m->key_len, (const char *)m->key);
    snprintf(kv->value, kv->valuelen, "%.*s", (int)m->len, (const char *)m->payload);
}

/* Reads the message at offset 0 of partition 0 of topic from the mock cluster (a plain assigned
 * consumer, no group). Returns false when none arrives in time. */
static bool fetch_first(const km_cluster *c, const char *topic, char *key, size_t keylen,
                        char *value, size_t valuelen)
{
    key_value kv = {key, value, keylen, valuelen};
    rd_kafka_t *rk = km_consumer_new(c, "test_kafka", NULL);
    bool found = km_consume(rk, topic, 1, WAIT_MS, copy_key_value, &kv) == 1;
    km_consumer_free(rk);
    return found;
}

static void one_message_gets_exactly_one_successful_report(void **state)
{
    km_cluster *c = *state;
    tally t;
    tally_init(&t);
    hf_producer_options o = options(c->bootstraps);
    hf_producer *p = producer_new(&o);
    hf_topic *topic = hf_producer_topic(p, TOPIC_A);
    assert_non_null(topic);
    report r = {.t = &t};
    send_one(p, topic, &r, "hello");
    assert_int_equal(tally_wait(&t, 1, WAIT_MS), 1);
    assert_int_equal(hf_producer_flush(p, WAIT_MS), 0);
    assert_int_equal(hf_producer_queue_len(p), 0);
    hf_producer_free(p);
    int ok, failed;
    char err[128];
    report_read(&r, &ok, &failed, err, sizeof err);
    assert_int_equal(ok, 1);
    assert_int_equal(failed, 0);
    assert_string_equal(err, "");
    tally_read(&t, &ok, &failed);
    assert_int_equal(ok, 1);
    assert_int_equal(failed, 0);
    tally_destroy(&t);
}

static void many_messages_each_get_exactly_one_report(void **state)
{
    km_cluster *c = *state;
    enum { N = 500 };
    tally t;
    tally_init(&t);
    report *r = calloc(N, sizeof *r);
    assert_non_null(r);
    hf_producer_options o = options(c->bootstraps);
    hf_producer *p = producer_new(&o);
    hf_topic *topic = hf_producer_topic(p, TOPIC_A);
    for (int i = 0; i < N; i++) {
        char value[32];
        snprintf(value, sizeof value, "message %d", i);
        r[i].t = &t;
        send_one(p, topic, &r[i], value);
    }
    assert_int_equal(hf_producer_flush(p, 10000), 0);
    assert_int_equal(hf_producer_queue_len(p), 0);
    /* flush returned 0: every report has been served, none is still on its way */
    int ok, failed;
    tally_read(&t, &ok, &failed);
    assert_int_equal(ok, N);
    assert_int_equal(failed, 0);
    hf_producer_free(p);
    for (int i = 0; i < N; i++) {
        report_read(&r[i], &ok, &failed, NULL, 0);
        if (ok != 1 || failed != 0)
            fail_msg("message %d: %d successes, %d failures", i, ok, failed);
    }
    tally_read(&t, &ok, &failed);
    assert_int_equal(ok + failed, N);
    free(r);
    tally_destroy(&t);
}

/* The key and value are copied at send time: changing the caller's buffer afterwards does not
 * change what reaches Kafka. */
static void sent_key_and_value_reach_the_topic_as_they_were_at_send_time(void **state)
{
    km_cluster *c = *state;
    tally t;
    tally_init(&t);
    hf_producer_options o = options(c->bootstraps);
    hf_producer *p = producer_new(&o);
    hf_topic *topic = hf_producer_topic(p, TOPIC_A);
    char key[] = "account-42";
    char value[] = "{\"event\":\"invoice.paid\"}";
    report r = {.t = &t};
    char err[256] = "";
    int rc =
        hf_producer_send(p, topic, key, strlen(key), value, strlen(value), &r, err, sizeof err);
    assert_int_equal(rc, 0);
    memset(key, 'X', strlen(key));
    memset(value, 'X', strlen(value));
    assert_int_equal(hf_producer_flush(p, WAIT_MS), 0);
    hf_producer_free(p);
    int ok, failed;
    report_read(&r, &ok, &failed, NULL, 0);
    assert_int_equal(ok, 1);
    char got_key[64] = "", got_value[128] = "";
    assert_true(fetch_first(c, TOPIC_A, got_key, sizeof got_key, got_value, sizeof got_value));
    assert_string_equal(got_key, "account-42");
    assert_string_equal(got_value, "{\"event\":\"invoice.paid\"}");
    tally_destroy(&t);
}

static void each_topic_handle_delivers_to_its_own_topic(void **state)
{
    km_cluster *c = *state;
    tally t;
    tally_init(&t);
    hf_producer_options o = options(c->bootstraps);
    hf_producer *p = producer_new(&o);
    hf_topic *a = hf_producer_topic(p, TOPIC_A);
    hf_topic *b = hf_producer_topic(p, TOPIC_B);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    report ra = {.t = &t}, rb = {.t = &t};
    send_one(p, b, &rb, "for b");
    send_one(p, a, &ra, "for a");
    assert_int_equal(hf_producer_flush(p, WAIT_MS), 0);
    hf_producer_free(p);
    int ok, failed;
    report_read(&ra, &ok, &failed, NULL, 0);
    assert_int_equal(ok, 1);
    assert_int_equal(failed, 0);
    report_read(&rb, &ok, &failed, NULL, 0);
    assert_int_equal(ok, 1);
    assert_int_equal(failed, 0);
    char key[64], value[64];
    assert_true(fetch_first(c, TOPIC_A, key, sizeof key, value, sizeof value));
    assert_string_equal(value, "for a");
    assert_true(fetch_first(c, TOPIC_B, key, sizeof key, value, sizeof value));
    assert_string_equal(value, "for b");
    tally_destroy(&t);
}

static void ready_becomes_true_against_a_running_cluster(void **state)
{
    km_cluster *c = *state;
    hf_producer_options o = options(c->bootstraps);
    hf_producer *p = producer_new(&o);
    bool ready = ready_wait(p, true, WAIT_MS);
    hf_producer_free(p);
    assert_true(ready);
}

static void ready_follows_the_broker_going_down_and_coming_back(void **state)
{
    km_cluster *c = *state;
    /* Reconnect backoff grows to 10 s by default; cap it so the way back is quick. */
    setenv("HOOKFLOW_KAFKA_RECONNECT_BACKOFF_MAX_MS", "200", 1);
    hf_producer_options o = options(c->bootstraps);
    hf_producer *p = producer_new(&o);
    unsetenv("HOOKFLOW_KAFKA_RECONNECT_BACKOFF_MAX_MS");
    bool up = ready_wait(p, true, WAIT_MS);
    rd_kafka_mock_broker_set_down(c->mock, 1);
    bool down = !ready_wait(p, false, WAIT_MS);
    rd_kafka_mock_broker_set_up(c->mock, 1);
    bool back = ready_wait(p, true, WAIT_MS);
    hf_producer_free(p);
    assert_true(up);
    assert_true(down);
    assert_true(back);
}

static void produce_refused_by_the_broker_reports_a_failure(void **state)
{
    km_cluster *c = *state;
    tally t;
    tally_init(&t);
    hf_producer_options o = options(c->bootstraps);
    hf_producer *p = producer_new(&o);
    hf_topic *topic = hf_producer_topic(p, TOPIC_A);
    rd_kafka_mock_push_request_errors(c->mock, API_PRODUCE, 1,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    report refused = {.t = &t};
    send_one(p, topic, &refused, "refused");
    assert_int_equal(tally_wait(&t, 1, WAIT_MS), 1);
    int ok, failed;
    char err[128];
    report_read(&refused, &ok, &failed, err, sizeof err);
    assert_int_equal(ok, 0);
    assert_int_equal(failed, 1);
    assert_non_null(strstr(err, "authorization"));
    /* The producer carries on. (librdkafka may refuse further sends to the refused topic at
     * once until its next metadata refresh; that is hf_producer_send's -1, not checked here.) */
    report later = {.t = &t};
    send_one(p, hf_producer_topic(p, TOPIC_B), &later, "later");
    assert_int_equal(hf_producer_flush(p, WAIT_MS), 0);
    hf_producer_free(p);
    report_read(&refused, &ok, &failed, NULL, 0);
    assert_int_equal(ok, 0);
    assert_int_equal(failed, 1);
    report_read(&later, &ok, &failed, NULL, 0);
    assert_int_equal(ok, 1);
    assert_int_equal(failed, 0);
    tally_destroy(&t);
}

static void undelivered_message_fails_after_message_timeout(void **state)
{
    km_cluster *c = *state;
    tally t;
    tally_init(&t);
    rd_kafka_mock_broker_set_down(c->mock, 1);
    hf_producer_options o = options(c->bootstraps);
    o.message_timeout_ms = 500;
    hf_producer *p = producer_new(&o);
    hf_topic *topic = hf_producer_topic(p, TOPIC_A);
    report r = {.t = &t};
    int64_t start = hf_now_ms();
    send_one(p, topic, &r, "stuck");
    assert_int_equal(tally_wait(&t, 1, WAIT_MS), 1);
    int64_t elapsed = hf_now_ms() - start;
    assert_int_equal(queue_len_wait(p, 0, WAIT_MS), 0);
    hf_producer_free(p);
    int ok, failed;
    char err[128];
    report_read(&r, &ok, &failed, err, sizeof err);
    assert_int_equal(ok, 0);
    assert_int_equal(failed, 1);
    assert_non_null(strstr(err, "timed out"));
    assert_true(elapsed >= 450);
    tally_destroy(&t);
}

static void purge_fails_every_queued_message(void **state)
{
    km_cluster *c = *state;
    enum { N = 20 };
    tally t;
    tally_init(&t);
    rd_kafka_mock_broker_set_down(c->mock, 1);
    hf_producer_options o = options(c->bootstraps);
    o.message_timeout_ms = 60000;
    hf_producer *p = producer_new(&o);
    hf_topic *topic = hf_producer_topic(p, TOPIC_A);
    report r[N];
    for (int i = 0; i < N; i++) {
        r[i] = (report){.t = &t};
        send_one(p, topic, &r[i], "queued");
    }
    assert_int_equal(queue_len_wait(p, N, WAIT_MS), N);
    hf_producer_purge(p);
    assert_int_equal(hf_producer_flush(p, WAIT_MS), 0);
    assert_int_equal(queue_len_wait(p, 0, WAIT_MS), 0);
    int ok, failed;
    tally_read(&t, &ok, &failed);
    assert_int_equal(ok, 0);
    assert_int_equal(failed, N);
    int64_t start = hf_now_ms();
    hf_producer_free(p);
    /* nothing left to flush: free does not sit out its 5 s */
    assert_true(hf_now_ms() - start < 4000);
    for (int i = 0; i < N; i++) {
        char err[128];
        report_read(&r[i], &ok, &failed, err, sizeof err);
        assert_int_equal(ok, 0);
        assert_int_equal(failed, 1);
        assert_non_null(strstr(err, "Purged"));
    }
    tally_destroy(&t);
}

static void free_after_send_delivers_before_returning(void **state)
{
    km_cluster *c = *state;
    tally t;
    tally_init(&t);
    hf_producer_options o = options(c->bootstraps);
    o.linger_ms = 50; /* the message is certainly still queued when free starts */
    hf_producer *p = producer_new(&o);
    hf_topic *topic = hf_producer_topic(p, TOPIC_A);
    report r = {.t = &t};
    send_one(p, topic, &r, "last words");
    hf_producer_free(p);
    int ok, failed;
    report_read(&r, &ok, &failed, NULL, 0);
    assert_int_equal(ok, 1);
    assert_int_equal(failed, 0);
    hf_producer_free(NULL);
    tally_destroy(&t);
}

/* send's promise (on_delivery exactly once) holds at shutdown too: what free could not deliver in
 * its 5 s is reported as failed before free returns. */
static void free_reports_what_it_could_not_deliver(void **state)
{
    km_cluster *c = *state;
    tally t;
    tally_init(&t);
    rd_kafka_mock_broker_set_down(c->mock, 1);
    hf_producer_options o = options(c->bootstraps);
    o.message_timeout_ms = 60000;
    hf_producer *p = producer_new(&o);
    report r = {.t = &t};
    send_one(p, hf_producer_topic(p, TOPIC_A), &r, "undeliverable");
    hf_producer_free(p);
    int ok, failed;
    report_read(&r, &ok, &failed, NULL, 0);
    assert_int_equal(ok, 0);
    assert_int_equal(failed, 1);
    tally_destroy(&t);
}

static void send_beyond_the_queue_bound_is_refused_at_once_without_a_report(void **state)
{
    km_cluster *c = *state;
    enum { BOUND = 5 };
    tally t;
    tally_init(&t);
    rd_kafka_mock_broker_set_down(c->mock, 1);
    hf_producer_options o = options(c->bootstraps);
    o.queue_max_messages = BOUND;
    hf_producer *p = producer_new(&o);
    hf_topic *topic = hf_producer_topic(p, TOPIC_A);
    report r[BOUND + 1];
    for (int i = 0; i < BOUND; i++) {
        r[i] = (report){.t = &t};
        send_one(p, topic, &r[i], "fits");
    }
    r[BOUND] = (report){.t = &t};
    char err[256] = "";
    int rc = hf_producer_send(p, topic, NULL, 0, "one too many", 12, &r[BOUND], err, sizeof err);
    int64_t queued = queue_len_wait(p, BOUND, WAIT_MS);
    hf_producer_purge(p);
    assert_int_equal(hf_producer_flush(p, WAIT_MS), 0);
    hf_producer_free(p);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, "Queue full"));
    assert_int_equal(queued, BOUND);
    int ok, failed;
    for (int i = 0; i < BOUND; i++) {
        report_read(&r[i], &ok, &failed, NULL, 0);
        assert_int_equal(ok + failed, 1);
    }
    report_read(&r[BOUND], &ok, &failed, NULL, 0);
    assert_int_equal(ok + failed, 0);
    tally_destroy(&t);
}

/* Each variable names a setting hookflow's guarantees rest on. */
static void fixed_properties_are_refused_naming_the_variable(void **state)
{
    (void)state;
    static const struct {
        const char *var, *value;
    } fixed[] = {
        {"HOOKFLOW_KAFKA_ACKS", "1"},
        {"HOOKFLOW_KAFKA_ENABLE_IDEMPOTENCE", "false"},
        {"HOOKFLOW_KAFKA_REQUEST_REQUIRED_ACKS", "0"},
        /* ingest answers 200 on success reports: turning them off would answer none. */
        {"HOOKFLOW_KAFKA_DELIVERY_REPORT_ONLY_ERROR", "true"},
    };
    hf_producer_options o = options(NOWHERE);
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        char err[512] = "";
        setenv(fixed[i].var, fixed[i].value, 1);
        hf_producer *p = hf_producer_new(&o, on_delivery, err, sizeof err);
        unsetenv(fixed[i].var);
        bool created = p != NULL;
        hf_producer_free(p);
        if (created)
            fail_msg("%s=%s was accepted", fixed[i].var, fixed[i].value);
        if (!strstr(err, fixed[i].var))
            fail_msg("%s: err does not name it: \"%s\"", fixed[i].var, err);
    }
}

/* librdkafka also takes topic properties with a "topic." prefix: that way round to acks is
 * closed too (by librdkafka, which wants acks=all with idempotence). */
static void acks_cannot_be_lowered_through_the_topic_prefix(void **state)
{
    (void)state;
    char err[512] = "";
    hf_producer_options o = options(NOWHERE);
    setenv("HOOKFLOW_KAFKA_TOPIC_ACKS", "1", 1);
    hf_producer *p = hf_producer_new(&o, on_delivery, err, sizeof err);
    unsetenv("HOOKFLOW_KAFKA_TOPIC_ACKS");
    bool created = p != NULL;
    hf_producer_free(p);
    assert_false(created);
    assert_non_null(strstr(err, "acks"));
}

static void unknown_or_malformed_property_is_refused_naming_it(void **state)
{
    (void)state;
    static const struct {
        const char *var, *value, *prop;
    } bad[] = {
        {"HOOKFLOW_KAFKA_NO_SUCH_PROPERTY", "1", "no.such.property"},
        {"HOOKFLOW_KAFKA_SOCKET_TIMEOUT_MS", "soon", "socket.timeout.ms"},
    };
    hf_producer_options o = options(NOWHERE);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[512] = "";
        setenv(bad[i].var, bad[i].value, 1);
        hf_producer *p = hf_producer_new(&o, on_delivery, err, sizeof err);
        unsetenv(bad[i].var);
        bool created = p != NULL;
        hf_producer_free(p);
        if (created)
            fail_msg("%s=%s was accepted", bad[i].var, bad[i].value);
        if (!strstr(err, bad[i].prop) || !strstr(err, "HOOKFLOW_KAFKA_"))
            fail_msg("%s: err does not say what is wrong: \"%s\"", bad[i].var, err);
    }
}

static void valid_passthrough_properties_are_accepted(void **state)
{
    km_cluster *c = *state;
    setenv("HOOKFLOW_KAFKA_CLIENT_RACK", "rack-a", 1);
    setenv("HOOKFLOW_KAFKA_SOCKET_TIMEOUT_MS", "30000", 1);
    char err[512] = "";
    hf_producer_options o = options(c->bootstraps);
    hf_producer *p = hf_producer_new(&o, on_delivery, err, sizeof err);
    unsetenv("HOOKFLOW_KAFKA_CLIENT_RACK");
    unsetenv("HOOKFLOW_KAFKA_SOCKET_TIMEOUT_MS");
    if (!p)
        fail_msg("refused: %s", err);
    tally t;
    tally_init(&t);
    report r = {.t = &t};
    send_one(p, hf_producer_topic(p, TOPIC_A), &r, "with a rack");
    assert_int_equal(hf_producer_flush(p, WAIT_MS), 0);
    hf_producer_free(p);
    int ok, failed;
    report_read(&r, &ok, &failed, NULL, 0);
    assert_int_equal(ok, 1);
    assert_int_equal(failed, 0);
    tally_destroy(&t);
}

/* HOOKFLOW_KAFKA_* variables are applied after the options: a short message.timeout.ms from the
 * environment wins over the option's minute. */
static void passthrough_overrides_the_options(void **state)
{
    (void)state;
    tally t;
    tally_init(&t);
    setenv("HOOKFLOW_KAFKA_MESSAGE_TIMEOUT_MS", "300", 1);
    hf_producer_options o = options(NOWHERE);
    o.message_timeout_ms = 60000;
    hf_producer *p = producer_new(&o);
    unsetenv("HOOKFLOW_KAFKA_MESSAGE_TIMEOUT_MS");
    report r = {.t = &t};
    send_one(p, hf_producer_topic(p, TOPIC_A), &r, "nowhere to go");
    int seen = tally_wait(&t, 1, WAIT_MS);
    hf_producer_free(p);
    assert_int_equal(seen, 1);
    int ok, failed;
    char err[128];
    report_read(&r, &ok, &failed, err, sizeof err);
    assert_int_equal(ok, 0);
    assert_int_equal(failed, 1);
    assert_non_null(strstr(err, "timed out"));
    tally_destroy(&t);
}

/* A broker refusing the producer id for good is a fatal error: the producer says it is not
 * ready and refuses new messages at once. */
static void fatal_error_makes_the_producer_unready_and_refuse_sends(void **state)
{
    km_cluster *c = *state;
    /* The refusal comes 500 ms late so that the message below is queued before it: answered at
     * once, the fatal error could come first and the send itself be refused. */
    rd_kafka_mock_broker_push_request_error_rtts(
        c->mock, 1, API_INIT_PRODUCER_ID, 1, RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED, 500);
    tally t;
    tally_init(&t);
    hf_producer_options o = options(c->bootstraps);
    hf_producer *p = producer_new(&o);
    hf_topic *topic = hf_producer_topic(p, TOPIC_A);
    report r = {.t = &t};
    send_one(p, topic, &r, "before");
    /* the queued message is failed by the fatal error */
    int seen = tally_wait(&t, 1, WAIT_MS);
    /* not ready, and still not ready after the health thread's next metadata round trip (1 s)
     * succeeded: the broker itself is fine */
    bool ready = ready_wait(p, false, WAIT_MS);
    if (!ready)
        ready = ready_wait(p, true, 1200);
    report refused = {.t = &t};
    char err[256] = "";
    int rc = hf_producer_send(p, topic, NULL, 0, "after", 5, &refused, err, sizeof err);
    hf_producer_free(p);
    assert_int_equal(seen, 1);
    int ok, failed;
    char dr_err[128];
    report_read(&r, &ok, &failed, dr_err, sizeof dr_err);
    assert_int_equal(ok, 0);
    assert_int_equal(failed, 1);
    assert_true(dr_err[0] != '\0');
    assert_false(ready);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, "fatal"));
    report_read(&refused, &ok, &failed, NULL, 0);
    assert_int_equal(ok + failed, 0);
    tally_destroy(&t);
}

#define MOCK_TEST(f) cmocka_unit_test_setup_teardown(f, cluster_setup, cluster_teardown)

int main(void)
{
    /* Hermetic: no configuration file; only error lines (hookflow's and librdkafka's) on stderr. */
    unsetenv("HOOKFLOW_CONFIG_FILE");
    hf_log_init("test_kafka", HF_LOG_ERROR, HF_LOG_TEXT);
    const struct CMUnitTest tests[] = {
        MOCK_TEST(one_message_gets_exactly_one_successful_report),
        MOCK_TEST(many_messages_each_get_exactly_one_report),
        MOCK_TEST(sent_key_and_value_reach_the_topic_as_they_were_at_send_time),
        MOCK_TEST(each_topic_handle_delivers_to_its_own_topic),
        MOCK_TEST(ready_becomes_true_against_a_running_cluster),
        MOCK_TEST(ready_follows_the_broker_going_down_and_coming_back),
        MOCK_TEST(produce_refused_by_the_broker_reports_a_failure),
        MOCK_TEST(undelivered_message_fails_after_message_timeout),
        MOCK_TEST(purge_fails_every_queued_message),
        MOCK_TEST(free_after_send_delivers_before_returning),
        MOCK_TEST(free_reports_what_it_could_not_deliver),
        MOCK_TEST(send_beyond_the_queue_bound_is_refused_at_once_without_a_report),
        cmocka_unit_test(fixed_properties_are_refused_naming_the_variable),
        cmocka_unit_test(acks_cannot_be_lowered_through_the_topic_prefix),
        cmocka_unit_test(unknown_or_malformed_property_is_refused_naming_it),
        MOCK_TEST(valid_passthrough_properties_are_accepted),
        cmocka_unit_test(passthrough_overrides_the_options),
        MOCK_TEST(fatal_error_makes_the_producer_unready_and_refuse_sends),
    };
    return cmocka_run_group_tests(tests, NULL, km_reapers_join);
}
