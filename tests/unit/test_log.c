/* Unit tests for common/log: json and text line formats, escaping, level filtering and secret
 * redaction, with log lines captured in a temporary file through hf_log_set_fd. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "log.h"

static int g_fd = -1;

/* Empties the capture file; log writes go to the fd's offset, so rewind it too. */
static int reset_capture(void)
{
    return ftruncate(g_fd, 0) == 0 && lseek(g_fd, 0, SEEK_SET) == 0 ? 0 : -1;
}

/* Every test starts with an empty capture file, info level and no secrets. */
static int setup(void **state)
{
    (void)state;
    if (reset_capture() != 0)
        return -1;
    hf_log_init("hf-test", HF_LOG_INFO, HF_LOG_JSON);
    hf_log_forget_secrets();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hf_log_forget_secrets();
    return 0;
}

/* Everything logged since setup, as a malloc'd string. */
static char *captured(void)
{
    hf_buf b = {0};
    char chunk[4096];
    ssize_t n;
    off_t off = 0;
    while ((n = pread(g_fd, chunk, sizeof chunk, off)) > 0) {
        hf_buf_append(&b, chunk, (size_t)n);
        off += n;
    }
    return hf_buf_steal(&b);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Parses the one JSON line captured so far; fails the test unless it is exactly one object. */
static hf_json captured_json(char **text_out)
{
    char *text = captured();
    assert_int_equal(count_lines(text), 1);
    assert_int_equal(text[strlen(text) - 1], '\n');
    char err[256] = "";
    hf_json v = hf_json_parse(text, strlen(text) - 1, err, sizeof err);
    if (!v)
        fail_msg("log line is not JSON (%s): %s", err, text);
    assert_true(hf_json_is_object(v));
    *text_out = text;
    return v;
}

static void test_json_line_has_fields_in_order(void **state)
{
    (void)state;
    hf_log_kv(HF_LOG_WARN, "kafka.error", "topic", "hookflow.webhooks.accounting", "code", "-185",
              NULL);
    char *text;
    hf_json v = captured_json(&text);
    assert_string_equal(hf_json_str(hf_json_get(v, "level")), "warn");
    assert_string_equal(hf_json_str(hf_json_get(v, "service")), "hf-test");
    assert_string_equal(hf_json_str(hf_json_get(v, "event")), "kafka.error");
    assert_string_equal(hf_json_str(hf_json_get(v, "topic")), "hookflow.webhooks.accounting");
    assert_string_equal(hf_json_str(hf_json_get(v, "code")), "-185");
    const char *ts = hf_json_str(hf_json_get(v, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), strlen("2024-01-01T00:00:00.000Z"));
    assert_int_equal(ts[strlen(ts) - 1], 'Z');
    const char *key;
    hf_json_member(v, 0, &key);
    assert_string_equal(key, "ts");
    hf_json_member(v, 4, &key);
    assert_string_equal(key, "topic");
    assert_non_null(strstr(text, ",\"level\":\"warn\",\"service\":\"hf-test\",\"event\":\"kafka"));
    hf_json_free(v);
    free(text);
}

static void test_json_logf_puts_message_in_msg(void **state)
{
    (void)state;
    hf_log_info("startup", "listening on %s:%d", "0.0.0.0", 8080);
    char *text;
    hf_json v = captured_json(&text);
    assert_string_equal(hf_json_str(hf_json_get(v, "msg")), "listening on 0.0.0.0:8080");
    assert_string_equal(hf_json_str(hf_json_get(v, "level")), "info");
    hf_json_free(v);
    free(text);
}

static void test_json_escapes_quotes_backslashes_and_control_chars(void **state)
{
    (void)state;
    const char *nasty = "say \"hi\"\\path\nnext\r\tbell\x07 del\x7f end";
    hf_log_kv(HF_LOG_ERROR, "ev\"ent", "k\"ey", nasty, NULL);
    char *text;
    hf_json v = captured_json(&text);
    assert_string_equal(hf_json_str(hf_json_get(v, "k\"ey")), nasty);
    assert_string_equal(hf_json_str(hf_json_get(v, "event")), "ev\"ent");
    assert_non_null(strstr(text, "say \\\"hi\\\"\\\\path\\nnext\\r\\tbell\\u0007 del\\u007f end"));
    for (const char *p = text; *p && p[1]; p++)
        assert_true((unsigned char)*p >= 0x20); /* no raw control byte before the final \n */
    hf_json_free(v);
    free(text);
}

static void test_kv_list_ends_at_first_null_and_drops_a_dangling_key(void **state)
{
    (void)state;
    hf_log_kv(HF_LOG_INFO, "ev", "dangling", (const char *)NULL, "after", "x", NULL);
    char *text;
    hf_json v = captured_json(&text);
    assert_int_equal(hf_json_len(v), 4); /* ts, level, service, event */
    assert_null(strstr(text, "dangling"));
    assert_null(strstr(text, "after"));
    hf_json_free(v);
    free(text);
}

static void test_empty_event_and_values_are_logged(void **state)
{
    (void)state;
    hf_log_kv(HF_LOG_INFO, "", "", "", NULL);
    char *text;
    hf_json v = captured_json(&text);
    assert_string_equal(hf_json_str(hf_json_get(v, "event")), "");
    assert_string_equal(hf_json_str(hf_json_get(v, "")), "");
    hf_json_free(v);
    free(text);
}

static void test_text_line_format(void **state)
{
    (void)state;
    hf_log_init("hf-test", HF_LOG_DEBUG, HF_LOG_TEXT);
    hf_log_kv(HF_LOG_INFO, "request", "method", "POST", "path", "/api/x", "note", "two words",
              "empty", "", NULL);
    char *text = captured();
    assert_int_equal(count_lines(text), 1);
    /* "<ts> info  hf-test request method=POST path=/api/x note=\"two words\" empty=\"\"" */
    const char *rest = strchr(text, ' ');
    assert_non_null(rest);
    assert_int_equal(rest - text, (long)strlen("2024-01-01T00:00:00.000Z"));
    assert_string_equal(rest, " info  hf-test request method=POST path=/api/x "
                              "note=\"two words\" empty=\"\"\n");
    free(text);
}

static void test_text_escapes_quotes_and_control_chars(void **state)
{
    (void)state;
    hf_log_init("hf-test", HF_LOG_INFO, HF_LOG_TEXT);
    hf_log_kv(HF_LOG_WARN, "ev", "v", "a \"q\" b\\c\nline2\x01", NULL);
    char *text = captured();
    assert_int_equal(count_lines(text), 1);
    assert_non_null(strstr(text, " v=\"a \\\"q\\\" b\\\\c\\x0aline2\\x01\"\n"));
    free(text);
}

static void test_level_filtering(void **state)
{
    (void)state;
    hf_log_init("hf-test", HF_LOG_WARN, HF_LOG_JSON);
    assert_false(hf_log_enabled(HF_LOG_DEBUG));
    assert_false(hf_log_enabled(HF_LOG_INFO));
    assert_true(hf_log_enabled(HF_LOG_WARN));
    assert_true(hf_log_enabled(HF_LOG_ERROR));
    hf_log_debug("dropped.debug", "x");
    hf_log_info("dropped.info", "x");
    hf_log_kv(HF_LOG_INFO, "dropped.kv", "k", "v", NULL);
    hf_log_warn("kept.warn", "x");
    hf_log_error("kept.error", "x");
    char *text = captured();
    assert_int_equal(count_lines(text), 2);
    assert_null(strstr(text, "dropped"));
    assert_non_null(strstr(text, "kept.warn"));
    assert_non_null(strstr(text, "kept.error"));
    free(text);
}

static void test_level_and_format_parse(void **state)
{
    (void)state;
    hf_log_level level = HF_LOG_ERROR;
    assert_true(hf_log_level_parse("debug", &level));
    assert_int_equal(level, HF_LOG_DEBUG);
    assert_true(hf_log_level_parse("WARN", &level));
    assert_int_equal(level, HF_LOG_WARN);
    assert_false(hf_log_level_parse("verbose", &level));
    assert_false(hf_log_level_parse("", &level));
    assert_int_equal(level, HF_LOG_WARN);
    hf_log_format format = HF_LOG_JSON;
    assert_true(hf_log_format_parse("Text", &format));
    assert_int_equal(format, HF_LOG_TEXT);
    assert_true(hf_log_format_parse("json", &format));
    assert_int_equal(format, HF_LOG_JSON);
    assert_false(hf_log_format_parse("logfmt", &format));
}

static void test_registered_secret_is_redacted(void **state)
{
    (void)state;
    const char *secret = "OSd0eLlVIY9ZhViEqlDUh4+6n6M+Lo+eDaEJheJ6OCCgWwIz";
    hf_log_register_secret(secret, strlen(secret));
    char *embedded = xasprintf("key=%s;", secret);
    hf_log_kv(HF_LOG_INFO, "ev", "header", secret, "cfg", embedded, NULL);
    hf_log_error("ev", "verification used %s twice: %s", secret, secret);
    hf_log_init("hf-test", HF_LOG_INFO, HF_LOG_TEXT);
    hf_log_kv(HF_LOG_INFO, "ev", "header", secret, NULL);
    char *text = captured();
    assert_int_equal(count_lines(text), 3);
    assert_null(strstr(text, secret));
    assert_null(strstr(text, "OSd0eLlVIY9Z")); /* not even a prefix */
    assert_non_null(strstr(text, "\"header\":\"[redacted]\""));
    assert_non_null(strstr(text, "\"cfg\":\"key=[redacted];\""));
    assert_non_null(strstr(text, "used [redacted] twice: [redacted]"));
    assert_non_null(strstr(text, " header=[redacted]\n"));
    free(text);
    free(embedded);
}

static void test_secret_with_characters_that_need_escaping_is_redacted(void **state)
{
    (void)state;
    /* A secret with a quote, a backslash, a space and a tab: escaping must not reveal it. */
    const char *secret = "pa\"ss\\w rd\tX";
    hf_log_register_secret(secret, strlen(secret));
    char *wrapped = xasprintf("<%s>", secret);
    hf_log_kv(HF_LOG_INFO, "ev", "v", wrapped, NULL);
    hf_log_init("hf-test", HF_LOG_INFO, HF_LOG_TEXT);
    hf_log_kv(HF_LOG_INFO, "ev", "v", wrapped, NULL);
    char *text = captured();
    assert_int_equal(count_lines(text), 2);
    assert_null(strstr(text, "pa\\\"ss")); /* the JSON / text escaped form */
    assert_null(strstr(text, "pa\"ss"));   /* the raw form */
    assert_null(strstr(text, "w rd"));
    assert_non_null(strstr(text, "\"v\":\"<[redacted]>\""));
    assert_non_null(strstr(text, " v=<[redacted]>\n"));
    free(text);
    free(wrapped);
}

static void test_short_secrets_are_ignored_and_forget_stops_redaction(void **state)
{
    (void)state;
    hf_log_register_secret("abc", 3); /* too short: would redact half of every line */
    hf_log_register_secret("topsecret", 9);
    hf_log_register_secret("topsecret", 9); /* registering twice is harmless */
    hf_log_kv(HF_LOG_INFO, "ev", "v", "abc topsecret", NULL);
    char *text = captured();
    assert_non_null(strstr(text, "\"v\":\"abc [redacted]\""));
    free(text);
    hf_log_forget_secrets();
    assert_int_equal(reset_capture(), 0);
    hf_log_kv(HF_LOG_INFO, "ev", "v", "topsecret", NULL);
    text = captured();
    assert_non_null(strstr(text, "\"v\":\"topsecret\""));
    free(text);
}

static void test_secret_registered_with_length_is_binary_safe(void **state)
{
    (void)state;
    /* Only the first len bytes are the secret. */
    hf_log_register_secret("tokenvalue-and-more", 10);
    hf_log_kv(HF_LOG_INFO, "ev", "v", "tokenvalue-and-more", NULL);
    char *text = captured();
    assert_non_null(strstr(text, "\"v\":\"[redacted]-and-more\""));
    free(text);
}

/* Bytes that are not UTF-8 become U+FFFD: a JSON log line stays valid JSON. */
static void test_json_line_stays_valid_utf8_with_invalid_bytes(void **state)
{
    (void)state;
    /* A stray continuation byte, a lone lead byte, an overlong '/' and a UTF-16 surrogate. */
    hf_log_kv(HF_LOG_INFO, "ev", "v",
              "a\x80"
              "b\xc3"
              "c\xc0\xaf"
              "d\xed\xa0\x80"
              "e\xff",
              NULL);
    char *text = captured();
    size_t n = strlen(text), bad = n;
    for (size_t i = 0; i < n && bad == n;) {
        size_t len = hf_utf8_char_len(text + i, n - i);
        if (len == 0)
            bad = i;
        i += len;
    }
    free(text);
    if (bad != n)
        fail_msg("the log line has a byte that is not UTF-8 at offset %zu", bad);
}

/* A secret registered after a shorter prefix of it is redacted whole, not left with its tail. */
static void test_overlapping_secrets_are_redacted_whole(void **state)
{
    (void)state;
    hf_log_register_secret("abcd1234", 8);
    hf_log_register_secret("abcd1234-TAIL-OF-SECRET", 23);
    hf_log_kv(HF_LOG_INFO, "ev", "v", "key=abcd1234-TAIL-OF-SECRET;", NULL);
    char *text = captured();
    bool tail_shown = strstr(text, "TAIL-OF-SECRET") != NULL;
    bool whole = strstr(text, "\"v\":\"key=[redacted];\"") != NULL;
    free(text);
    assert_false(tail_shown);
    assert_true(whole);
}

/* Checks that every line of text is one JSON object; returns the number of lines, or fails with
 * the first bad line (shortened). */
static size_t assert_all_lines_json(const char *text)
{
    size_t n = 0;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!nl)
            fail_msg("the capture ends in a line without newline (%zu bytes): %.120s", strlen(p),
                     p);
        char err[256] = "";
        hf_json v = hf_json_parse(p, (size_t)(nl - p), err, sizeof err);
        if (!v || !hf_json_is_object(v))
            fail_msg("line %zu is not a JSON object (%s): %.160s", n + 1, err, p);
        hf_json_free(v);
        n++;
        p = nl + 1;
    }
    return n;
}

