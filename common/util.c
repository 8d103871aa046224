/* util: allocation that aborts on OOM, a growable byte buffer, and small helpers shared by all. */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static _Noreturn void oom(size_t n)
{
    fprintf(stderr, "%s: out of memory allocating %zu bytes\n", program_invocation_short_name, n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (!p)
        oom(count * n);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    hf_buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    hf_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return hf_buf_steal(&b);
}

char *xconcat(const char *first, ...)
{
    va_list ap;
    size_t n = 0;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        n += strlen(s);
    va_end(ap);
    char *out = xmalloc(n + 1), *at = out;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *)) {
        size_t len = strlen(s);
        memcpy(at, s, len);
        at += len;
    }
    va_end(ap);
    *at = '\0';
    return out;
}

void hf_die(const char *fmt, ...)
{
    va_list ap;
    /* The program's own name, as its other start-up errors give it ("hookflow-ingest: ..."). */
    fprintf(stderr, "%s: ", program_invocation_short_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

int hf_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void hf_buf_reserve(hf_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1) /* a size no allocation can have: as out of memory */
        oom(SIZE_MAX);
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void hf_buf_append(hf_buf *b, const void *p, size_t n)
{
    hf_buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void hf_buf_puts(hf_buf *b, const char *s)
{
    hf_buf_append(b, s, strlen(s));
}

void hf_buf_putc(hf_buf *b, char c)
{
    hf_buf_append(b, &c, 1);
}

void hf_buf_vprintf(hf_buf *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0)
        return;
    hf_buf_reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void hf_buf_printf(hf_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    hf_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void hf_buf_reset(hf_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void hf_buf_free(hf_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *hf_buf_steal(hf_buf *b)
{
    if (!b->data)
        hf_buf_reserve(b, 0), b->data[0] = '\0';
    char *p = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

char *hf_read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        hf_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    hf_buf b = {0};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        hf_buf_append(&b, chunk, n);
    if (ferror(f)) {
        hf_err(err, errlen, "cannot read %s: %s", path, strerror(errno));
        fclose(f);
        hf_buf_free(&b);
        return NULL;
    }
    fclose(f);
    if (len)
        *len = b.len;
    return hf_buf_steal(&b);
}

int hf_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen)
{
    char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        hf_err(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        goto done;
    }
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            hf_err(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            goto done;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        hf_err(err, errlen, "cannot flush %s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        hf_err(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    rc = 0;
done:
    free(tmp);
    return rc;
}

int64_t hf_now_ms(void)
{
    return hf_now_us() / 1000;
}

int64_t hf_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t hf_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void hf_format_rfc3339(int64_t wall_ms, char *out, size_t outlen)
{
    /* RFC 3339 years have exactly four digits: clamp to 0000-01-01 .. 9999-12-31 so that no
     * input overflows the text (strftime's %Y neither pads nor fits larger years). */
    const int64_t min_ms = -62167219200000LL, max_ms = 253402300799999LL;
    if (wall_ms < min_ms)
        wall_ms = min_ms;
    else if (wall_ms > max_ms)
        wall_ms = max_ms;
    time_t secs = (time_t)(wall_ms / 1000);
    int ms = (int)(wall_ms % 1000);
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    /* The civil date from the day number (H. Hinnant's days-to-civil algorithm): this runs for
     * every event, and gmtime_r takes the process-wide time zone lock on each call. */
    int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
    int64_t sod = secs - days * 86400;
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int day = (int)(doy - (153 * mp + 2) / 5 + 1);
    int month = (int)(mp < 10 ? mp + 3 : mp - 9);
    int year = (int)(yoe + era * 400 + (month <= 2));
    const int fields[] = {year / 100,        year % 100,           month,          day,
                          (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60)};
    const char seps[] = {0, 0, '-', '-', 'T', ':', ':'};
    char text[25]; /* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
    char *p = text;
    for (size_t i = 0; i < HF_ARRAY_LEN(fields); i++) {
        if (seps[i])
            *p++ = seps[i];
        *p++ = (char)('0' + fields[i] / 10);
        *p++ = (char)('0' + fields[i] % 10);
    }
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    *p++ = 'Z';
    *p = '\0';
    if (outlen == 0)
        return;
    size_t n = outlen - 1 < 24 ? outlen - 1 : 24; /* truncates as snprintf would */
    memcpy(out, text, n);
    out[n] = '\0';
}

bool hf_strieq(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

bool hf_parse_ll(const char *s, long long *out)
{
    /* strtoll would also skip leading white space; a whole number starts with a sign or digit. */
    if (!s || !(isdigit((unsigned char)*s) || *s == '-' || *s == '+'))
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* Reads exactly n decimal digits at *p, advancing it. */
static bool read_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (y >= 1). */
static int64_t days_since_epoch(int y, int m, int d)
{
    static const int before_month[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    int64_t py = y - 1; /* whole years before y */
    int64_t days = py * 365 + py / 4 - py / 100 + py / 400;
    days += before_month[m - 1] + (m > 2 && is_leap(y)) + (d - 1);
    return days - 719162; /* days from 0001-01-01 to 1970-01-01 */
}

#define MS_YEAR_1000 (-30610224000000LL)  /* 1000-01-01T00:00:00.000Z */
#define MS_YEAR_10000 (253402300800000LL) /* 10000-01-01T00:00:00.000Z */

/* hf_parse_rfc3339's work: the UTC seconds of s, its fraction's first six digits as
 * microseconds and whether nonzero digits follow them. */
static bool parse_rfc3339(const char *s, int64_t *secs_out, int *us_out, bool *beyond_out)
{
    static const int month_days[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (!s)
        return false;
    const char *p = s;
    int y, mo, d, h, mi, sec, us = 0;
    bool beyond = false;
    if (!read_digits(&p, 4, &y) || *p++ != '-' || !read_digits(&p, 2, &mo) || *p++ != '-' ||
        !read_digits(&p, 2, &d))
        return false;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return false;
    p++;
    if (!read_digits(&p, 2, &h) || *p++ != ':' || !read_digits(&p, 2, &mi) || *p++ != ':' ||
        !read_digits(&p, 2, &sec))
        return false;
    if (y < 1000 || mo < 1 || mo > 12 || d < 1 || d > month_days[mo - 1] ||
        (mo == 2 && d == 29 && !is_leap(y)) || h > 23 || mi > 59 || sec > 60)
        return false;
    if (*p == '.') {
        p++;
        int ndigits = 0;
        while (*p >= '0' && *p <= '9') {
            if (ndigits < 6)
                us = us * 10 + (*p - '0');
            else if (*p != '0')
                beyond = true;
            ndigits++;
            p++;
        }
        if (ndigits == 0)
            return false;
        for (int i = ndigits; i < 6; i++)
            us *= 10;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
        if (!read_digits(&p, 2, &oh))
            return false;
        /* +HH, +HHMM or +HH:MM: a colon must be followed by the minutes, and nothing else may
         * follow them. */
        if (*p == ':') {
            p++;
            if (!read_digits(&p, 2, &om))
                return false;
        } else if (*p && !read_digits(&p, 2, &om)) {
            return false;
        }
        if (oh > 23 || om > 59)
            return false;
        offset_min = sign * (oh * 60 + om);
    }
    if (*p != '\0')
        return false;
    *secs_out =
        days_since_epoch(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - (int64_t)offset_min * 60;
    *us_out = us;
    *beyond_out = beyond;
    return true;
}

bool hf_rfc3339_has_offset(const char *s)
{
    size_t n = strlen(s);
    if (n > 19 && (s[n - 1] == 'Z' || s[n - 1] == 'z'))
        return true;
    if (n < 19 + 6)
        return false;
    const char *o = s + n - 6;
    return (o[0] == '+' || o[0] == '-') && o[1] >= '0' && o[1] <= '9' && o[2] >= '0' &&
           o[2] <= '9' && o[3] == ':' && o[4] >= '0' && o[4] <= '9' && o[5] >= '0' && o[5] <= '9';
}

size_t hf_utf8_length(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

bool hf_parse_rfc3339(const char *s, int64_t *ms)
{
    int64_t secs;
    int us;
    bool beyond;
    if (!parse_rfc3339(s, &secs, &us, &beyond))
        return false;
    int64_t v = secs * 1000 + us / 1000;
    if (v < MS_YEAR_1000 || v >= MS_YEAR_10000)
        return false;
    *ms = v;
    return true;
}

bool hf_parse_rfc3339_us(const char *s, int64_t *us_out)
{
    int64_t secs;
    int us;
    bool beyond;
    if (!parse_rfc3339(s, &secs, &us, &beyond))
        return false;
    int64_t v = secs * 1000000 + us + beyond; /* a finer instant lies within the next µs */
    if (v < MS_YEAR_1000 * 1000 || v >= MS_YEAR_10000 * 1000)
        return false;
    *us_out = v;
    return true;
}

size_t hf_utf8_char_len(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    unsigned cp, min;
    size_t len;
    if (n == 0)
        return 0;
    if (u[0] < 0x80)
        return 1;
    if (u[0] >= 0xC2 && u[0] <= 0xDF)
        len = 2, cp = u[0] & 0x1F, min = 0x80;
    else if ((u[0] & 0xF0) == 0xE0)
        len = 3, cp = u[0] & 0x0F, min = 0x800;
    else if (u[0] >= 0xF0 && u[0] <= 0xF4)
        len = 4, cp = u[0] & 0x07, min = 0x10000;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((u[k] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (u[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

void hf_buf_put_quoted(hf_buf *out, const char *s, size_t max)
{
    size_t n = strlen(s), used = 0, i = 0;
    while (i < n && used < max) {
        unsigned char c = (unsigned char)s[i];
        size_t len = hf_utf8_char_len(s + i, n - i);
        if (len == 0) {
            hf_buf_putc(out, '?');
            i++;
        } else if (len == 1 && (c < 0x20 || c == 0x7F)) {
            hf_buf_putc(out, ' ');
            i++;
        } else {
            hf_buf_append(out, s + i, len);
            i += len;
        }
        used++;
    }
    if (i < n)
        hf_buf_puts(out, "...");
}

void hf_signals_wait_stop(const sigset_t *set, int (*reload)(void *arg, char *err, size_t errlen),
                          void *arg)
{
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) != 0)
            continue;
        if (sig != SIGHUP)
            return;
        char err[512] = "";
        if (reload(arg, err, sizeof err) == 0)
            hf_log_kv(HF_LOG_INFO, "secrets.reloaded", NULL);
        else
            hf_log_kv(HF_LOG_ERROR, "secrets.reload_failed", "error", err, "msg",
                      "keeping the previous secrets", NULL);
    }
}

void hf_signals_take(sigset_t *set, bool hup)
{
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    sigemptyset(set);
    for (size_t i = 0; i < (hup ? 3u : 2u); i++) {
        signal(sigs[i], SIG_DFL);
        sigaddset(set, sigs[i]);
    }
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}
