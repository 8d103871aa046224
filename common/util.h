/* util: allocation that aborts on OOM, a growable byte buffer, and small helpers shared by all. */
#ifndef HF_UTIL_H
#define HF_UTIL_H

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HF_MUST_CHECK __attribute__((warn_unused_result))
#define HF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define HF_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Allocation never returns NULL: on OOM the process aborts with a message. */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) HF_PRINTF(1, 2);
/* The strings up to a NULL, joined: xconcat("meta:", id, NULL). A fraction of what formatting
 * costs, for the identifiers built on every webhook. */
char *xconcat(const char *first, ...) __attribute__((sentinel));

/* Prints "<prog>: <message>" to stderr and exits 1. Start-up only. */
_Noreturn void hf_die(const char *fmt, ...) HF_PRINTF(1, 2);

/* For a main thread that takes SIGTERM and SIGINT (and SIGHUP when hup) with sigwait: resets
 * them to their defaults (an inherited SIG_IGN would hide them from sigwait), blocks them here
 * and in every thread started later, fills *set with them, and ignores SIGPIPE. */
void hf_signals_take(sigset_t *set, bool hup);

/* Waits for SIGTERM or SIGINT among set (taken with hup true). On each SIGHUP meanwhile it calls
 * reload(arg, err, errlen) and logs "secrets.reloaded", or "secrets.reload_failed" with the
 * error when reload returned non-zero (the program keeps what it had). */
void hf_signals_wait_stop(const sigset_t *set, int (*reload)(void *arg, char *err, size_t errlen),
                          void *arg);

/* Writes the formatted reason into err (if not NULL); always returns -1 for `return hf_err(...)`.
 */
int hf_err(char *err, size_t errlen, const char *fmt, ...) HF_PRINTF(3, 4);

/* A growable byte buffer; always NUL-terminated after data[len]. Zero-initialise to start. */
typedef struct hf_buf {
    char *data;
    size_t len;
    size_t cap;
} hf_buf;

void hf_buf_reserve(hf_buf *b, size_t extra);
void hf_buf_append(hf_buf *b, const void *p, size_t n);
void hf_buf_puts(hf_buf *b, const char *s);
void hf_buf_putc(hf_buf *b, char c);
void hf_buf_printf(hf_buf *b, const char *fmt, ...) HF_PRINTF(2, 3);
void hf_buf_vprintf(hf_buf *b, const char *fmt, va_list ap) HF_PRINTF(2, 0);
void hf_buf_reset(hf_buf *b);
void hf_buf_free(hf_buf *b);
/* Hands the data to the caller (free() it); the buffer is left empty. */
char *hf_buf_steal(hf_buf *b);

/* Reads a whole file (NUL-terminated). Returns NULL and writes err on failure. Caller frees. */
char *hf_read_file(const char *path, size_t *len, char *err, size_t errlen);

/* Writes a file atomically (temp file + fsync + rename). */
HF_MUST_CHECK int hf_write_file_atomic(const char *path, const void *data, size_t len, char *err,
                                       size_t errlen);

/* Monotonic and wall clocks. */
int64_t hf_now_ms(void);
int64_t hf_now_us(void);
int64_t hf_wall_ms(void);
/* Formats a wall-clock millisecond time as RFC 3339 UTC with milliseconds into out (>= 32 bytes).
 */
void hf_format_rfc3339(int64_t wall_ms, char *out, size_t outlen);

/* Parses an ISO 8601 / RFC 3339 date-time "YYYY-MM-DDTHH:MM:SS[.frac][Z|+HH:MM|+HHMM|+HH]"
 * (no zone means UTC) into epoch milliseconds (fraction truncated to ms). False when it does
 * not parse or lies outside years 1000-9999. */
bool hf_parse_rfc3339(const char *s, int64_t *ms);

/* hf_parse_rfc3339 to epoch microseconds, as PostgreSQL keeps time; a finer fraction is
 * rounded up to the next microsecond (the first one not before the instant given), so that
 * "from" and "to" filters keep exactly the rows at or after / before it. */
bool hf_parse_rfc3339_us(const char *s, int64_t *us);

/* Whether s, already accepted by hf_parse_rfc3339(_us), carries its offset the way RFC 3339
 * requires it (Z or +hh:mm / -hh:mm): those parsers also take a time without one, as UTC, and
 * +hh or +hhmm, for the platforms' payloads; what people type into hookflow must be exact. */
bool hf_rfc3339_has_offset(const char *s);

/* Characters (code points) of the valid UTF-8 string s. */
size_t hf_utf8_length(const char *s);

/* Length of the well-formed UTF-8 sequence at s (at most n bytes); 0 when there is none there
 * (a stray byte, overlong form, surrogate or code point above U+10FFFF). */
size_t hf_utf8_char_len(const char *s, size_t n);

/* Appends at most max characters of s for quoting untrusted text back in a message: valid UTF-8
 * only (other bytes become '?'), control characters as spaces, "..." when cut. */
void hf_buf_put_quoted(hf_buf *out, const char *s, size_t max);

/* Case-insensitive ASCII comparisons. */
bool hf_strieq(const char *a, const char *b);

/* Parses a whole decimal integer string; false on garbage, overflow or empty. */
bool hf_parse_ll(const char *s, long long *out);

#endif
