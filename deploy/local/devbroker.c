/* devbroker: a Kafka-protocol broker for the one-machine stack and the tests, on librdkafka's mock
 * cluster, with a line-based control socket for fault injection. */

/*
 * Known behaviour (librdkafka 2.0.2's mock cluster, checked against its rdkafka_mock*.c and by
 * tests/integration/test_devbroker.py; deploy/local/README.md has the long form):
 *
 *  - In memory only: a restart loses every message, offset and group.
 *  - Ephemeral ports: each broker binds 127.0.0.1:0, so the ports change on every start. Read the
 *    bootstrap servers from --bootstrap-file; never hard-code them.
 *  - Retention is about 5 MiB per partition. On each append the mock drops the partition's oldest
 *    record batches while it holds more than max_cnt = 100000 batches or max_size = 5 MiB of
 *    batch bytes. The count is of batches (one produce request's worth for a partition), not
 *    messages, and never binds first: a v2 record batch has a 61-byte header, so 100000 of them
 *    exceed 5 MiB. Measured: 4 KiB messages keep the newest ~1258; empty messages sent one per
 *    batch ~77000; batched, 300000 and more. Dropping moves the log start offset, so a consumer
 *    further behind gets its auto.offset.reset.
 *  - Replication is simulated: acks=all is answered when the leader appends; NOT_ENOUGH_REPLICAS
 *    only happens when injected. The 2.0.2 mock ignores the replication factor passed to
 *    rd_kafka_mock_topic_create() and gives every partition min(3, brokers) replicas, always
 *    brokers 1..3; we read back what the cluster reports, warn, and log the real value.
 *    `broker down` does not move leaders (`leader` does).
 *  - Consumer groups: the coordinator completes the first join of an empty group after 3 s and
 *    any later rebalance after the group's session timeout minus 1 s unless all members rejoined,
 *    so members need session.timeout.ms of about 6000 (~5 s rebalances) instead of the 45 s
 *    default (~44 s rebalances).
 *  - Unknown topics are auto-created (4 partitions) by any Metadata request naming them, a
 *    consumer's with allow.auto.create.topics=false included. The mock answers no CreateTopics
 *    request; the topics hookflow uses are created here at start.
 *  - Injected errors go to the next matching requests of any client, including the Metadata
 *    request this program sends for `topics` (and `leader` on a topic it did not create).
 *  - Occasional 1 s stalls: when the mock closes a connection, its poll loop skips the next
 *    socket for that round (the fd array shifts under the loop) and serves it only at its next
 *    wake-up, at most 1 s later. Latency assertions need 1 s of slack. Stopping usually takes
 *    about 1 s too (rd_kafka_mock_cluster_destroy(), measured).
 *
 * Control protocol (unix stream socket, --control): one command per line, one reply line each,
 * "ok[ detail]" or "error: <reason>". Commands: ping | topics | clear | help |
 * broker down|up <id|all> | rtt <id|all> <ms> | errors <ApiName> <count> <ErrorName> |
 * leader <topic> <partition> <broker_id|none>.
 */

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "config.h"
#include "log.h"
#include "util.h"

#define PROG "hookflow-devbroker"
#define CTL_MAX_CLIENTS 16
#define CTL_LINE_MAX 1024
#define CTL_MAX_WORDS 8
#define METADATA_TIMEOUT_MS 5000
#define CTL_CLIENT_TIMEOUT_MS 30000
#define EXIT_USAGE 2

/* The topics hookflow uses, created at start with the configured partition count. */
static const char *const topic_suffixes[] = {
    "webhooks.accounting",
    "webhooks.marketing-automation",
    "webhooks.messaging",
    "deadletter",
};

/* Kafka protocol API keys the `errors` and `clear` commands know by name. */
static const struct {
    const char *name;
    int16_t key;
} api_keys[] = {
    {"Produce", 0},
    {"Fetch", 1},
    {"ListOffsets", 2},
    {"Metadata", 3},
    {"OffsetCommit", 8},
    {"OffsetFetch", 9},
    {"FindCoordinator", 10},
    {"JoinGroup", 11},
    {"Heartbeat", 12},
    {"LeaveGroup", 13},
    {"SyncGroup", 14},
    {"DescribeGroups", 15},
    {"ListGroups", 16},
    {"ApiVersions", 18},
    {"InitProducerId", 22},
    {"OffsetForLeaderEpoch", 23},
    {"AddPartitionsToTxn", 24},
    {"AddOffsetsToTxn", 25},
    {"EndTxn", 26},
    {"TxnOffsetCommit", 28},
};

/* Settings from the environment; command-line options override them. */
typedef struct devbroker_env {
    char *topic_prefix;
    char *log_level;
    char *log_format;
} devbroker_env;

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"json", "text", NULL};

static const hf_cfg_item env_items[] = {
    HF_CFG_STR("HOOKFLOW_TOPIC_PREFIX", "hookflow", devbroker_env, topic_prefix,
               "prefix of the topic names"),
    HF_CFG_CHOICE("HOOKFLOW_LOG_LEVEL", "info", log_levels, devbroker_env, log_level,
                  "debug|info|warn|error"),
    HF_CFG_CHOICE("HOOKFLOW_LOG_FORMAT", "json", log_formats, devbroker_env, log_format,
                  "json|text"),
};

