/* Unit tests for common/metrics: get-or-create identity, values, the exposition text, histogram
 * buckets, gauge callbacks, escaping, concurrency and misuse. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics.h"

/* Renders m into a malloc'd string. */
static char *render(hf_metrics *m)
{
    hf_buf out = {0};
    hf_metrics_render(m, &out);
    return hf_buf_steal(&out);
}

static void test_same_name_and_labels_return_same_object(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    hf_counter *a = hf_metrics_counter(m, "hits_total", "Hits.", "provider=\"xero\"");
    hf_counter *b = hf_metrics_counter(m, "hits_total", "Other help.", "provider=\"xero\"");
    hf_counter *c = hf_metrics_counter(m, "hits_total", "Hits.", "provider=\"meta\"");
    hf_counter *d = hf_metrics_counter(m, "misses_total", "Misses.", "provider=\"xero\"");
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    assert_ptr_not_equal(a, d);
    hf_gauge *g1 = hf_metrics_gauge(m, "depth", "Depth.", NULL);
    hf_gauge *g2 = hf_metrics_gauge(m, "depth", "Depth.", NULL);
    assert_ptr_equal(g1, g2);
    double bounds[] = {1, 2};
    hf_histogram *h1 = hf_metrics_histogram(m, "lat", "Latency.", NULL, bounds, 2);
    hf_histogram *h2 = hf_metrics_histogram(m, "lat", "Latency.", NULL, bounds, 2);
    assert_ptr_equal(h1, h2);
    hf_metrics_free(m);
}

static void test_null_and_empty_labels_are_one_series(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    hf_counter *a = hf_metrics_counter(m, "up_total", "Up.", NULL);
    hf_counter *b = hf_metrics_counter(m, "up_total", "Up.", "");
    assert_ptr_equal(a, b);
    hf_metrics_free(m);
}

static void test_counter_adds_and_reads_back(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    hf_counter *c = hf_metrics_counter(m, "events_total", "Events.", NULL);
    assert_int_equal(hf_counter_value(c), 0);
    hf_counter_add(c, 1);
    hf_counter_add(c, 41);
    assert_int_equal(hf_counter_value(c), 42);
    hf_counter_add(c, UINT64_C(10000000000));
    assert_true(hf_counter_value(c) == UINT64_C(10000000042));
    hf_metrics_free(m);
}

static void test_gauge_sets_adds_and_goes_negative(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    hf_gauge *g = hf_metrics_gauge(m, "in_flight", "In flight.", NULL);
    assert_int_equal(hf_gauge_value(g), 0);
    hf_gauge_set(g, 5);
    hf_gauge_add(g, 3);
    assert_int_equal(hf_gauge_value(g), 8);
    hf_gauge_add(g, -10);
    assert_true(hf_gauge_value(g) == -2);
    hf_gauge_set(g, INT64_MIN);
    assert_true(hf_gauge_value(g) == INT64_MIN);
    hf_metrics_free(m);
}

static void test_render_counter_and_gauge_text(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    hf_counter_add(hf_metrics_counter(m, "hookflow_webhooks_total", "Webhooks received.",
                                      "provider=\"xero\",status=\"200\""),
                   3);
    hf_gauge_set(hf_metrics_gauge(m, "hookflow_in_flight", "Requests in flight.", NULL), -4);
    char *text = render(m);
    assert_string_equal(text, "# HELP hookflow_webhooks_total Webhooks received.\n"
                              "# TYPE hookflow_webhooks_total counter\n"
                              "hookflow_webhooks_total{provider=\"xero\",status=\"200\"} 3\n"
                              "# HELP hookflow_in_flight Requests in flight.\n"
                              "# TYPE hookflow_in_flight gauge\n"
                              "hookflow_in_flight -4\n");
    free(text);
    hf_metrics_free(m);
}

static void test_render_groups_series_under_one_family_in_creation_order(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    hf_counter_add(hf_metrics_counter(m, "b_total", "B.", "k=\"1\""), 1);
    hf_counter_add(hf_metrics_counter(m, "a_total", "A.", "k=\"1\""), 2);
    hf_counter_add(hf_metrics_counter(m, "b_total", "B.", "k=\"2\""), 3);
    hf_counter_add(hf_metrics_counter(m, "a_total", "A.", "k=\"0\""), 4);
    char *text = render(m);
    assert_string_equal(text, "# HELP b_total B.\n"
                              "# TYPE b_total counter\n"
                              "b_total{k=\"1\"} 1\n"
                              "b_total{k=\"2\"} 3\n"
                              "# HELP a_total A.\n"
                              "# TYPE a_total counter\n"
                              "a_total{k=\"1\"} 2\n"
                              "a_total{k=\"0\"} 4\n");
    free(text);
    hf_metrics_free(m);
}