/* A very long value (1 MiB) is still one valid JSON line, whole. */
static void test_very_long_value_is_one_valid_line(void **state)
{
    (void)state;
    size_t len = 1u << 20;
    char *big = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        big[i] = (char)('a' + i % 26);
    big[len - 3] = '"';
    big[len - 2] = '\n';
    big[len] = '\0';
    hf_log_kv(HF_LOG_ERROR, "ev", "v", big, NULL);
    char *text;
    hf_json v = captured_json(&text);
    assert_string_equal(hf_json_str(hf_json_get(v, "v")), big);
    hf_json_free(v);
    free(text);
    free(big);
}

/* Every control character (1..31, 127) and UTF-8 of 2, 3 and 4 bytes survive a JSON round trip;
 * the line holds no raw control byte. */
static void test_every_control_character_and_valid_utf8_round_trip(void **state)
{
    (void)state;
    char value[200];
    size_t n = 0;
    for (int c = 1; c < 0x20; c++)
        value[n++] = (char)c;
    value[n++] = 0x7f;
    const char *utf8 = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 end"; /* e-acute, euro, emoji */
    memcpy(value + n, utf8, strlen(utf8) + 1);
    hf_log_kv(HF_LOG_INFO, "ev", "v", value, NULL);
    char *text;
    hf_json v = captured_json(&text);
    assert_string_equal(hf_json_str(hf_json_get(v, "v")), value);
    for (const char *p = text; p[1]; p++)
        assert_true((unsigned char)*p >= 0x20);
    hf_json_free(v);
    free(text);
}