typedef struct devbroker_opts {
    int brokers;
    int partitions;
    int replication; /* 0 = min(3, brokers) */
    const char *topic_prefix;
    const char *bootstrap_file; /* NULL = do not write one */
    char *control_path;         /* owned; NULL = no control socket */
} devbroker_opts;

typedef struct ctl_client {
    int fd;            /* -1 = free slot */
    int64_t active_ms; /* accepted, or its last bytes: idle ones are closed (slots are few) */
    size_t len;
    char line[CTL_LINE_MAX];
} ctl_client;

typedef struct devbroker {
    devbroker_opts opts;
    rd_kafka_t *host; /* the handle the mock cluster lives on */
    rd_kafka_mock_cluster_t *mcluster;
    const char *bootstraps; /* owned by mcluster */
    char *topics[HF_ARRAY_LEN(topic_suffixes)];
    int replication; /* what the cluster reports; -1 unknown */
    int listen_fd;
    bool wrote_bootstrap;
    bool bound_control;
    ctl_client clients[CTL_MAX_CLIENTS];
} devbroker;

static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig)
{
    g_stop_signal = sig;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: " PROG " [options]\n"
        "       " PROG " ctl SOCKET COMMAND...\n"
        "\n"
        "A Kafka-protocol broker for the local stack and the tests, on librdkafka's mock\n"
        "cluster: in memory, ephemeral ports, fault injection over a unix socket.\n"
        "\n"
        "Options:\n"
        "  --brokers N            number of brokers, ids 1..N (default 3)\n"
        "  --partitions P         partitions of each hookflow topic (default 6)\n"
        "  --replication R        replication factor, 1..N (default min(3, N)); the mock of\n"
        "                         librdkafka 2.0.2 ignores it and always uses min(3, N)\n"
        "  --topic-prefix PREFIX  topic name prefix (default $HOOKFLOW_TOPIC_PREFIX or "
        "\"hookflow\")\n"
        "  --bootstrap-file PATH  write the bootstrap servers (one line) here, atomically;\n"
        "                         removed at exit\n"
        "  --control PATH         control socket (default <bootstrap-file>.ctl)\n"
        "  --help, --version\n"
        "\n"
        "Topics created: <prefix>.webhooks.accounting, <prefix>.webhooks.marketing-automation,\n"
        "<prefix>.webhooks.messaging, <prefix>.deadletter.\n"
        "\n"
        "Control commands (one per line; reply \"ok[ ...]\" or \"error: <reason>\"):\n"
        "  ping | topics | clear | help\n"
        "  broker down <id|all>            broker up <id|all>\n"
        "  rtt <id|all> <ms>               added response latency\n"
        "  errors <ApiName> <count> <ErrorName>   e.g. errors Produce 5 NOT_ENOUGH_REPLICAS\n"
        "  leader <topic> <partition> <broker_id|none>\n"
        "\n"
        "Environment: HOOKFLOW_TOPIC_PREFIX, HOOKFLOW_LOG_LEVEL (debug|info|warn|error),\n"
        "HOOKFLOW_LOG_FORMAT (json|text), HOOKFLOW_KAFKA_DEBUG (librdkafka debug contexts for\n"
        "the mock, e.g. \"mock,protocol\").\n"
        "Exit status: 0 after SIGTERM/SIGINT, 1 on a start-up failure, 2 on bad usage.\n"
        "`ctl` prints the reply and exits 0 on \"ok\", 1 otherwise.\n");
}