static void test_render_empty_registry_is_empty(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    char *text = render(m);
    assert_string_equal(text, "");
    free(text);
    hf_metrics_free(m);
}

static void test_render_appends_to_existing_buffer(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    hf_metrics_counter(m, "x_total", "X.", NULL);
    hf_buf out = {0};
    hf_buf_puts(&out, "prefix\n");
    hf_metrics_render(m, &out);
    assert_string_equal(out.data, "prefix\n# HELP x_total X.\n# TYPE x_total counter\nx_total 0\n");
    hf_buf_free(&out);
    hf_metrics_free(m);
}

static void test_histogram_buckets_are_cumulative_with_sum_and_count(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    const double bounds[] = {0.005, 0.1, 1, 2.5};
    hf_histogram *h = hf_metrics_histogram(m, "hookflow_request_seconds", "Request latency.",
                                           "route=\"webhook\"", bounds, HF_ARRAY_LEN(bounds));
    hf_histogram_observe(h, 0.001); /* bucket 0.005 */
    hf_histogram_observe(h, 0.05);  /* bucket 0.1 */
    hf_histogram_observe(h, 0.1);   /* exactly on a bound: le means <=, so bucket 0.1 */
    hf_histogram_observe(h, 2);     /* bucket 2.5 */
    hf_histogram_observe(h, 7);     /* +Inf */
    char *text = render(m);
    assert_string_equal(text, "# HELP hookflow_request_seconds Request latency.\n"
                              "# TYPE hookflow_request_seconds histogram\n"
                              "hookflow_request_seconds_bucket{route=\"webhook\",le=\"0.005\"} 1\n"
                              "hookflow_request_seconds_bucket{route=\"webhook\",le=\"0.1\"} 3\n"
                              "hookflow_request_seconds_bucket{route=\"webhook\",le=\"1\"} 3\n"
                              "hookflow_request_seconds_bucket{route=\"webhook\",le=\"2.5\"} 4\n"
                              "hookflow_request_seconds_bucket{route=\"webhook\",le=\"+Inf\"} 5\n"
                              "hookflow_request_seconds_sum{route=\"webhook\"} 9.151\n"
                              "hookflow_request_seconds_count{route=\"webhook\"} 5\n");
    free(text);
    hf_metrics_free(m);
}

static void test_histogram_without_labels_has_only_le(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    const double bounds[] = {10};
    hf_histogram *h = hf_metrics_histogram(m, "size_bytes", "Sizes.", NULL, bounds, 1);
    hf_histogram_observe(h, 10);
    hf_histogram_observe(h, 11);
    char *text = render(m);
    assert_string_equal(text, "# HELP size_bytes Sizes.\n"
                              "# TYPE size_bytes histogram\n"
                              "size_bytes_bucket{le=\"10\"} 1\n"
                              "size_bytes_bucket{le=\"+Inf\"} 2\n"
                              "size_bytes_sum 21\n"
                              "size_bytes_count 2\n");
    free(text);
    hf_metrics_free(m);
}

static void test_histogram_explicit_inf_bound_is_not_duplicated(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    const double bounds[] = {1, INFINITY};
    hf_histogram *h = hf_metrics_histogram(m, "h", "H.", NULL, bounds, 2);
    hf_histogram_observe(h, 5);
    char *text = render(m);
    assert_string_equal(text,
                        "# HELP h H.\n# TYPE h histogram\n"
                        "h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 1\nh_sum 5\nh_count 1\n");
    free(text);
    hf_metrics_free(m);
}

static void test_histogram_with_no_bounds_has_only_inf_bucket(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    hf_histogram *h = hf_metrics_histogram(m, "h", "H.", NULL, NULL, 0);
    hf_histogram_observe(h, -1.5);
    char *text = render(m);
    assert_string_equal(text, "# HELP h H.\n# TYPE h histogram\n"
                              "h_bucket{le=\"+Inf\"} 1\nh_sum -1.5\nh_count 1\n");
    free(text);
    hf_metrics_free(m);
}