/* Lines logged from several threads at once are each whole (short lines, a regular file). */
enum { SHORT_THREADS = 4, SHORT_LINES = 500 };

static void *log_short_lines(void *arg)
{
    long id = (long)arg;
    char key[16], val[64];
    snprintf(key, sizeof key, "t%ld", id);
    for (int i = 0; i < SHORT_LINES; i++) {
        snprintf(val, sizeof val, "line %d of thread %ld \"quoted\"", i, id);
        hf_log_kv(HF_LOG_INFO, "ev", key, val, NULL);
    }
    return NULL;
}

static void test_short_lines_from_threads_are_whole(void **state)
{
    (void)state;
    pthread_t t[SHORT_THREADS];
    for (long i = 0; i < SHORT_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, log_short_lines, (void *)i), 0);
    for (int i = 0; i < SHORT_THREADS; i++)
        pthread_join(t[i], NULL);
    char *text = captured();
    assert_int_equal(assert_all_lines_json(text), SHORT_THREADS * SHORT_LINES);
    free(text);
}

/* Long lines from several threads on a pipe (stderr under a container runtime or a supervisor
 * is a pipe): a reader collects everything. */
enum { LONG_THREADS = 3, LONG_LINES = 6, LONG_VALUE = 200000 };

typedef struct {
    int fd;
    hf_buf got;
} pipe_reader;

