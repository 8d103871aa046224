/* test_secrets: the secrets store (files under HOOKFLOW_SECRETS_DIR, .previous rotation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "secrets.h"

static void write_file(const char *dir, const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    /* Create the parent directories, one level at a time. */
    for (char *p = strchr(path + strlen(dir) + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *make_dir(void)
{
    char *dir = strdup("/tmp/hf-secrets-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void remove_dir(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_reads_nested_files_and_strips_one_newline(void **state)
{
    (void)state;
    char *dir = make_dir();
    write_file(dir, "xero/webhook_key", "key-one\n");
    write_file(dir, "twilio/accounts/AC123/auth_token", "sub-account-token\r\n");
    write_file(dir, "meta/app_secret", "no-newline");
    char err[256];
    hf_secrets *s = hf_secrets_load(dir, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(hf_secrets_count(s), 3);
    const char *vals[2];
    size_t lens[2];
    assert_int_equal(hf_secrets_get(s, "xero/webhook_key", vals, lens), 1);
    assert_int_equal(lens[0], 7);
    assert_memory_equal(vals[0], "key-one", 7);
    assert_int_equal(hf_secrets_get(s, "twilio/accounts/AC123/auth_token", vals, lens), 1);
    assert_int_equal(lens[0], strlen("sub-account-token"));
    assert_int_equal(hf_secrets_get(s, "meta/app_secret", vals, lens), 1);
    assert_int_equal(lens[0], strlen("no-newline"));
    assert_int_equal(hf_secrets_get(s, "hubspot/client_secret", vals, lens), 0);
    hf_secrets_free(s);
    remove_dir(dir);
    free(dir);
}

static void test_previous_value_comes_second(void **state)
{
    (void)state;
    char *dir = make_dir();
    write_file(dir, "meta/app_secret", "new-secret");
    write_file(dir, "meta/app_secret.previous", "old-secret");
    char err[256];
    hf_secrets *s = hf_secrets_load(dir, err, sizeof err);
    const char *vals[2];
    size_t lens[2];
    assert_int_equal(hf_secrets_get(s, "meta/app_secret", vals, lens), 2);
    assert_memory_equal(vals[0], "new-secret", lens[0]);
    assert_memory_equal(vals[1], "old-secret", lens[1]);
    assert_true(hf_secrets_has(s, "meta/app_secret"));
    hf_secrets_free(s);

    /* A rotation that left only the retired key: get still yields it, has says the current is
     * missing. */
    remove_dir(dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    write_file(dir, "meta/app_secret.previous", "old-secret");
    s = hf_secrets_load(dir, err, sizeof err);
    assert_int_equal(hf_secrets_get(s, "meta/app_secret", vals, lens), 1);
    assert_false(hf_secrets_has(s, "meta/app_secret"));
    assert_true(hf_secrets_has(s, "meta/app_secret.previous"));
    hf_secrets_free(s);
    remove_dir(dir);
    free(dir);
}

static void test_hidden_entries_are_skipped_and_empty_values_absent(void **state)
{
    (void)state;
    char *dir = make_dir();
    write_file(dir, "..data/meta/app_secret", "kubernetes-plumbing");
    write_file(dir, "xero/webhook_key", "\n");
    char err[256];
    hf_secrets *s = hf_secrets_load(dir, err, sizeof err);
    const char *vals[2];
    size_t lens[2];
    assert_int_equal(hf_secrets_get(s, "..data/meta/app_secret", vals, lens), 0);
    assert_int_equal(hf_secrets_get(s, "xero/webhook_key", vals, lens), 0);
    hf_secrets_free(s);
    remove_dir(dir);
    free(dir);
}

static void test_missing_dir_is_an_empty_store(void **state)
{
    (void)state;
    char err[256];
    hf_secrets *s = hf_secrets_load("/nonexistent/hookflow-secrets", err, sizeof err);
    assert_non_null(s);
    assert_int_equal(hf_secrets_count(s), 0);
    hf_secrets_free(s);
}

static void test_values_are_redacted_from_logs(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    hf_log_init("test", HF_LOG_INFO, HF_LOG_TEXT);
    hf_log_set_fd(fds[1]);
    hf_secrets *s = hf_secrets_new();
    hf_secrets_set(s, "xero/webhook_key", "super-secret-value", 18);
    hf_log_kv(HF_LOG_INFO, "oops", "value", "x super-secret-value y", NULL);
    char buf[512] = "";
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    assert_true(n > 0);
    assert_null(strstr(buf, "super-secret-value"));
    assert_non_null(strstr(buf, "[redacted]"));
    hf_log_set_fd(2);
    hf_log_forget_secrets();
    hf_secrets_free(s);
    close(fds[0]);
    close(fds[1]);
}

/* One trailing newline ("\n" or "\r\n") is stripped (secrets.h); a lone trailing "\r" is the
 * secret's own last byte and stays. */
static void test_lone_trailing_carriage_return_is_kept(void **state)
{
    (void)state;
    char *dir = make_dir();
    write_file(dir, "xero/webhook_key", "key-ending-in-cr\r");
    write_file(dir, "meta/app_secret", "crlf-value\r\n");
    char err[256];
    hf_secrets *s = hf_secrets_load(dir, err, sizeof err);
    assert_non_null(s);
    const char *vals[2];
    size_t lens[2];
    assert_int_equal(hf_secrets_get(s, "meta/app_secret", vals, lens), 1);
    assert_int_equal(lens[0], strlen("crlf-value"));
    assert_int_equal(hf_secrets_get(s, "xero/webhook_key", vals, lens), 1);
    size_t got = lens[0];
    bool same =
        got == strlen("key-ending-in-cr\r") && memcmp(vals[0], "key-ending-in-cr\r", got) == 0;
    hf_secrets_free(s);
    remove_dir(dir);
    free(dir);
    if (!same)
        fail_msg("\"key-ending-in-cr\\r\" was loaded as %zu bytes, not 17", got);
}

/* Every value the store holds is registered with the logger for redaction (README "Secrets"),
 * also one that replaces an earlier value of the same path. */
static void test_replaced_value_is_redacted_too(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    hf_log_init("test", HF_LOG_INFO, HF_LOG_TEXT);
    hf_log_set_fd(fds[1]);
    hf_secrets *s = hf_secrets_new();
    hf_secrets_set(s, "api/jwt_key", "first-jwt-key-value", 19);
    hf_secrets_set(s, "api/jwt_key", "second-jwt-key-value", 20);
    const char *vals[2];
    size_t lens[2];
    assert_int_equal(hf_secrets_get(s, "api/jwt_key", vals, lens), 1);
    assert_memory_equal(vals[0], "second-jwt-key-value", 20);
    hf_log_kv(HF_LOG_INFO, "oops", "value", "x second-jwt-key-value y", NULL);
    char buf[512] = "";
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    hf_log_set_fd(2);
    hf_log_forget_secrets();
    hf_secrets_free(s);
    close(fds[0]);
    close(fds[1]);
    assert_true(n > 0);
    if (strstr(buf, "second-jwt-key-value"))
        fail_msg("the replaced secret was logged in clear: %s", buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_nested_files_and_strips_one_newline),
        cmocka_unit_test(test_previous_value_comes_second),
        cmocka_unit_test(test_hidden_entries_are_skipped_and_empty_values_absent),
        cmocka_unit_test(test_missing_dir_is_an_empty_store),
        cmocka_unit_test(test_values_are_redacted_from_logs),
        cmocka_unit_test(test_lone_trailing_carriage_return_is_kept),
        cmocka_unit_test(test_replaced_value_is_redacted_too),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