/* Parses a bounded whole number option value. */
static bool parse_int_arg(const char *s, long long lo, long long hi, int *out)
{
    long long v;
    if (!hf_parse_ll(s, &v) || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

/* Kafka topic names: [A-Za-z0-9._-], at most 249 bytes. */
static bool topic_prefix_valid(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 200)
        return false;
    for (; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

enum {
    OPT_BROKERS = 1,
    OPT_PARTITIONS,
    OPT_REPLICATION,
    OPT_PREFIX,
    OPT_BOOTSTRAP,
    OPT_CONTROL,
    OPT_HELP,
    OPT_VERSION
};

/* Fills opts from argv. Returns 0 to run, 1 when --help/--version was handled, -1 with a
 * one-line reason in err on bad usage. */
static int parse_args(int argc, char **argv, const devbroker_env *env, devbroker_opts *opts,
                      char *err, size_t errlen)
{
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"partitions", required_argument, NULL, OPT_PARTITIONS},
        {"replication", required_argument, NULL, OPT_REPLICATION},
        {"topic-prefix", required_argument, NULL, OPT_PREFIX},
        {"bootstrap-file", required_argument, NULL, OPT_BOOTSTRAP},
        {"control", required_argument, NULL, OPT_CONTROL},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    const char *control = NULL;
    opts->brokers = 3;
    opts->partitions = 6;
    opts->replication = 0;
    opts->topic_prefix = env->topic_prefix;
    opts->bootstrap_file = NULL;
    opts->control_path = NULL;

    opterr = 0; /* our own one-line messages */
    int c;
    while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BROKERS:
            if (!parse_int_arg(optarg, 1, 64, &opts->brokers))
                return hf_err(err, errlen, "--brokers \"%s\" is not a number in 1..64", optarg);
            break;
        case OPT_PARTITIONS:
            if (!parse_int_arg(optarg, 1, 10000, &opts->partitions))
                return hf_err(err, errlen, "--partitions \"%s\" is not a number in 1..10000",
                              optarg);
            break;
        case OPT_REPLICATION:
            if (!parse_int_arg(optarg, 1, 64, &opts->replication))
                return hf_err(err, errlen, "--replication \"%s\" is not a number in 1..64", optarg);
            break;
        case OPT_PREFIX:
            opts->topic_prefix = optarg;
            break;
        case OPT_BOOTSTRAP:
            opts->bootstrap_file = optarg;
            break;
        case OPT_CONTROL:
            control = optarg;
            break;
        case OPT_HELP:
            usage(stdout);
            return 1;
        case OPT_VERSION:
            printf(PROG " %s\n", HOOKFLOW_VERSION);
            return 1;
        /* getopt leaves optind on a group of short options ("-xy") until its last letter, so a
         * short one is named by optopt; for a long one optopt is its code (OPT_*), not a
         * letter, and the argument it came from names it. */
        case ':':
            if (optopt > 0 && optopt < 128 && isprint(optopt))
                return hf_err(err, errlen, "option -%c needs a value (see --help)", optopt);
            return hf_err(err, errlen, "option %s needs a value (see --help)", argv[optind - 1]);
        default:
            if (optopt > 0 && optopt < 128 && isprint(optopt))
                return hf_err(err, errlen, "unknown option \"-%c\" (see --help)", optopt);
            return hf_err(err, errlen, "unknown option \"%s\" (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return hf_err(err, errlen, "unexpected argument \"%s\" (see --help)", argv[optind]);
    if (opts->replication == 0)
        opts->replication = opts->brokers < 3 ? opts->brokers : 3;
    if (opts->replication > opts->brokers)
        return hf_err(err, errlen, "--replication %d is more than --brokers %d", opts->replication,
                      opts->brokers);
    if (!topic_prefix_valid(opts->topic_prefix))
        return hf_err(err, errlen,
                      "topic prefix \"%s\" is not a valid Kafka topic name part "
                      "([A-Za-z0-9._-], 1..200 bytes)",
                      opts->topic_prefix);
    if (opts->bootstrap_file && !*opts->bootstrap_file)
        return hf_err(err, errlen, "--bootstrap-file is empty");
    if (control && !*control)
        return hf_err(err, errlen, "--control is empty");
    if (control)
        opts->control_path = xstrdup(control);
    else if (opts->bootstrap_file)
        opts->control_path = xasprintf("%s.ctl", opts->bootstrap_file);
    if (opts->control_path &&
        strlen(opts->control_path) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        hf_err(err, errlen, "control socket path \"%s\" is longer than %zu bytes",
               opts->control_path, sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
        free(opts->control_path);
        opts->control_path = NULL;
        return -1;
    }
    return 0;
}

/* librdkafka log lines (from its threads) become hookflow log lines. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    hf_log_level l = level <= 3   ? HF_LOG_ERROR
                     : level == 4 ? HF_LOG_WARN
                     : level <= 6 ? HF_LOG_INFO
                                  : HF_LOG_DEBUG;
    /* The hosting handle never connects anywhere; its warning about that is noise. */
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers"))
        l = HF_LOG_DEBUG;
    if (!hf_log_enabled(l))
        return;
    hf_log_kv(l, "kafka.log", "client", rd_kafka_name(rk), "facility", fac, "msg", buf, NULL);
}

/* The short-lived metadata client logs only at debug: its connection errors while brokers are
 * down are expected. */
static void kafka_quiet_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)level;
    if (hf_log_enabled(HF_LOG_DEBUG))
        hf_log_kv(HF_LOG_DEBUG, "kafka.log", "client", rd_kafka_name(rk), "facility", fac, "msg",
                  buf, NULL);
}

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                    size_t errlen)
{
    char errstr[256];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        return hf_err(err, errlen, "%s=%s: %s", name, value, errstr);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Fetches the cluster's metadata (all topics) with a short-lived client of its own, so that no
 * state lingers between control commands. On success *mdp is the caller's to free with
 * rd_kafka_metadata_destroy() (it does not depend on the client). */
static int devbroker_metadata(const devbroker *db, const struct rd_kafka_metadata **mdp, char *err,
                              size_t errlen)
{
    int rc = -1;
    char errstr[256];
    rd_kafka_t *rk = NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set_log_cb(conf, kafka_quiet_log_cb);
    if (conf_set(conf, "bootstrap.servers", db->bootstraps, err, errlen) != 0 ||
        conf_set(conf, "client.id", PROG "-metadata", err, errlen) != 0) {
        rd_kafka_conf_destroy(conf);
        goto done;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        hf_err(err, errlen, "metadata client: %s", errstr);
        goto done;
    }
    /* rd_kafka_new() took ownership of conf. */
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 1, NULL, mdp, METADATA_TIMEOUT_MS);
    if (kerr) {
        hf_err(err, errlen, "metadata request failed: %s", rd_kafka_err2str(kerr));
        goto done;
    }
    rc = 0;
done:
    if (rk)
        rd_kafka_destroy(rk);
    return rc;
}