static void test_histogram_drops_nan_and_copies_bounds(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    double bounds[] = {1, 2};
    hf_histogram *h = hf_metrics_histogram(m, "h", "H.", NULL, bounds, 2);
    bounds[0] = 100; /* the registry keeps its own copy */
    bounds[1] = 200;
    hf_histogram_observe(h, NAN);
    hf_histogram_observe(h, 1.5);
    char *text = render(m);
    assert_string_equal(text,
                        "# HELP h H.\n# TYPE h histogram\n"
                        "h_bucket{le=\"1\"} 0\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
                        "h_sum 1.5\nh_count 1\n");
    free(text);
    hf_metrics_free(m);
}

static void test_float_text_is_shortest_exact_form(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    const double bounds[] = {1e-9, 0.25, 1e21};
    hf_histogram *h = hf_metrics_histogram(m, "h", "H.", NULL, bounds, 3);
    hf_histogram_observe(h, 0.1);
    hf_histogram_observe(h, 0.2); /* 0.1 + 0.2 is not 0.3 in binary: needs 17 digits */
    char *text = render(m);
    assert_string_equal(text, "# HELP h H.\n# TYPE h histogram\n"
                              "h_bucket{le=\"1e-09\"} 0\nh_bucket{le=\"0.25\"} 2\n"
                              "h_bucket{le=\"1e+21\"} 2\nh_bucket{le=\"+Inf\"} 2\n"
                              "h_sum 0.30000000000000004\nh_count 2\n");
    free(text);
    hf_metrics_free(m);
}

static int64_t read_int(void *arg)
{
    return *(int64_t *)arg;
}

static int64_t constant_seven(void *arg)
{
    (void)arg;
    return 7;
}

static void test_gauge_fn_is_read_at_render_time_and_can_be_replaced(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    int64_t depth = 1;
    hf_metrics_gauge_fn(m, "queue_depth", "Queue depth.", "queue=\"a\"", read_int, &depth);
    hf_gauge_set(hf_metrics_gauge(m, "queue_depth", "Queue depth.", "queue=\"b\""), 2);
    depth = 99;
    char *text = render(m);
    assert_string_equal(text, "# HELP queue_depth Queue depth.\n"
                              "# TYPE queue_depth gauge\n"
                              "queue_depth{queue=\"a\"} 99\n"
                              "queue_depth{queue=\"b\"} 2\n");
    free(text);
    hf_metrics_gauge_fn(m, "queue_depth", "Queue depth.", "queue=\"a\"", constant_seven, NULL);
    text = render(m);
    assert_non_null(strstr(text, "queue_depth{queue=\"a\"} 7\n"));
    free(text);
    hf_metrics_free(m);
}

static void test_help_text_escapes_backslash_and_newline(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    hf_metrics_counter(m, "c_total", "Line one\nC:\\path \"quoted\"", NULL);
    hf_metrics_counter(m, "d_total", NULL, NULL);
    char *text = render(m);
    assert_string_equal(text, "# HELP c_total Line one\\nC:\\\\path \"quoted\"\n"
                              "# TYPE c_total counter\nc_total 0\n"
                              "# HELP d_total\n# TYPE d_total counter\nd_total 0\n");
    free(text);
    hf_metrics_free(m);
}

static void test_escape_label_handles_backslash_quote_newline(void **state)
{
    (void)state;
    hf_buf out = {0};
    hf_buf_puts(&out, "reason=\"");
    hf_metrics_escape_label(&out, "a\\b\"c\nd é");
    hf_buf_putc(&out, '"');
    assert_string_equal(out.data, "reason=\"a\\\\b\\\"c\\nd é\"");
    hf_buf_reset(&out);
    hf_metrics_escape_label(&out, "");
    hf_metrics_escape_label(&out, NULL);
    assert_int_equal(out.len, 0);
    hf_buf_free(&out);

    /* An escaped value round-trips through the registry into the exposition text. */
    hf_metrics *m = hf_metrics_new();
    hf_buf labels = {0};
    hf_buf_puts(&labels, "path=\"");
    hf_metrics_escape_label(&labels, "/x\"y");
    hf_buf_putc(&labels, '"');
    hf_counter_add(hf_metrics_counter(m, "req_total", "R.", labels.data), 1);
    char *text = render(m);
    assert_non_null(strstr(text, "req_total{path=\"/x\\\"y\"} 1\n"));
    free(text);
    hf_buf_free(&labels);
    hf_metrics_free(m);
}

