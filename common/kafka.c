/* kafka: an idempotent, acks=all producer with per-message delivery callbacks and a readiness
 * probe, configured from HOOKFLOW_KAFKA_* (librdkafka properties pass through). */
#include "kafka.h"

#include <ctype.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"

struct hf_producer {
    rd_kafka_t *rk;
    hf_delivery_fn on_delivery;
    atomic_bool stop;
    atomic_bool ready;
    atomic_bool fatal;
    pthread_t poll_thread, health_thread;
    pthread_mutex_t lock; /* with cond: wakes the health thread at shutdown; guards topics */
    pthread_cond_t cond;
    rd_kafka_topic_t **topics; /* handles given out by hf_producer_topic */
    size_t ntopics;
};

typedef struct apply_ctx {
    rd_kafka_conf_t *conf;
    char *err;
    size_t errlen;
} apply_ctx;

/* Settings hookflow's guarantees rest on (every acknowledged event in Kafka; offsets committed
 * only after PostgreSQL): a HOOKFLOW_KAFKA_* variable may not change them. */
static const char *const fixed_properties[] = {
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "delivery.report.only.error", /* ingest answers 200 on the success reports */
};

static int apply_one(const char *prop, const char *value, void *arg)
{
    apply_ctx *ctx = arg;
    for (size_t i = 0; i < HF_ARRAY_LEN(fixed_properties); i++) {
        if (strcmp(prop, fixed_properties[i]) == 0) {
            char name[64];
            size_t n = 0;
            for (const char *c = prop; *c && n < sizeof name - 1; c++)
                name[n++] = *c == '.' ? '_' : (char)toupper((unsigned char)*c);
            name[n] = '\0';
            return hf_err(ctx->err, ctx->errlen,
                          "HOOKFLOW_KAFKA_%s cannot be set: hookflow's delivery guarantees "
                          "depend on %s",
                          name, prop);
        }
    }
    char errstr[256];
    if (rd_kafka_conf_set(ctx->conf, prop, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        return hf_err(ctx->err, ctx->errlen, "HOOKFLOW_KAFKA_* property %s: %s", prop, errstr);
    return 0;
}

int hf_kafka_conf_apply_env(void *conf, char *err, size_t errlen)
{
    apply_ctx ctx = {conf, err, errlen};
    return hf_config_each_kafka_property(apply_one, &ctx);
}

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    hf_producer *p = opaque;
    p->on_delivery(msg->_private, msg->err ? rd_kafka_err2str(msg->err) : NULL);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    hf_producer *p = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[256];
        rd_kafka_fatal_error(rk, fatal, sizeof fatal);
        atomic_store(&p->fatal, true);
        atomic_store(&p->ready, false);
        hf_log_kv(HF_LOG_ERROR, "kafka.fatal", "error", fatal, NULL);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        atomic_store(&p->ready, false);
    hf_log_kv(HF_LOG_WARN, "kafka.error", "code", rd_kafka_err2name(err), "reason", reason, NULL);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    hf_log_kv(level <= 3   ? HF_LOG_ERROR
              : level <= 4 ? HF_LOG_WARN
                           : HF_LOG_DEBUG,
              "kafka.log", "facility", fac, "msg", buf, NULL);
}

static void *poll_main(void *arg)
{
    hf_producer *p = arg;
    while (!atomic_load(&p->stop))
        rd_kafka_poll(p->rk, 100);
    return NULL;
}

/* Readiness: a metadata round trip every second, off the request path. */
static void *health_main(void *arg)
{
    hf_producer *p = arg;
    while (!atomic_load(&p->stop)) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t e = rd_kafka_metadata(p->rk, 0, NULL, &md, 1000);
        bool ok = e == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->broker_cnt > 0;
        if (md)
            rd_kafka_metadata_destroy(md);
        atomic_store(&p->ready, ok && !atomic_load(&p->fatal));
        pthread_mutex_lock(&p->lock);
        if (!atomic_load(&p->stop)) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&p->cond, &p->lock, &until);
        }
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