/* Lists every topic the cluster has (auto-created ones too), sorted, comma-separated into out. */
static int devbroker_list_topics(const devbroker *db, hf_buf *out, char *err, size_t errlen)
{
    const struct rd_kafka_metadata *md = NULL;
    if (devbroker_metadata(db, &md, err, errlen) != 0)
        return -1;
    const char **names = xcalloc((size_t)md->topic_cnt + 1, sizeof *names);
    size_t n = 0;
    for (int i = 0; i < md->topic_cnt; i++)
        if (!md->topics[i].err)
            names[n++] = md->topics[i].topic;
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++)
        hf_buf_printf(out, "%s%s", i ? "," : "", names[i]);
    free(names);
    rd_kafka_metadata_destroy(md);
    return 0;
}

/* The replica count the cluster reports for the first hookflow topic, or -1 if unknown. Older
 * mock clusters (librdkafka 2.0.2 included) ignore the replication factor given to
 * rd_kafka_mock_topic_create() and always use min(3, brokers). */
static int devbroker_effective_replication(const devbroker *db)
{
    char err[256];
    const struct rd_kafka_metadata *md = NULL;
    if (devbroker_metadata(db, &md, err, sizeof err) != 0) {
        hf_log_warn("replication", "cannot check the replication factor: %s", err);
        return -1;
    }
    int replicas = -1;
    for (int i = 0; i < md->topic_cnt; i++)
        if (strcmp(md->topics[i].topic, db->topics[0]) == 0 && md->topics[i].partition_cnt > 0)
            replicas = md->topics[i].partitions[0].replica_cnt;
    rd_kafka_metadata_destroy(md);
    return replicas;
}

/* "all" or "-1" → -1, else a broker id 1..N. */
static bool parse_broker_id(const devbroker *db, const char *s, int32_t *out)
{
    if (hf_strieq(s, "all") || strcmp(s, "-1") == 0) {
        *out = -1;
        return true;
    }
    int id;
    if (!parse_int_arg(s, 1, db->opts.brokers, &id))
        return false;
    *out = id;
    return true;
}

static bool parse_api_key(const char *s, int16_t *out)
{
    for (size_t i = 0; i < HF_ARRAY_LEN(api_keys); i++) {
        if (hf_strieq(s, api_keys[i].name)) {
            *out = api_keys[i].key;
            return true;
        }
    }
    return false;
}

/* Maps an error name as rd_kafka_err2name() spells it ("NOT_ENOUGH_REPLICAS", "_TRANSPORT"),
 * optionally with the RD_KAFKA_RESP_ERR_ prefix, case-insensitively, to its code. */
static bool parse_error_name(const char *s, rd_kafka_resp_err_t *out)
{
    static const char prefix[] = "RD_KAFKA_RESP_ERR_";
    if (strncasecmp(s, prefix, sizeof prefix - 1) == 0)
        s += sizeof prefix - 1;
    if (!*s)
        return false;
    for (int code = RD_KAFKA_RESP_ERR__BEGIN + 1; code < RD_KAFKA_RESP_ERR_END_ALL; code++) {
        const char *name = rd_kafka_err2name((rd_kafka_resp_err_t)code);
        if (name && hf_strieq(name, s)) {
            *out = (rd_kafka_resp_err_t)code;
            return true;
        }
    }
    return false;
}