static void test_many_series_keep_their_identity(void **state)
{
    (void)state;
    enum { N = 2000 };
    hf_metrics *m = hf_metrics_new();
    hf_counter **made = calloc(N, sizeof *made);
    char labels[64];
    for (int i = 0; i < N; i++) {
        snprintf(labels, sizeof labels, "id=\"%d\"", i);
        made[i] = hf_metrics_counter(m, i % 2 ? "odd_total" : "even_total", "X.", labels);
        hf_counter_add(made[i], (uint64_t)i);
    }
    for (int i = 0; i < N; i++) {
        snprintf(labels, sizeof labels, "id=\"%d\"", i);
        hf_counter *c = hf_metrics_counter(m, i % 2 ? "odd_total" : "even_total", "X.", labels);
        assert_ptr_equal(c, made[i]);
        assert_int_equal(hf_counter_value(c), i);
    }
    char *text = render(m);
    assert_non_null(strstr(text, "even_total{id=\"1998\"} 1998\n"));
    assert_non_null(strstr(text, "odd_total{id=\"1999\"} 1999\n"));
    free(text);
    free(made);
    hf_metrics_free(m);
}

enum { THREADS = 8, ROUNDS = 20000 };

typedef struct {
    hf_metrics *m;
    hf_counter *counter;
    hf_gauge *gauge;
    hf_histogram *histogram;
    hf_counter *created; /* what this thread got from get-or-create of a shared name */
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    a->created = hf_metrics_counter(a->m, "shared_total", "Shared.", "k=\"v\"");
    for (int i = 0; i < ROUNDS; i++) {
        hf_counter_add(a->counter, 1);
        hf_gauge_add(a->gauge, 1);
        hf_histogram_observe(a->histogram, (i % 4) * 0.5); /* 0, 0.5, 1, 1.5: exact in binary */
        if (i % 1000 == 0) {
            hf_buf out = {0};
            hf_metrics_render(a->m, &out); /* renders race with updates and creation */
            hf_buf_free(&out);
        }
    }
    return NULL;
}

