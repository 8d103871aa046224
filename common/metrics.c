/* metrics: a thread-safe registry of Prometheus counters, gauges and histograms, rendered in the
 * text exposition format 0.0.4 for GET /metrics. */
#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_GAUGE_FN, KIND_HISTOGRAM } metric_kind;

struct hf_counter {
    _Atomic uint64_t value;
};

struct hf_gauge {
    _Atomic int64_t value;
};

struct hf_histogram {
    double *bounds;
    size_t nbounds;
    _Atomic uint64_t *buckets; /* nbounds + 1 per-bucket (not cumulative) counts; last is +Inf */
    _Atomic uint64_t sum_bits; /* the double sum, as its bit pattern so it can be CAS'd */
};

typedef struct family family;

/* One time series: a family's name with one label set. */
typedef struct series {
    family *fam;
    char *labels; /* "" when none */
    metric_kind kind;
    union {
        hf_counter counter;
        hf_gauge gauge;
        struct {
            int64_t (*fn)(void *arg);
            void *arg;
        } gauge_fn;
        hf_histogram histogram;
    } u;
    struct series *next_in_family;
    struct series *next_in_bucket; /* hash chain */
    uint64_t hash;
} series;

/* All series of one name: one # HELP / # TYPE block. */
struct family {
    char *name;
    char *help;
    metric_kind kind; /* KIND_GAUGE_FN families are typed KIND_GAUGE: both render as gauge */
    series *first, *last;
    family *next;
};

struct hf_metrics {
    pthread_mutex_t lock; /* guards everything below; metric values are atomics */
    family *first, *last;
    series **table; /* hash of (name, labels) -> series */
    size_t nbuckets;
    size_t nseries;
};

hf_metrics *hf_metrics_new(void)
{
    hf_metrics *m = xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    m->nbuckets = 64;
    m->table = xcalloc(m->nbuckets, sizeof *m->table);
    return m;
}