/* Applies up/down or an rtt to one broker or (-1) to each of them. */
static rd_kafka_resp_err_t devbroker_each_broker(devbroker *db, int32_t id, bool up_down, bool up,
                                                 int rtt_ms)
{
    int32_t first = id == -1 ? 1 : id;
    int32_t last = id == -1 ? db->opts.brokers : id;
    for (int32_t b = first; b <= last; b++) {
        rd_kafka_resp_err_t kerr;
        if (up_down)
            kerr = up ? rd_kafka_mock_broker_set_up(db->mcluster, b)
                      : rd_kafka_mock_broker_set_down(db->mcluster, b);
        else
            kerr = rd_kafka_mock_broker_set_rtt(db->mcluster, b, rtt_ms);
        if (kerr)
            return kerr;
    }
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static void reply_kafka(hf_buf *reply, rd_kafka_resp_err_t kerr)
{
    if (kerr)
        hf_buf_printf(reply, "error: %s (%s)", rd_kafka_err2str(kerr), rd_kafka_err2name(kerr));
    else
        hf_buf_puts(reply, "ok");
}

static void cmd_broker(devbroker *db, char **w, int n, hf_buf *reply)
{
    int32_t id;
    bool up = n == 3 && strcmp(w[1], "up") == 0;
    if (n != 3 || (!up && strcmp(w[1], "down") != 0)) {
        hf_buf_puts(reply, "error: usage: broker down|up <id|all>");
        return;
    }
    if (!parse_broker_id(db, w[2], &id)) {
        hf_buf_printf(reply, "error: no broker \"%s\" (ids are 1..%d or all)", w[2],
                      db->opts.brokers);
        return;
    }
    reply_kafka(reply, devbroker_each_broker(db, id, true, up, 0));
}

static void cmd_rtt(devbroker *db, char **w, int n, hf_buf *reply)
{
    int32_t id;
    int ms;
    if (n != 3) {
        hf_buf_puts(reply, "error: usage: rtt <id|all> <ms>");
        return;
    }
    if (!parse_broker_id(db, w[1], &id)) {
        hf_buf_printf(reply, "error: no broker \"%s\" (ids are 1..%d or all)", w[1],
                      db->opts.brokers);
        return;
    }
    if (!parse_int_arg(w[2], 0, 600000, &ms)) {
        hf_buf_printf(reply, "error: rtt \"%s\" is not a number of ms in 0..600000", w[2]);
        return;
    }
    reply_kafka(reply, devbroker_each_broker(db, id, false, false, ms));
}

static void cmd_errors(devbroker *db, char **w, int n, hf_buf *reply)
{
    int16_t api;
    int count;
    rd_kafka_resp_err_t code;
    if (n != 4) {
        hf_buf_puts(reply, "error: usage: errors <ApiName> <count> <ErrorName>");
        return;
    }
    if (!parse_api_key(w[1], &api)) {
        hf_buf_printf(reply, "error: unknown API \"%s\" (known:", w[1]);
        for (size_t i = 0; i < HF_ARRAY_LEN(api_keys); i++)
            hf_buf_printf(reply, " %s", api_keys[i].name);
        hf_buf_putc(reply, ')');
        return;
    }
    if (!parse_int_arg(w[2], 1, 100000, &count)) {
        hf_buf_printf(reply, "error: count \"%s\" is not a number in 1..100000", w[2]);
        return;
    }
    if (!parse_error_name(w[3], &code)) {
        hf_buf_printf(reply,
                      "error: unknown error name \"%s\" (use librdkafka's names, e.g. "
                      "NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT, _TRANSPORT)",
                      w[3]);
        return;
    }
    rd_kafka_resp_err_t *codes = xmalloc((size_t)count * sizeof *codes);
    for (int i = 0; i < count; i++)
        codes[i] = code;
    rd_kafka_mock_push_request_errors_array(db->mcluster, api, (size_t)count, codes);
    free(codes);
    hf_buf_puts(reply, "ok");
}

static bool is_startup_topic(const devbroker *db, const char *topic)
{
    for (size_t i = 0; i < HF_ARRAY_LEN(db->topics); i++)
        if (strcmp(db->topics[i], topic) == 0)
            return true;
    return false;
}

static void cmd_leader(devbroker *db, char **w, int n, hf_buf *reply)
{
    int partition;
    int32_t id;
    if (n != 4) {
        hf_buf_puts(reply, "error: usage: leader <topic> <partition> <broker_id|none>");
        return;
    }
    if (!parse_int_arg(w[2], 0, 1000000, &partition)) {
        hf_buf_printf(reply, "error: partition \"%s\" is not a number >= 0", w[2]);
        return;
    }
    if (hf_strieq(w[3], "none") || strcmp(w[3], "-1") == 0) {
        id = -1;
    } else if (!parse_broker_id(db, w[3], &id) || id == -1) {
        hf_buf_printf(reply, "error: no broker \"%s\" (ids are 1..%d or none)", w[3],
                      db->opts.brokers);
        return;
    }
    /* The mock would silently create an unknown topic; a typo should be an error instead. */
    if (!is_startup_topic(db, w[1])) {
        char err[256];
        hf_buf list = {0};
        if (devbroker_list_topics(db, &list, err, sizeof err) != 0) {
            hf_buf_printf(reply, "error: cannot check that topic %s exists: %s", w[1], err);
            return;
        }
        bool found = false;
        size_t tl = strlen(w[1]);
        for (const char *p = list.data; p && *p;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (len == tl && memcmp(p, w[1], tl) == 0)
                found = true;
            p = comma ? comma + 1 : p + len;
        }
        hf_buf_free(&list);
        if (!found) {
            hf_buf_printf(reply, "error: unknown topic \"%s\"", w[1]);
            return;
        }
    }
    reply_kafka(reply, rd_kafka_mock_partition_set_leader(db->mcluster, w[1], partition, id));
}

static void cmd_clear(devbroker *db, hf_buf *reply)
{
    for (size_t i = 0; i < HF_ARRAY_LEN(api_keys); i++)
        rd_kafka_mock_clear_request_errors(db->mcluster, api_keys[i].key);
    rd_kafka_resp_err_t kerr = devbroker_each_broker(db, -1, false, false, 0);
    if (!kerr)
        kerr = devbroker_each_broker(db, -1, true, true, 0);
    reply_kafka(reply, kerr);
}

/* Runs one control command line; writes exactly one reply line (without newline) into reply. */
static void devbroker_command(devbroker *db, char *line, hf_buf *reply)
{
    char *w[CTL_MAX_WORDS];
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
        if (n == CTL_MAX_WORDS) {
            hf_buf_puts(reply, "error: too many words");
            return;
        }
        w[n++] = t;
    }
    if (n == 0) {
        hf_buf_puts(reply, "error: empty command");
    } else if (strcmp(w[0], "ping") == 0 && n == 1) {
        hf_buf_puts(reply, "ok");
    } else if (strcmp(w[0], "help") == 0 && n == 1) {
        hf_buf_puts(reply, "ok commands: ping, topics, clear, broker down|up <id|all>, "
                           "rtt <id|all> <ms>, errors <ApiName> <count> <ErrorName>, "
                           "leader <topic> <partition> <broker_id|none>");
    } else if (strcmp(w[0], "topics") == 0 && n == 1) {
        char err[256];
        hf_buf list = {0};
        if (devbroker_list_topics(db, &list, err, sizeof err) == 0)
            hf_buf_printf(reply, "ok %s", list.data ? list.data : "");
        else
            hf_buf_printf(reply, "error: %s", err);
        hf_buf_free(&list);
    } else if (strcmp(w[0], "clear") == 0 && n == 1) {
        cmd_clear(db, reply);
    } else if (strcmp(w[0], "broker") == 0) {
        cmd_broker(db, w, n, reply);
    } else if (strcmp(w[0], "rtt") == 0) {
        cmd_rtt(db, w, n, reply);
    } else if (strcmp(w[0], "errors") == 0) {
        cmd_errors(db, w, n, reply);
    } else if (strcmp(w[0], "leader") == 0) {
        cmd_leader(db, w, n, reply);
    } else {
        hf_buf_printf(reply, "error: unknown command \"%s\" (try help)", w[0]);
    }
}