static void test_concurrent_updates_are_not_lost(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    const double bounds[] = {0.5, 1};
    hf_counter *c = hf_metrics_counter(m, "ops_total", "Ops.", NULL);
    hf_gauge *g = hf_metrics_gauge(m, "level", "Level.", NULL);
    hf_histogram *h = hf_metrics_histogram(m, "obs", "Obs.", NULL, bounds, 2);
    pthread_t tids[THREADS];
    worker_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (worker_arg){.m = m, .counter = c, .gauge = g, .histogram = h};
        assert_int_equal(pthread_create(&tids[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(tids[i], NULL);
    for (int i = 1; i < THREADS; i++)
        assert_ptr_equal(args[i].created, args[0].created);
    assert_int_equal(hf_counter_value(c), THREADS * ROUNDS);
    assert_int_equal(hf_gauge_value(g), THREADS * ROUNDS);
    char *text = render(m);
    /* Per thread a quarter each of 0, 0.5, 1, 1.5: sum = ROUNDS/4 * 3 per thread. */
    char want[512];
    snprintf(want, sizeof want,
             "obs_bucket{le=\"0.5\"} %d\nobs_bucket{le=\"1\"} %d\nobs_bucket{le=\"+Inf\"} %d\n"
             "obs_sum %d\nobs_count %d\n",
             THREADS * ROUNDS / 2, THREADS * ROUNDS * 3 / 4, THREADS * ROUNDS,
             THREADS * ROUNDS / 4 * 3, THREADS * ROUNDS);
    assert_non_null(strstr(text, want));
    free(text);
    hf_metrics_free(m);
}

/* Runs fn in a child with stderr silenced; true if the child died of SIGABRT. */
static bool aborts(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, 2);
        fn();
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void register_counter_then_gauge(void)
{
    hf_metrics *m = hf_metrics_new();
    hf_metrics_counter(m, "x", "X.", NULL);
    hf_metrics_gauge(m, "x", "X.", "other=\"1\"");
}

static void register_gauge_then_gauge_fn_same_series(void)
{
    hf_metrics *m = hf_metrics_new();
    hf_metrics_gauge(m, "x", "X.", NULL);
    hf_metrics_gauge_fn(m, "x", "X.", NULL, constant_seven, NULL);
}

static void register_invalid_name(void)
{
    hf_metrics *m = hf_metrics_new();
    hf_metrics_counter(m, "9bad-name", "X.", NULL);
}

static void register_descending_bounds(void)
{
    hf_metrics *m = hf_metrics_new();
    const double bounds[] = {2, 1};
    hf_metrics_histogram(m, "h", "H.", NULL, bounds, 2);
}

static void test_misuse_aborts(void **state)
{
    (void)state;
    assert_true(aborts(register_counter_then_gauge));
    assert_true(aborts(register_gauge_then_gauge_fn_same_series));
    assert_true(aborts(register_invalid_name));
    assert_true(aborts(register_descending_bounds));
}

/* Counters render every uint64 exactly (no float rounding, no sign), gauges every int64. */
static void test_counter_and_gauge_render_full_integer_range(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    hf_counter_add(hf_metrics_counter(m, "big_total", "Big.", NULL), UINT64_MAX);
    hf_gauge_set(hf_metrics_gauge(m, "low", "Low.", NULL), INT64_MIN);
    hf_gauge_set(hf_metrics_gauge(m, "high", "High.", NULL), INT64_MAX);
    char *text = render(m);
    assert_non_null(strstr(text, "\nbig_total 18446744073709551615\n"));
    assert_non_null(strstr(text, "\nlow -9223372036854775808\n"));
    assert_non_null(strstr(text, "\nhigh 9223372036854775807\n"));
    free(text);
    hf_metrics_free(m);
}

/* +Inf lands in the +Inf bucket only, -Inf in the first; the sum renders +Inf, then NaN. */
static void test_histogram_infinite_observations(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    const double bounds[] = {1};
    hf_histogram *h = hf_metrics_histogram(m, "h", "H.", NULL, bounds, 1);
    hf_histogram_observe(h, INFINITY);
    char *text = render(m);
    assert_string_equal(text, "# HELP h H.\n# TYPE h histogram\n"
                              "h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 1\n"
                              "h_sum +Inf\nh_count 1\n");
    free(text);
    hf_histogram_observe(h, -INFINITY);
    text = render(m);
    assert_string_equal(text, "# HELP h H.\n# TYPE h histogram\n"
                              "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                              "h_sum NaN\nh_count 2\n");
    free(text);
    hf_metrics_free(m);
}

/* Every family's # HELP and # TYPE come once, right before its first sample, even when its
 * series are created interleaved with other families' and by several threads (the shape of the
 * engine's per-label get-or-create at run time). */
enum { CREATORS = 4, CREATED = 600 };

typedef struct {
    hf_metrics *m;
    int id;
} creator_arg;

static void *create_series(void *p)
{
    creator_arg *a = p;
    char labels[64];
    const double bounds[] = {0.1, 1};
    for (int i = 0; i < CREATED; i++) {
        snprintf(labels, sizeof labels, "t=\"%d\",i=\"%d\"", a->id, i);
        switch (i % 3) {
        case 0:
            hf_counter_add(hf_metrics_counter(a->m, "fam_a_total", "A.", labels), 1);
            break;
        case 1:
            hf_gauge_add(hf_metrics_gauge(a->m, "fam_b", "B.", labels), 1);
            break;
        default:
            hf_histogram_observe(
                hf_metrics_histogram(a->m, "fam_c_seconds", "C.", labels, bounds, 2), 0.5);
        }
        if (i % 50 == 0) {
            hf_buf out = {0};
            hf_metrics_render(a->m, &out);
            hf_buf_free(&out);
        }
    }
    return NULL;
}

static void test_concurrent_creation_keeps_one_block_per_family(void **state)
{
    (void)state;
    hf_metrics *m = hf_metrics_new();
    pthread_t t[CREATORS];
    creator_arg args[CREATORS];
    for (int i = 0; i < CREATORS; i++) {
        args[i] = (creator_arg){m, i};
        assert_int_equal(pthread_create(&t[i], NULL, create_series, &args[i]), 0);
    }
    for (int i = 0; i < CREATORS; i++)
        pthread_join(t[i], NULL);
    char *text = render(m);
    const char *fams[] = {"fam_a_total", "fam_b", "fam_c_seconds"};
    for (size_t f = 0; f < 3; f++) {
        char help[64], type[64];
        snprintf(help, sizeof help, "# HELP %s ", fams[f]);
        snprintf(type, sizeof type, "# TYPE %s ", fams[f]);
        const char *h = strstr(text, help);
        assert_non_null(h);
        assert_null(strstr(h + 1, help));
        const char *ty = strstr(text, type);
        assert_non_null(ty);
        assert_null(strstr(ty + 1, type));
        assert_true(h < ty);
    }
    /* Samples of one family are contiguous: a family name never reappears after another's. */
    size_t lines = 0, switches = 0;
    char prev[32] = "";
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        if (*p != '#') {
            char fam[32]; /* "fam_a", "fam_b" or "fam_c": the family's sample name prefix */
            snprintf(fam, sizeof fam, "%.5s", p);
            if (strcmp(fam, prev) != 0)
                switches++;
            snprintf(prev, sizeof prev, "%s", fam);
            lines++;
        }
        p = nl + 1;
    }
    assert_int_equal(switches, 3);
    /* a: 200 per thread, b: 200, c: 200 * (3 buckets + sum + count) */
    assert_int_equal(lines, CREATORS * (CREATED / 3) * (1 + 1 + 5));
    free(text);
    hf_metrics_free(m);
}

/* A family name is checked against the _bucket/_sum/_count samples a histogram renders too: a
 * counter "lat_count" beside a histogram "lat" would render two series named lat_count (and a
 * second # TYPE), which Prometheus refuses. It aborts like any other type clash. */
static void register_histogram_then_clashing_counter(void)
{
    hf_metrics *m = hf_metrics_new();
    hf_metrics_histogram(m, "lat", "Lat.", NULL, NULL, 0);
    hf_metrics_counter(m, "lat_count", "Clash.", NULL);
}

static void register_counter_then_clashing_histogram(void)
{
    hf_metrics *m = hf_metrics_new();
    hf_metrics_gauge(m, "size_sum", "Clash.", NULL);
    hf_metrics_histogram(m, "size", "Size.", NULL, NULL, 0);
}

static void test_histogram_sample_names_cannot_be_reused(void **state)
{
    (void)state;
    assert_true(aborts(register_histogram_then_clashing_counter));
    assert_true(aborts(register_counter_then_clashing_histogram));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_name_and_labels_return_same_object),
        cmocka_unit_test(test_null_and_empty_labels_are_one_series),
        cmocka_unit_test(test_counter_adds_and_reads_back),
        cmocka_unit_test(test_gauge_sets_adds_and_goes_negative),
        cmocka_unit_test(test_render_counter_and_gauge_text),
        cmocka_unit_test(test_render_groups_series_under_one_family_in_creation_order),
        cmocka_unit_test(test_render_empty_registry_is_empty),
        cmocka_unit_test(test_render_appends_to_existing_buffer),
        cmocka_unit_test(test_histogram_buckets_are_cumulative_with_sum_and_count),
        cmocka_unit_test(test_histogram_without_labels_has_only_le),
        cmocka_unit_test(test_histogram_explicit_inf_bound_is_not_duplicated),
        cmocka_unit_test(test_histogram_with_no_bounds_has_only_inf_bucket),
        cmocka_unit_test(test_histogram_drops_nan_and_copies_bounds),
        cmocka_unit_test(test_float_text_is_shortest_exact_form),
        cmocka_unit_test(test_gauge_fn_is_read_at_render_time_and_can_be_replaced),
        cmocka_unit_test(test_help_text_escapes_backslash_and_newline),
        cmocka_unit_test(test_escape_label_handles_backslash_quote_newline),
        cmocka_unit_test(test_many_series_keep_their_identity),
        cmocka_unit_test(test_concurrent_updates_are_not_lost),
        cmocka_unit_test(test_misuse_aborts),
        cmocka_unit_test(test_counter_and_gauge_render_full_integer_range),
        cmocka_unit_test(test_histogram_infinite_observations),
        cmocka_unit_test(test_concurrent_creation_keeps_one_block_per_family),
        cmocka_unit_test(test_histogram_sample_names_cannot_be_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
