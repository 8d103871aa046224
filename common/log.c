/* log: levelled, structured log lines (json or text) on stderr, with secret redaction. */
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static struct {
    char program[32];
    atomic_int level; /* read on every log call, without the lock */
    hf_log_format format;
    int fd;
    pthread_mutex_t lock; /* guards program, format, fd and secrets */
    char **secrets;
    size_t *secret_lens;
    size_t nsecrets;
} g_log = {.program = "hookflow",
           .level = HF_LOG_INFO,
           .format = HF_LOG_JSON,
           .fd = 2,
           .lock = PTHREAD_MUTEX_INITIALIZER};

bool hf_log_level_parse(const char *s, hf_log_level *out)
{
    for (size_t i = 0; i < HF_ARRAY_LEN(level_names); i++) {
        if (hf_strieq(s, level_names[i])) {
            *out = (hf_log_level)i;
            return true;
        }
    }
    return false;
}

bool hf_log_format_parse(const char *s, hf_log_format *out)
{
    if (hf_strieq(s, "json"))
        *out = HF_LOG_JSON;
    else if (hf_strieq(s, "text"))
        *out = HF_LOG_TEXT;
    else
        return false;
    return true;
}

void hf_log_init_from_config(const char *program, const char *level_text, const char *format_text)
{
    hf_log_level level = HF_LOG_INFO;
    hf_log_format format = HF_LOG_JSON;
    (void)hf_log_level_parse(level_text, &level);
    (void)hf_log_format_parse(format_text, &format);
    hf_log_init(program, level, format);
}

void hf_log_init(const char *program, hf_log_level level, hf_log_format format)
{
    pthread_mutex_lock(&g_log.lock);
    snprintf(g_log.program, sizeof g_log.program, "%s", program);
    g_log.format = format;
    pthread_mutex_unlock(&g_log.lock);
    atomic_store_explicit(&g_log.level, (int)level, memory_order_relaxed);
}

bool hf_log_enabled(hf_log_level level)
{
    return (int)level >= atomic_load_explicit(&g_log.level, memory_order_relaxed);
}

void hf_log_set_fd(int fd)
{
    pthread_mutex_lock(&g_log.lock);
    g_log.fd = fd;
    pthread_mutex_unlock(&g_log.lock);
}

void hf_log_register_secret(const char *secret, size_t len)
{
    if (!secret || len < 4)
        return;
    pthread_mutex_lock(&g_log.lock);
    for (size_t i = 0; i < g_log.nsecrets; i++) {
        if (g_log.secret_lens[i] == len && memcmp(g_log.secrets[i], secret, len) == 0) {
            pthread_mutex_unlock(&g_log.lock);
            return;
        }
    }
    g_log.secrets = xrealloc(g_log.secrets, (g_log.nsecrets + 1) * sizeof *g_log.secrets);
    g_log.secret_lens =
        xrealloc(g_log.secret_lens, (g_log.nsecrets + 1) * sizeof *g_log.secret_lens);
    g_log.secrets[g_log.nsecrets] = xstrndup(secret, len);
    g_log.secret_lens[g_log.nsecrets] = len;
    g_log.nsecrets++;
    pthread_mutex_unlock(&g_log.lock);
}

void hf_log_forget_secrets(void)
{
    pthread_mutex_lock(&g_log.lock);
    for (size_t i = 0; i < g_log.nsecrets; i++) {
        memset(g_log.secrets[i], 0, g_log.secret_lens[i]);
        free(g_log.secrets[i]);
    }
    free(g_log.secrets);
    free(g_log.secret_lens);
    g_log.secrets = NULL;
    g_log.secret_lens = NULL;
    g_log.nsecrets = 0;
    pthread_mutex_unlock(&g_log.lock);
}

/* Appends s with every registered secret replaced, the longest one where several start at the
 * same place (a secret that begins with another must not leave its tail). Caller holds
 * g_log.lock. */
static void append_redacted(hf_buf *out, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t hit = 0;
        for (size_t k = 0; k < g_log.nsecrets; k++) {
            size_t sl = g_log.secret_lens[k];
            if (sl > hit && sl <= n - i && memcmp(s + i, g_log.secrets[k], sl) == 0)
                hit = sl;
        }
        if (hit) {
            hf_buf_puts(out, "[redacted]");
            i += hit;
        } else {
            hf_buf_putc(out, s[i++]);
        }
    }
}

/* s as a JSON string; bytes that are not well-formed UTF-8 become U+FFFD, so that a line stays
 * valid JSON whatever a platform or a client sent. */