static void *read_pipe_slowly(void *arg)
{
    pipe_reader *r = arg;
    char chunk[4096];
    ssize_t n;
    int reads = 0;
    while ((n = read(r->fd, chunk, sizeof chunk)) > 0) {
        hf_buf_append(&r->got, chunk, (size_t)n);
        if (++reads % 4 == 0)
            usleep(5000); /* a reader slower than the writers: the pipe fills up */
    }
    return NULL;
}

static void *log_long_lines(void *arg)
{
    long id = (long)arg;
    char *v = malloc(LONG_VALUE + 1);
    memset(v, (int)('A' + id), LONG_VALUE);
    v[LONG_VALUE] = '\0';
    for (int i = 0; i < LONG_LINES; i++)
        hf_log_kv(HF_LOG_ERROR, "long", "v", v, NULL);
    free(v);
    return NULL;
}

/* Lines longer than PIPE_BUF (4096 bytes) are written in pieces the kernel may split on a pipe:
 * written under the log's lock, lines of several threads never interleave (they did when the
 * write happened after the lock was released). */
static void test_long_lines_from_threads_on_a_pipe_do_not_interleave(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pipe_reader r = {.fd = fds[0]};
    pthread_t reader, t[LONG_THREADS];
    assert_int_equal(pthread_create(&reader, NULL, read_pipe_slowly, &r), 0);
    hf_log_set_fd(fds[1]);
    for (long i = 0; i < LONG_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, log_long_lines, (void *)i), 0);
    for (int i = 0; i < LONG_THREADS; i++)
        pthread_join(t[i], NULL);
    hf_log_set_fd(g_fd);
    close(fds[1]);
    pthread_join(reader, NULL);
    close(fds[0]);
    hf_buf_putc(&r.got, '\0');
    r.got.len--;
    size_t mixed = 0, lines = 0;
    for (char *p = r.got.data; *p;) {
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        lines++;
        const char *v = strstr(p, "\"v\":\"");
        if (!v || v > nl) {
            mixed++;
        } else {
            v += 5;
            for (const char *q = v; q < nl - 2; q++)
                if (*q != *v) {
                    mixed++;
                    break;
                }
        }
        p = nl + 1;
    }
    hf_buf_free(&r.got);
    if (mixed)
        fail_msg("%zu of %zu lines hold bytes of another thread's line", mixed, lines);
    assert_int_equal(lines, LONG_THREADS * LONG_LINES);
}