hf_producer *hf_producer_new(const hf_producer_options *opts, hf_delivery_fn on_delivery, char *err,
                             size_t errlen)
{
    char errstr[512];
    char timeout[32], queue_max[32], linger[32];
    snprintf(timeout, sizeof timeout, "%lld", (long long)opts->message_timeout_ms);
    snprintf(queue_max, sizeof queue_max, "%lld", (long long)opts->queue_max_messages);
    snprintf(linger, sizeof linger, "%g", opts->linger_ms); /* librdkafka takes fractions */
    const struct {
        const char *k;
        const char *v;
    } settings[] = {
        {"bootstrap.servers", opts->brokers},
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"socket.keepalive.enable", "true"},
        {"client.id", opts->client_id ? opts->client_id : "hookflow"},
        {"statistics.interval.ms", "0"},
        {"message.timeout.ms", timeout},
        {"queue.buffering.max.messages", queue_max},
        {"linger.ms", linger},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    for (size_t i = 0; i < HF_ARRAY_LEN(settings); i++) {
        if (rd_kafka_conf_set(conf, settings[i].k, settings[i].v, errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            hf_err(err, errlen, "kafka: %s: %s", settings[i].k, errstr);
            return NULL;
        }
    }
    if (hf_kafka_conf_apply_env(conf, err, errlen) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    hf_producer *p = xcalloc(1, sizeof *p);
    p->on_delivery = on_delivery;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    /* rd_kafka_new() takes ownership of conf on success only. */
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->cond);
        free(p);
        hf_err(err, errlen, "kafka: cannot create producer: %s", errstr);
        return NULL;
    }
    pthread_create(&p->poll_thread, NULL, poll_main, p);
    pthread_create(&p->health_thread, NULL, health_main, p);
    return p;
}

hf_topic *hf_producer_topic(hf_producer *p, const char *name)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->rk, name, NULL);
    if (!rkt) /* only for an invalid name, which hookflow never makes */
        hf_die("kafka: cannot use topic %s: %s", name, rd_kafka_err2str(rd_kafka_last_error()));
    pthread_mutex_lock(&p->lock);
    p->topics = xrealloc(p->topics, (p->ntopics + 1) * sizeof *p->topics);
    p->topics[p->ntopics++] = rkt;
    pthread_mutex_unlock(&p->lock);
    return (hf_topic *)rkt;
}

int hf_producer_send(hf_producer *p, hf_topic *topic, const char *key, size_t keylen,
                     const void *value, size_t len, void *opaque, char *err, size_t errlen)
{
    if (atomic_load(&p->fatal))
        return hf_err(err, errlen, "producer failed fatally");
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk, RD_KAFKA_V_RKT((rd_kafka_topic_t *)topic), RD_KAFKA_V_KEY(key, keylen),
        RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        return hf_err(err, errlen, "%s", rd_kafka_err2str(e));
    return 0;
}

bool hf_producer_ready(hf_producer *p)
{
    /* fatal too: the health thread may store ready just after a fatal error cleared it. */
    return atomic_load(&p->ready) && !atomic_load(&p->fatal);
}

int64_t hf_producer_queue_len(hf_producer *p)
{
    return rd_kafka_outq_len(p->rk);
}

int hf_producer_flush(hf_producer *p, int timeout_ms)
{
    rd_kafka_flush(p->rk, timeout_ms);
    return rd_kafka_outq_len(p->rk);
}

void hf_producer_purge(hf_producer *p)
{
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
}

void hf_producer_free(hf_producer *p)
{
    if (!p)
        return;
    int left = hf_producer_flush(p, 5000);
    if (left > 0) {
        /* rd_kafka_destroy would drop them without a report: purge them while the poll thread
         * still runs, so each gets its failed report (the promise of hf_producer_send). */
        hf_log_kv(HF_LOG_WARN, "kafka.flush", "msg",
                  "messages left undelivered at shutdown; reported as failed", NULL);
        hf_producer_purge(p);
        hf_producer_flush(p, 1000);
    }
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->poll_thread, NULL);
    pthread_join(p->health_thread, NULL);
    /* Serve any delivery report that arrived after the poll thread stopped. */
    rd_kafka_poll(p->rk, 0);
    for (size_t i = 0; i < p->ntopics; i++)
        rd_kafka_topic_destroy(p->topics[i]);
    free(p->topics);
    rd_kafka_destroy(p->rk);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}