static void append_json_string(hf_buf *out, const char *s)
{
    hf_buf_putc(out, '"');
    const unsigned char *end = (const unsigned char *)s + strlen(s);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 0x80) {
            size_t len = hf_utf8_char_len((const char *)p, (size_t)(end - p));
            if (len == 0) {
                hf_buf_puts(out, "\\ufffd");
            } else {
                hf_buf_append(out, p, len);
                p += len - 1;
            }
            continue;
        }
        switch (*p) {
        case '"':
            hf_buf_puts(out, "\\\"");
            break;
        case '\\':
            hf_buf_puts(out, "\\\\");
            break;
        case '\n':
            hf_buf_puts(out, "\\n");
            break;
        case '\r':
            hf_buf_puts(out, "\\r");
            break;
        case '\t':
            hf_buf_puts(out, "\\t");
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                hf_buf_printf(out, "\\u%04x", *p);
            else
                hf_buf_putc(out, (char)*p);
        }
    }
    hf_buf_putc(out, '"');
}

static void append_text_value(hf_buf *out, const char *s)
{
    bool quote = strpbrk(s, " \"=") != NULL || *s == '\0';
    if (quote)
        hf_buf_putc(out, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            hf_buf_putc(out, '\\');
        if (*p < 0x20 || *p == 0x7f)
            hf_buf_printf(out, "\\x%02x", *p);
        else
            hf_buf_putc(out, (char)*p);
    }
    if (quote)
        hf_buf_putc(out, '"');
}

/* s with every registered secret replaced, in scratch (valid until its next use). Caller holds
 * g_log.lock. */
static const char *redacted(hf_buf *scratch, const char *s)
{
    hf_buf_reset(scratch);
    hf_buf_append(scratch, "", 0); /* allocated and terminated even when s is empty */
    append_redacted(scratch, s, strlen(s));
    return scratch->data;
}

static void emit(hf_log_level level, const char *event, const char **kv, size_t nkv)
{
    char ts[40];
    hf_format_rfc3339(hf_wall_ms(), ts, sizeof ts);
    hf_buf line = {0}, scratch = {0};
    /* Values are redacted before they are escaped: escaping changes a secret that holds a quote,
     * backslash or control character, and the escaped form would slip past a match on the line. */
    pthread_mutex_lock(&g_log.lock);
    if (g_log.format == HF_LOG_JSON) {
        hf_buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"service\":", ts,
                      level_names[level]);
        append_json_string(&line, g_log.program);
        hf_buf_puts(&line, ",\"event\":");
        append_json_string(&line, redacted(&scratch, event));
        for (size_t i = 0; i + 1 < nkv; i += 2) {
            hf_buf_putc(&line, ',');
            append_json_string(&line, redacted(&scratch, kv[i]));
            hf_buf_putc(&line, ':');
            append_json_string(&line, redacted(&scratch, kv[i + 1] ? kv[i + 1] : ""));
        }
        hf_buf_puts(&line, "}\n");
    } else {
        hf_buf_printf(&line, "%s %-5s %s ", ts, level_names[level], g_log.program);
        hf_buf_puts(&line, redacted(&scratch, event));
        for (size_t i = 0; i + 1 < nkv; i += 2) {
            hf_buf_printf(&line, " %s=", redacted(&scratch, kv[i]));
            append_text_value(&line, redacted(&scratch, kv[i + 1] ? kv[i + 1] : ""));
        }
        hf_buf_putc(&line, '\n');
    }
    /* Written whole under the lock: a pipe splits a write longer than PIPE_BUF, and lines of
     * several threads would interleave. A non-blocking descriptor (inherited) is waited for
     * rather than the rest of the line dropped (the next line would be glued to it). */
    size_t off = 0;
    while (off < line.len) {
        ssize_t w = write(g_log.fd, line.data + off, line.len - off);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = g_log.fd, .events = POLLOUT};
            poll(&pfd, 1, 1000);
        } else {
            break; /* closed or failing: nothing to tell it to */
        }
    }
    pthread_mutex_unlock(&g_log.lock);
    hf_buf_free(&scratch);
    hf_buf_free(&line);
}

void hf_log_kv(hf_log_level level, const char *event, ...)
{
    if (!hf_log_enabled(level))
        return;
    const char *kv[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, event);
    const char *s;
    while ((s = va_arg(ap, const char *)) != NULL && n < HF_ARRAY_LEN(kv))
        kv[n++] = s;
    va_end(ap);
    emit(level, event, kv, n);
}

void hf_logf(hf_log_level level, const char *event, const char *fmt, ...)
{
    if (!hf_log_enabled(level))
        return;
    hf_buf msg = {0};
    va_list ap;
    va_start(ap, fmt);
    hf_buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    const char *kv[2] = {"msg", msg.data ? msg.data : ""};
    emit(level, event, kv, 2);
    hf_buf_free(&msg);
}