/* Redaction works on each field before it is escaped, never on the finished line: a second pass
 * over the JSON line matched a secret holding a double quote across the line's own syntax (a
 * value that is the secret's beginning, then the closing quote) and removed that quote. */
static void test_redaction_never_breaks_the_json_line(void **state)
{
    (void)state;
    const char *secret = "Zk8p\"";
    hf_log_register_secret(secret, strlen(secret));
    hf_log_kv(HF_LOG_INFO, "ev", "v", "Zk8p", NULL);
    char *text = captured();
    assert_int_equal(assert_all_lines_json(text), 1);
    free(text);
}

/* A non-blocking stderr (inherited from a parent such as node that set O_NONBLOCK on the shared
 * pipe) is waited for on EAGAIN: the line is written whole. It used to be cut after what fit,
 * without its newline, and the next line was glued to it. */
static void test_line_is_not_cut_on_a_nonblocking_pipe(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK), 0);
    int cap = fcntl(fds[1], F_GETPIPE_SZ);
    assert_true(cap > 0);
    pipe_reader r = {.fd = fds[0]};
    hf_log_set_fd(fds[1]);
    size_t len = (size_t)cap * 2;
    char *v = malloc(len + 1);
    memset(v, 'x', len);
    v[len] = '\0';
    /* The reader is slower than the writer: the pipe fills up in the middle of the line. */
    pthread_t reader;
    assert_int_equal(pthread_create(&reader, NULL, read_pipe_slowly, &r), 0);
    hf_log_kv(HF_LOG_ERROR, "first", "v", v, NULL);
    usleep(100000);
    hf_log_kv(HF_LOG_ERROR, "second", "v", "short", NULL);
    usleep(100000);
    hf_log_set_fd(g_fd);
    close(fds[1]);
    pthread_join(reader, NULL);
    close(fds[0]);
    free(v);
    hf_buf_putc(&r.got, '\0');
    size_t lines = 0;
    bool all_json = true;
    for (char *p = r.got.data; *p;) {
        char *nl = strchr(p, '\n');
        if (!nl) {
            all_json = false;
            break;
        }
        char err[128];
        hf_json j = hf_json_parse(p, (size_t)(nl - p), err, sizeof err);
        all_json = all_json && j != NULL;
        hf_json_free(j);
        lines++;
        p = nl + 1;
    }
    size_t got = r.got.len - 1;
    hf_buf_free(&r.got);
    if (!all_json)
        fail_msg("a line was cut (%zu bytes read in %zu newline-terminated lines)", got, lines);
}

int main(void)
{
    FILE *capture = tmpfile();
    if (!capture)
        return 1;
    g_fd = fileno(capture);
    hf_log_set_fd(g_fd);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_json_line_has_fields_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_logf_puts_message_in_msg, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_escapes_quotes_backslashes_and_control_chars,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_list_ends_at_first_null_and_drops_a_dangling_key,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_event_and_values_are_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_line_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_escapes_quotes_and_control_chars, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_level_filtering, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_and_format_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registered_secret_is_redacted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_with_characters_that_need_escaping_is_redacted,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_secrets_are_ignored_and_forget_stops_redaction,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_registered_with_length_is_binary_safe, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_json_line_stays_valid_utf8_with_invalid_bytes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_overlapping_secrets_are_redacted_whole, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_very_long_value_is_one_valid_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_control_character_and_valid_utf8_round_trip,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_lines_from_threads_are_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_lines_from_threads_on_a_pipe_do_not_interleave,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_redaction_never_breaks_the_json_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_line_is_not_cut_on_a_nonblocking_pipe, setup,
                                        teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    hf_log_set_fd(2);
    fclose(capture);
    return rc;
}