/* Binds and listens on the control socket. A stale socket file is replaced; a live one (another
 * devbroker answers) or a non-socket file at the path is an error. */
static int control_listen(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return hf_err(err, errlen, "control path %s exists and is not a socket", path);
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0) {
            bool live = connect(probe, (struct sockaddr *)&addr, sizeof addr) == 0;
            close(probe);
            if (live)
                return hf_err(err, errlen, "control socket %s is in use by another process", path);
        }
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return hf_err(err, errlen, "socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 16) != 0) {
        hf_err(err, errlen, "cannot listen on control socket %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void client_close(ctl_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->len = 0;
}

/* Sends one reply line; false if the client cannot take it (it is then dropped). */
static bool client_send(ctl_client *c, const char *s, size_t n)
{
    while (n) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        s += w;
        n -= (size_t)w;
    }
    return true;
}

/* Runs one complete line from a client and answers it. */
static bool client_run_line(devbroker *db, ctl_client *c, char *line)
{
    hf_buf reply = {0};
    char *echo = xstrdup(line);
    devbroker_command(db, line, &reply);
    hf_log_kv(strncmp(reply.data, "ok", 2) == 0 ? HF_LOG_INFO : HF_LOG_WARN, "control", "command",
              echo, "reply", reply.data, NULL);
    free(echo);
    hf_buf_putc(&reply, '\n');
    bool ok = client_send(c, reply.data, reply.len);
    hf_buf_free(&reply);
    return ok;
}

/* Reads what the client sent and answers every complete line. Closes the client on EOF, on an
 * error, or on an over-long line. revents: what poll reported for it. */
static void client_readable(devbroker *db, ctl_client *c, short revents)
{
    ssize_t r = recv(c->fd, c->line + c->len, sizeof c->line - c->len - 1, 0);
    if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    c->active_ms = hf_now_ms();
    if (r <= 0) {
        /* A last command without its newline still gets an answer when the client only ended
         * its sending side (it reads the answer); one that hung up altogether (POLLHUP: it
         * crashed or was killed mid-line) had not finished it, and it is not run. */
        if (r == 0 && c->len > 0 && !(revents & POLLHUP)) {
            c->line[c->len] = '\0';
            client_run_line(db, c, c->line);
        }
        client_close(c);
        return;
    }
    c->len += (size_t)r;
    char *start = c->line;
    char *nl;
    while ((nl = memchr(start, '\n', c->len - (size_t)(start - c->line))) != NULL) {
        *nl = '\0';
        if (!client_run_line(db, c, start)) {
            client_close(c);
            return;
        }
        start = nl + 1;
    }
    size_t rest = c->len - (size_t)(start - c->line);
    memmove(c->line, start, rest);
    c->len = rest;
    if (c->len >= sizeof c->line - 1) {
        static const char too_long[] = "error: line too long\n";
        client_send(c, too_long, sizeof too_long - 1);
        client_close(c);
    }
}

static void control_accept(devbroker *db)
{
    for (;;) {
        int fd = accept4(db->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return; /* EAGAIN: nothing more to accept; other errors: try again on next poll */
        ctl_client *slot = NULL;
        for (size_t i = 0; i < CTL_MAX_CLIENTS; i++)
            if (db->clients[i].fd < 0) {
                slot = &db->clients[i];
                break;
            }
        if (!slot) {
            static const char busy[] = "error: too many control connections\n";
            if (send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL) < 0)
                hf_log_debug("control", "cannot tell a client it is one too many");
            close(fd);
            continue;
        }
        slot->fd = fd;
        slot->len = 0;
        slot->active_ms = hf_now_ms();
    }
}

