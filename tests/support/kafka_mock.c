/* kafka_mock: see kafka_mock.h. */
#include "kafka_mock.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

void km_quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk, (void)level, (void)fac, (void)buf;
}

km_cluster *km_cluster_new(const char *const *topics, size_t ntopics, char *err, size_t errlen)
{
    km_cluster *c = xcalloc(1, sizeof *c);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, km_quiet_log);
    /* rd_kafka_new() takes ownership of conf on success only. */
    c->owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);
    if (!c->owner) {
        rd_kafka_conf_destroy(conf);
        goto err;
    }
    c->mock = rd_kafka_mock_cluster_new(c->owner, 1);
    if (!c->mock) {
        snprintf(err, errlen, "rd_kafka_mock_cluster_new failed");
        goto err;
    }
    for (size_t i = 0; i < ntopics; i++) {
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(c->mock, topics[i], 1, 1);
        if (e) {
            snprintf(err, errlen, "cannot create topic %s: %s", topics[i], rd_kafka_err2str(e));
            goto err;
        }
    }
    c->bootstraps = rd_kafka_mock_cluster_bootstraps(c->mock);
    return c;
err:
    km_cluster_free(c);
    return NULL;
}

void km_cluster_free(km_cluster *c)
{
    if (!c)
        return;
    if (c->mock)
        rd_kafka_mock_cluster_destroy(c->mock);
    if (c->owner)
        rd_kafka_destroy(c->owner);
    free(c);
}

static void *reap(void *arg)
{
    km_cluster_free(arg);
    return NULL;
}

/* The threads km_cluster_destroy_later started; only the test's main thread touches these. */
static pthread_t reapers[64];
static size_t nreapers;

void km_cluster_destroy_later(km_cluster *c)
{
    if (!c)
        return;
    if (nreapers == HF_ARRAY_LEN(reapers) || pthread_create(&reapers[nreapers], NULL, reap, c) != 0)
        km_cluster_free(c);
    else
        nreapers++;
}

int km_reapers_join(void **state)
{
    (void)state;
    for (size_t i = 0; i < nreapers; i++)
        pthread_join(reapers[i], NULL);
    nreapers = 0;
    return 0;
}

rd_kafka_t *km_consumer_new(const km_cluster *c, const char *group, const char *const *props)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, km_quiet_log);
    bool bad = rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstraps, errstr, sizeof errstr) ||
               rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr) ||
               rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
    for (size_t i = 0; !bad && props && props[i]; i += 2)
        bad = rd_kafka_conf_set(conf, props[i], props[i + 1], errstr, sizeof errstr);
    if (bad) {
        rd_kafka_conf_destroy(conf);
        fail_msg("consumer conf: %s", errstr);
    }
    /* rd_kafka_new() takes ownership of conf on success only. */
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fail_msg("consumer: %s", errstr);
    }
    return rk;
}

void km_consumer_free(rd_kafka_t *rk)
{
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

size_t km_consume(rd_kafka_t *rk, const char *topic, size_t want, int timeout_ms,
                  km_on_message *on_message, void *arg)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (e)
        fail_msg("assign %s: %s", topic, rd_kafka_err2str(e));
    size_t n = 0;
    int64_t until = hf_now_ms() + timeout_ms;
    while (n < want && hf_now_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
        if (!m)
            continue;
        if (!m->err) {
            on_message(m, arg);
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    return n;
}