void hf_metrics_free(hf_metrics *m)
{
    if (!m)
        return;
    family *f = m->first;
    while (f) {
        series *s = f->first;
        while (s) {
            series *next = s->next_in_family;
            if (s->kind == KIND_HISTOGRAM) {
                free(s->u.histogram.bounds);
                free(s->u.histogram.buckets);
            }
            free(s->labels);
            free(s);
            s = next;
        }
        family *next = f->next;
        free(f->name);
        free(f->help);
        free(f);
        f = next;
    }
    free(m->table);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* A programming error (type clash, bad name, bad bounds): report and abort. */
static _Noreturn void misuse(const char *what, const char *name)
{
    fprintf(stderr, "hookflow: metrics: %s: %s\n", name ? name : "(null)", what);
    abort();
}

static bool valid_name(const char *name)
{
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (p != name && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* FNV-1a over name, a separator that cannot occur in a name, and labels. */
static uint64_t series_hash(const char *name, const char *labels)
{
    uint64_t h = 14695981039346656037ULL;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ '{') * 1099511628211ULL;
    for (const char *p = labels; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

/* Caller holds m->lock. */
static series *find_series(hf_metrics *m, const char *name, const char *labels, uint64_t hash)
{
    for (series *s = m->table[hash % m->nbuckets]; s; s = s->next_in_bucket)
        if (s->hash == hash && strcmp(s->fam->name, name) == 0 && strcmp(s->labels, labels) == 0)
            return s;
    return NULL;
}

/* Caller holds m->lock. Doubles the table when it averages more than one series per bucket. */
static void grow_table(hf_metrics *m)
{
    if (m->nseries <= m->nbuckets)
        return;
    size_t nb = m->nbuckets * 2;
    series **table = xcalloc(nb, sizeof *table);
    for (size_t i = 0; i < m->nbuckets; i++) {
        series *s = m->table[i];
        while (s) {
            series *next = s->next_in_bucket;
            s->next_in_bucket = table[s->hash % nb];
            table[s->hash % nb] = s;
            s = next;
        }
    }
    free(m->table);
    m->table = table;
    m->nbuckets = nb;
}

static metric_kind family_kind(metric_kind k)
{
    return k == KIND_GAUGE_FN ? KIND_GAUGE : k;
}

/* True when b is a followed by one of the suffixes of a histogram's samples. */
static bool histogram_sample_of(const char *a, const char *b)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    size_t n = strlen(a);
    if (strncmp(a, b, n) != 0)
        return false;
    for (size_t i = 0; i < HF_ARRAY_LEN(suffixes); i++)
        if (strcmp(b + n, suffixes[i]) == 0)
            return true;
    return false;
}

/* True when a new family (name, kind) would render a sample name another family renders: a
 * histogram "lat" writes lat_bucket, lat_sum and lat_count. Caller holds m->lock. */
static bool renders_clash(const hf_metrics *m, const char *name, metric_kind kind)
{
    for (const family *f = m->first; f; f = f->next) {
        if (f->kind == KIND_HISTOGRAM && histogram_sample_of(f->name, name))
            return true;
        if (kind == KIND_HISTOGRAM && histogram_sample_of(name, f->name))
            return true;
    }
    return false;
}

/* Returns the series for (name, labels), creating it (and its family) as kind if new; *created
 * says which. Caller holds m->lock. Aborts on a type clash. */
static series *get_or_create(hf_metrics *m, const char *name, const char *help, const char *labels,
                             metric_kind kind, bool *created)
{
    if (!valid_name(name))
        misuse("invalid metric name", name);
    if (!labels)
        labels = "";
    uint64_t hash = series_hash(name, labels);
    series *s = find_series(m, name, labels, hash);
    if (s) {
        if (s->kind != kind)
            misuse("registered twice with different types", name);
        *created = false;
        return s;
    }
    family *f = m->first;
    while (f && strcmp(f->name, name) != 0)
        f = f->next;
    if (f && f->kind != family_kind(kind))
        misuse("registered twice with different types", name);
    if (!f && renders_clash(m, name, family_kind(kind)))
        misuse("clashes with a histogram's _bucket/_sum/_count samples", name);
    if (!f) {
        f = xcalloc(1, sizeof *f);
        f->name = xstrdup(name);
        f->help = xstrdup(help ? help : "");
        f->kind = family_kind(kind);
        if (m->last)
            m->last->next = f;
        else
            m->first = f;
        m->last = f;
    }
    s = xcalloc(1, sizeof *s);
    s->fam = f;
    s->labels = xstrdup(labels);
    s->kind = kind;
    s->hash = hash;
    if (f->last)
        f->last->next_in_family = s;
    else
        f->first = s;
    f->last = s;
    s->next_in_bucket = m->table[hash % m->nbuckets];
    m->table[hash % m->nbuckets] = s;
    m->nseries++;
    grow_table(m);
    *created = true;
    return s;
}

hf_counter *hf_metrics_counter(hf_metrics *m, const char *name, const char *help,
                               const char *labels)
{
    bool created;
    pthread_mutex_lock(&m->lock);
    series *s = get_or_create(m, name, help, labels, KIND_COUNTER, &created);
    if (created)
        atomic_init(&s->u.counter.value, 0);
    pthread_mutex_unlock(&m->lock);
    return &s->u.counter;
}

void hf_counter_add(hf_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

uint64_t hf_counter_value(const hf_counter *c)
{
    return atomic_load_explicit(&((hf_counter *)c)->value, memory_order_relaxed);
}

hf_gauge *hf_metrics_gauge(hf_metrics *m, const char *name, const char *help, const char *labels)
{
    bool created;
    pthread_mutex_lock(&m->lock);
    series *s = get_or_create(m, name, help, labels, KIND_GAUGE, &created);
    if (created)
        atomic_init(&s->u.gauge.value, 0);
    pthread_mutex_unlock(&m->lock);
    return &s->u.gauge;
}

void hf_gauge_set(hf_gauge *g, int64_t v)
{
    atomic_store_explicit(&g->value, v, memory_order_relaxed);
}

void hf_gauge_add(hf_gauge *g, int64_t delta)
{
    atomic_fetch_add_explicit(&g->value, delta, memory_order_relaxed);
}

int64_t hf_gauge_value(const hf_gauge *g)
{
    return atomic_load_explicit(&((hf_gauge *)g)->value, memory_order_relaxed);
}

void hf_metrics_gauge_fn(hf_metrics *m, const char *name, const char *help, const char *labels,
                         int64_t (*fn)(void *arg), void *arg)
{
    bool created;
    pthread_mutex_lock(&m->lock);
    series *s = get_or_create(m, name, help, labels, KIND_GAUGE_FN, &created);
    s->u.gauge_fn.fn = fn;
    s->u.gauge_fn.arg = arg;
    pthread_mutex_unlock(&m->lock);
}

hf_histogram *hf_metrics_histogram(hf_metrics *m, const char *name, const char *help,
                                   const char *labels, const double *bounds, size_t nbounds)
{
    /* The +Inf bucket is always there; a caller's explicit one would be a duplicate. */
    if (nbounds > 0 && isinf(bounds[nbounds - 1]) && bounds[nbounds - 1] > 0)
        nbounds--;
    for (size_t i = 0; i < nbounds; i++)
        if (isnan(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            misuse("histogram bounds must be strictly ascending numbers", name);
    bool created;
    pthread_mutex_lock(&m->lock);
    series *s = get_or_create(m, name, help, labels, KIND_HISTOGRAM, &created);
    hf_histogram *h = &s->u.histogram;
    if (created) {
        h->nbounds = nbounds;
        h->bounds = xmalloc((nbounds ? nbounds : 1) * sizeof *h->bounds);
        if (nbounds)
            memcpy(h->bounds, bounds, nbounds * sizeof *bounds);
        h->buckets = xmalloc((nbounds + 1) * sizeof *h->buckets);
        for (size_t i = 0; i <= nbounds; i++)
            atomic_init(&h->buckets[i], 0);
        double zero = 0.0;
        uint64_t bits;
        memcpy(&bits, &zero, sizeof bits);
        atomic_init(&h->sum_bits, bits);
    }
    pthread_mutex_unlock(&m->lock);
    return h;
}

void hf_histogram_observe(hf_histogram *h, double v)
{
    if (isnan(v))
        return;
    /* The first bucket whose upper bound is >= v (Prometheus buckets are "less or equal"). */
    size_t lo = 0, hi = h->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
    for (;;) {
        double sum;
        memcpy(&sum, &old, sizeof sum);
        sum += v;
        uint64_t bits;
        memcpy(&bits, &sum, sizeof bits);
        if (atomic_compare_exchange_weak_explicit(&h->sum_bits, &old, bits, memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
}

/* Prometheus float text: the shortest of %.15g/%.17g that reads back exactly, +Inf/-Inf/NaN. */
static void append_double(hf_buf *out, double v)
{
    if (isnan(v)) {
        hf_buf_puts(out, "NaN");
        return;
    }
    if (isinf(v)) {
        hf_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char text[40];
    snprintf(text, sizeof text, "%.15g", v);
    if (strtod(text, NULL) != v)
        snprintf(text, sizeof text, "%.17g", v);
    hf_buf_puts(out, text);
}

/* HELP text escapes backslash and newline only. */
static void append_help(hf_buf *out, const char *help)
{
    for (const char *p = help; *p; p++) {
        if (*p == '\\')
            hf_buf_puts(out, "\\\\");
        else if (*p == '\n')
            hf_buf_puts(out, "\\n");
        else
            hf_buf_putc(out, *p);
    }
}

/* name{labels} or name{labels,le="x"}; braces left out when there are no labels at all. */
static void append_series_name(hf_buf *out, const char *name, const char *suffix,
                               const char *labels, const double *le)
{
    hf_buf_puts(out, name);
    hf_buf_puts(out, suffix);
    if (!*labels && !le)
        return;
    hf_buf_putc(out, '{');
    hf_buf_puts(out, labels);
    if (le) {
        hf_buf_puts(out, *labels ? ",le=\"" : "le=\"");
        append_double(out, *le);
        hf_buf_putc(out, '"');
    }
    hf_buf_putc(out, '}');
}

static void render_histogram(hf_buf *out, const char *name, const series *s)
{
    const hf_histogram *h = &s->u.histogram;
    /* _count is the +Inf bucket by construction, so the two always agree in one scrape. */
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= h->nbounds; i++) {
        cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        double le = i < h->nbounds ? h->bounds[i] : INFINITY;
        append_series_name(out, name, "_bucket", s->labels, &le);
        hf_buf_printf(out, " %" PRIu64 "\n", cumulative);
    }
    uint64_t bits = atomic_load_explicit(&((hf_histogram *)h)->sum_bits, memory_order_relaxed);
    double sum;
    memcpy(&sum, &bits, sizeof sum);
    append_series_name(out, name, "_sum", s->labels, NULL);
    hf_buf_putc(out, ' ');
    append_double(out, sum);
    hf_buf_putc(out, '\n');
    append_series_name(out, name, "_count", s->labels, NULL);
    hf_buf_printf(out, " %" PRIu64 "\n", cumulative);
}

void hf_metrics_render(hf_metrics *m, hf_buf *out)
{
    static const char *const type_names[] = {
        [KIND_COUNTER] = "counter", [KIND_GAUGE] = "gauge", [KIND_HISTOGRAM] = "histogram"};
    pthread_mutex_lock(&m->lock);
    for (const family *f = m->first; f; f = f->next) {
        hf_buf_printf(out, "# HELP %s", f->name);
        if (*f->help) {
            hf_buf_putc(out, ' ');
            append_help(out, f->help);
        }
        hf_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_names[f->kind]);
        for (const series *s = f->first; s; s = s->next_in_family) {
            switch (s->kind) {
            case KIND_COUNTER:
                append_series_name(out, f->name, "", s->labels, NULL);
                hf_buf_printf(out, " %" PRIu64 "\n", hf_counter_value(&s->u.counter));
                break;
            case KIND_GAUGE:
                append_series_name(out, f->name, "", s->labels, NULL);
                hf_buf_printf(out, " %" PRId64 "\n", hf_gauge_value(&s->u.gauge));
                break;
            case KIND_GAUGE_FN:
                append_series_name(out, f->name, "", s->labels, NULL);
                hf_buf_printf(out, " %" PRId64 "\n",
                              s->u.gauge_fn.fn ? s->u.gauge_fn.fn(s->u.gauge_fn.arg) : 0);
                break;
            case KIND_HISTOGRAM:
                render_histogram(out, f->name, s);
                break;
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
}

void hf_metrics_escape_label(hf_buf *out, const char *value)
{
    if (!value)
        return;
    for (const char *p = value; *p; p++) {
        if (*p == '\\')
            hf_buf_puts(out, "\\\\");
        else if (*p == '"')
            hf_buf_puts(out, "\\\"");
        else if (*p == '\n')
            hf_buf_puts(out, "\\n");
        else
            hf_buf_putc(out, *p);
    }
}