/* Serves the control socket until SIGTERM/SIGINT. Signals are blocked except inside ppoll(), so
 * a signal can never slip in between the flag check and the wait. */
static void devbroker_serve(devbroker *db, const sigset_t *wait_mask)
{
    while (!g_stop_signal) {
        struct pollfd pfd[1 + CTL_MAX_CLIENTS];
        ctl_client *owner[1 + CTL_MAX_CLIENTS];
        nfds_t n = 0;
        if (db->listen_fd >= 0) {
            pfd[n] = (struct pollfd){.fd = db->listen_fd, .events = POLLIN};
            owner[n++] = NULL;
        }
        for (size_t i = 0; i < CTL_MAX_CLIENTS; i++) {
            if (db->clients[i].fd >= 0) {
                pfd[n] = (struct pollfd){.fd = db->clients[i].fd, .events = POLLIN};
                owner[n++] = &db->clients[i];
            }
        }
        /* Wake up in time to close the clients that went idle. */
        int64_t now = hf_now_ms(), next = -1;
        for (nfds_t i = 0; i < n; i++)
            if (owner[i] && (next < 0 || owner[i]->active_ms < next))
                next = owner[i]->active_ms;
        struct timespec wait = {0, 0}, *timeout = NULL;
        if (next >= 0) {
            int64_t left = next + CTL_CLIENT_TIMEOUT_MS - now;
            left = left < 0 ? 0 : left;
            wait = (struct timespec){left / 1000, (left % 1000) * 1000000};
            timeout = &wait;
        }
        int ready = ppoll(pfd, n, timeout, wait_mask);
        if (ready < 0) {
            if (errno != EINTR)
                hf_log_error("control", "poll failed: %s", strerror(errno));
            continue;
        }
        for (nfds_t i = 0; i < n; i++) {
            if (!pfd[i].revents)
                continue;
            if (!owner[i])
                control_accept(db);
            else if (owner[i]->fd >= 0)
                client_readable(db, owner[i], pfd[i].revents);
        }
        now = hf_now_ms();
        for (size_t i = 0; i < CTL_MAX_CLIENTS; i++) {
            ctl_client *c = &db->clients[i];
            if (c->fd >= 0 && now - c->active_ms >= CTL_CLIENT_TIMEOUT_MS) {
                static const char idle[] = "error: idle for too long\n";
                client_send(c, idle, sizeof idle - 1);
                client_close(c);
            }
        }
    }
}

/* Frees everything devbroker_start() set up, in reverse order, and removes the files it made. */
static void devbroker_stop(devbroker *db)
{
    for (size_t i = 0; i < CTL_MAX_CLIENTS; i++)
        client_close(&db->clients[i]);
    if (db->listen_fd >= 0)
        close(db->listen_fd);
    db->listen_fd = -1;
    if (db->bound_control)
        unlink(db->opts.control_path);
    if (db->wrote_bootstrap)
        unlink(db->opts.bootstrap_file);
    if (db->mcluster)
        rd_kafka_mock_cluster_destroy(db->mcluster);
    db->mcluster = NULL;
    if (db->host)
        rd_kafka_destroy(db->host);
    db->host = NULL;
    for (size_t i = 0; i < HF_ARRAY_LEN(db->topics); i++) {
        free(db->topics[i]);
        db->topics[i] = NULL;
    }
}

/* Creates the cluster and its topics, opens the control socket and writes the bootstrap file
 * (last, so a caller that sees the file can use both). On failure the caller runs
 * devbroker_stop(). */
static int devbroker_start(devbroker *db, char *err, size_t errlen)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    const char *debug = hf_config_get("HOOKFLOW_KAFKA_DEBUG");
    if (conf_set(conf, "client.id", PROG, err, errlen) != 0 ||
        (debug && *debug && conf_set(conf, "debug", debug, err, errlen) != 0)) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    db->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!db->host) {
        rd_kafka_conf_destroy(conf);
        return hf_err(err, errlen, "cannot create the librdkafka handle: %s", errstr);
    }
    /* rd_kafka_new() took ownership of conf. */
    db->mcluster = rd_kafka_mock_cluster_new(db->host, db->opts.brokers);
    if (!db->mcluster)
        return hf_err(err, errlen, "cannot create the mock cluster (see the log above)");
    db->bootstraps = rd_kafka_mock_cluster_bootstraps(db->mcluster);

    for (size_t i = 0; i < HF_ARRAY_LEN(topic_suffixes); i++) {
        db->topics[i] = xasprintf("%s.%s", db->opts.topic_prefix, topic_suffixes[i]);
        rd_kafka_resp_err_t kerr = rd_kafka_mock_topic_create(
            db->mcluster, db->topics[i], db->opts.partitions, db->opts.replication);
        if (kerr)
            return hf_err(err, errlen, "cannot create topic %s: %s", db->topics[i],
                          rd_kafka_err2str(kerr));
    }

    if (db->opts.control_path) {
        db->listen_fd = control_listen(db->opts.control_path, err, errlen);
        if (db->listen_fd < 0)
            return -1;
        db->bound_control = true;
    }

    db->replication = devbroker_effective_replication(db);
    if (db->replication > 0 && db->replication != db->opts.replication)
        hf_log_warn("replication",
                    "the mock cluster of librdkafka %s ignores --replication %d: partitions have "
                    "%d replicas (brokers 1..%d)",
                    rd_kafka_version_str(), db->opts.replication, db->replication, db->replication);

    if (db->opts.bootstrap_file) {
        char *content = xasprintf("%s\n", db->bootstraps);
        int rc =
            hf_write_file_atomic(db->opts.bootstrap_file, content, strlen(content), err, errlen);
        free(content);
        if (rc != 0)
            return -1;
        db->wrote_bootstrap = true;
    }
    return 0;
}

