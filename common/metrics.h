/* metrics: a thread-safe registry of Prometheus counters, gauges and histograms, rendered in the
 * text exposition format 0.0.4 for GET /metrics. */
#ifndef HF_METRICS_H
#define HF_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include "util.h"

typedef struct hf_metrics hf_metrics;
typedef struct hf_counter hf_counter;
typedef struct hf_gauge hf_gauge;
typedef struct hf_histogram hf_histogram;

/* An empty registry. Caller frees with hf_metrics_free, which also frees every metric in it. */
hf_metrics *hf_metrics_new(void);
void hf_metrics_free(hf_metrics *m);

/* Get-or-create by (name, labels). name is a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*);
 * labels is the label text without braces, e.g. "provider=\"xero\",reason=\"bad_signature\""
 * (build values with hf_metrics_escape_label), or NULL/"" for none. The same name and labels give
 * the same object; help is taken from the first call for a name. Thread-safe. The registry owns
 * the returned object; it lives until hf_metrics_free. Using one name for two metric types, or an
 * invalid name, is a programming error and aborts. */
hf_counter *hf_metrics_counter(hf_metrics *m, const char *name, const char *help,
                               const char *labels);
/* Lock-free. */
void hf_counter_add(hf_counter *c, uint64_t n);
uint64_t hf_counter_value(const hf_counter *c);

hf_gauge *hf_metrics_gauge(hf_metrics *m, const char *name, const char *help, const char *labels);
/* Lock-free. */
void hf_gauge_set(hf_gauge *g, int64_t v);
void hf_gauge_add(hf_gauge *g, int64_t delta);
int64_t hf_gauge_value(const hf_gauge *g);

/* A gauge whose value is fn(arg), called at render time with the registry locked (so fn must not
 * call into the registry). Registering the same name and labels again replaces fn and arg. arg
 * stays the caller's and must outlive the registry (or be replaced). */
void hf_metrics_gauge_fn(hf_metrics *m, const char *name, const char *help, const char *labels,
                         int64_t (*fn)(void *arg), void *arg);

/* bounds: strictly ascending upper bounds (the +Inf bucket is implicit; a trailing +Inf is
 * ignored); copied. A histogram that already exists keeps its bounds. NaN observations are
 * dropped. */
hf_histogram *hf_metrics_histogram(hf_metrics *m, const char *name, const char *help,
                                   const char *labels, const double *bounds, size_t nbounds);
/* Lock-free. */
void hf_histogram_observe(hf_histogram *h, double v);

/* Appends the Prometheus text exposition format 0.0.4: one # HELP and # TYPE per family (name),
 * then its samples; histograms as _bucket{le="..."} (cumulative), _sum, _count. Families and the
 * samples within each in creation order. */
void hf_metrics_render(hf_metrics *m, hf_buf *out);

/* Escapes a label value (backslash, quote, newline) into out for building label text. */
void hf_metrics_escape_label(hf_buf *out, const char *value);

#endif