/* `ctl SOCKET WORDS...`: sends one command, prints the reply, exits 0 on "ok". */
static int ctl_main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, PROG ": usage: " PROG " ctl SOCKET COMMAND...\n");
        return EXIT_USAGE;
    }
    const char *path = argv[2];
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, PROG ": control socket path %s is too long\n", path);
        return EXIT_USAGE;
    }
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);

    hf_buf line = {0};
    for (int i = 3; i < argc; i++)
        hf_buf_printf(&line, "%s%s", i > 3 ? " " : "", argv[i]);
    hf_buf_putc(&line, '\n');

    int rc = 1;
    hf_buf reply = {0};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        fprintf(stderr, PROG ": cannot connect to %s: %s\n", path, strerror(errno));
        goto done;
    }
    const char *p = line.data;
    size_t left = line.len;
    while (left) {
        ssize_t w = send(fd, p, left, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fprintf(stderr, PROG ": cannot send to %s: %s\n", path, strerror(errno));
            goto done;
        }
        p += w;
        left -= (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int ready = poll(&pfd, 1, CTL_CLIENT_TIMEOUT_MS);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0) {
            fprintf(stderr, PROG ": no reply from %s\n", path);
            goto done;
        }
        char chunk[512];
        ssize_t r = recv(fd, chunk, sizeof chunk, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        hf_buf_append(&reply, chunk, (size_t)r);
        if (memchr(chunk, '\n', (size_t)r))
            break;
    }
    if (reply.len == 0) {
        fprintf(stderr, PROG ": %s closed the connection without a reply\n", path);
        goto done;
    }
    char *nl = memchr(reply.data, '\n', reply.len);
    if (nl)
        *nl = '\0';
    printf("%s\n", reply.data);
    rc = (strcmp(reply.data, "ok") == 0 || strncmp(reply.data, "ok ", 3) == 0) ? 0 : 1;
done:
    if (fd >= 0)
        close(fd);
    hf_buf_free(&line);
    hf_buf_free(&reply);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "ctl") == 0)
        return ctl_main(argc, argv);

    char err[512];
    devbroker_env env = {0};
    if (hf_config_load(env_items, HF_ARRAY_LEN(env_items), &env, err, sizeof err) != 0) {
        fprintf(stderr, PROG ": %s\n", err);
        hf_config_free(env_items, HF_ARRAY_LEN(env_items), &env);
        return EXIT_USAGE;
    }
    devbroker db = {.listen_fd = -1};
    for (size_t i = 0; i < CTL_MAX_CLIENTS; i++)
        db.clients[i].fd = -1;
    int prc = parse_args(argc, argv, &env, &db.opts, err, sizeof err);
    if (prc != 0) {
        if (prc < 0)
            fprintf(stderr, PROG ": %s\n", err);
        hf_config_free(env_items, HF_ARRAY_LEN(env_items), &env);
        return prc < 0 ? EXIT_USAGE : 0;
    }
    hf_log_level level = HF_LOG_INFO;
    hf_log_format format = HF_LOG_JSON;
    if (!hf_log_level_parse(env.log_level, &level) || !hf_log_format_parse(env.log_format, &format))
        hf_die("bad log settings"); /* unreachable: the table only admits valid choices */
    hf_log_init(PROG, level, format);

    /* Block the stop signals before any librdkafka thread exists, so every thread inherits the
     * mask and only ppoll() in the main loop ever takes them. */
    sigset_t stop_set, wait_mask;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_set, &wait_mask);
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 0;
    if (devbroker_start(&db, err, sizeof err) != 0) {
        fprintf(stderr, PROG ": %s\n", err);
        rc = 1;
    } else {
        char brokers[16], partitions[16], replicas[16];
        snprintf(brokers, sizeof brokers, "%d", db.opts.brokers);
        snprintf(partitions, sizeof partitions, "%d", db.opts.partitions);
        snprintf(replicas, sizeof replicas, "%d", db.replication);
        hf_log_kv(HF_LOG_INFO, "ready", "bootstrap", db.bootstraps, "control",
                  db.opts.control_path ? db.opts.control_path : "", "topic_prefix",
                  db.opts.topic_prefix, "brokers", brokers, "partitions", partitions, "replication",
                  replicas, NULL);
        devbroker_serve(&db, &wait_mask);
        hf_log_info("stopping", "signal %d", (int)g_stop_signal);
    }
    devbroker_stop(&db);
    free(db.opts.control_path);
    hf_config_free(env_items, HF_ARRAY_LEN(env_items), &env);
    return rc;
}
