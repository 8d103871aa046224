/* Unit tests for common/config: a table with every setting type, defaults, environment overrides,
 * one-line errors for bad values, the HOOKFLOW_CONFIG_FILE file and its precedence, listen
 * address parsing and the Kafka property pass-through.
 *
 * The config file is read once per process (pthread_once, on the first lookup that misses the
 * environment), so main() writes it and sets HOOKFLOW_CONFIG_FILE before any test runs; every
 * other test uses variable names the file does not mention. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

typedef struct test_settings {
    char *name;
    long long workers;
    bool verbose;
    char *format;
    char *listen;
    double delay_ms;
} test_settings;

static const char *const format_choices[] = {"json", "text", NULL};

static const hf_cfg_item table[] = {
    HF_CFG_STR("HOOKFLOW_TEST_NAME", "hookflow", test_settings, name, "Name."),
    HF_CFG_NUM("HOOKFLOW_TEST_WORKERS", "4", 1, 64, test_settings, workers, "Workers."),
    HF_CFG_BOOLEAN("HOOKFLOW_TEST_VERBOSE", "false", test_settings, verbose, "Verbose."),
    HF_CFG_CHOICE("HOOKFLOW_TEST_FORMAT", "json", format_choices, test_settings, format, "Format."),
    HF_CFG_LST("HOOKFLOW_TEST_LISTEN", "0.0.0.0:8080", test_settings, listen, "Listen."),
    HF_CFG_DECIMAL("HOOKFLOW_TEST_DELAY_MS", "0.5", 0, 1000, test_settings, delay_ms, "Delay."),
};

static void unset_table(void)
{
    for (size_t i = 0; i < HF_ARRAY_LEN(table); i++)
        unsetenv(table[i].name);
}

static int setup(void **state)
{
    (void)state;
    unset_table();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unset_table();
    return 0;
}

static void test_defaults_apply_when_unset(void **state)
{
    (void)state;
    test_settings s = {0};
    char err[256] = "";
    assert_int_equal(hf_config_load(table, HF_ARRAY_LEN(table), &s, err, sizeof err), 0);
    assert_string_equal(s.name, "hookflow");
    assert_int_equal(s.workers, 4);
    assert_false(s.verbose);
    assert_string_equal(s.format, "json");
    assert_string_equal(s.listen, "0.0.0.0:8080");
    hf_config_free(table, HF_ARRAY_LEN(table), &s);
    assert_null(s.name);
    assert_null(s.format);
    assert_null(s.listen);
}

static void test_environment_overrides_defaults(void **state)
{
    (void)state;
    setenv("HOOKFLOW_TEST_NAME", "from env", 1);
    setenv("HOOKFLOW_TEST_WORKERS", "64", 1);
    setenv("HOOKFLOW_TEST_VERBOSE", "yes", 1);
    setenv("HOOKFLOW_TEST_FORMAT", "TEXT", 1);
    setenv("HOOKFLOW_TEST_LISTEN", "[::1]:0", 1);
    test_settings s = {0};
    char err[256] = "";
    assert_int_equal(hf_config_load(table, HF_ARRAY_LEN(table), &s, err, sizeof err), 0);
    assert_string_equal(s.name, "from env");
    assert_int_equal(s.workers, 64);
    assert_true(s.verbose);
    assert_string_equal(s.format, "text"); /* the canonical choice, whatever the case given */
    assert_string_equal(s.listen, "[::1]:0");
    hf_config_free(table, HF_ARRAY_LEN(table), &s);
}

static void test_empty_string_value_is_kept(void **state)
{
    (void)state;
    setenv("HOOKFLOW_TEST_NAME", "", 1);
    test_settings s = {0};
    char err[256] = "";
    assert_int_equal(hf_config_load(table, HF_ARRAY_LEN(table), &s, err, sizeof err), 0);
    assert_string_equal(s.name, "");
    hf_config_free(table, HF_ARRAY_LEN(table), &s);
}

static void test_every_boolean_spelling(void **state)
{
    (void)state;
    static const char *const yes[] = {"1", "true", "TRUE", "yes", "On"};
    static const char *const no[] = {"0", "false", "False", "no", "OFF"};
    char err[256] = "";
    for (size_t i = 0; i < HF_ARRAY_LEN(yes); i++) {
        test_settings s = {0};
        setenv("HOOKFLOW_TEST_VERBOSE", yes[i], 1);
        assert_int_equal(hf_config_load(table, HF_ARRAY_LEN(table), &s, err, sizeof err), 0);
        assert_true(s.verbose);
        hf_config_free(table, HF_ARRAY_LEN(table), &s);
        s = (test_settings){.verbose = true};
        setenv("HOOKFLOW_TEST_VERBOSE", no[i], 1);
        assert_int_equal(hf_config_load(table, HF_ARRAY_LEN(table), &s, err, sizeof err), 0);
        assert_false(s.verbose);
        hf_config_free(table, HF_ARRAY_LEN(table), &s);
    }
}

/* Loads with name=value set and expects -1 with a single line naming both and containing want. */
static void expect_error(const char *name, const char *value, const char *want)
{
    unset_table();
    setenv(name, value, 1);
    test_settings s = {0};
    char err[256] = "";
    if (hf_config_load(table, HF_ARRAY_LEN(table), &s, err, sizeof err) != -1)
        fail_msg("%s=%s was accepted", name, value);
    hf_config_free(table, HF_ARRAY_LEN(table), &s);
    if (!strstr(err, name) || !strstr(err, value) || !strstr(err, want))
        fail_msg("error for %s=%s does not say so: \"%s\"", name, value, err);
    assert_null(strchr(err, '\n'));
    unsetenv(name);
}

static void test_bad_int_is_one_line_naming_variable_and_value(void **state)
{
    (void)state;
    expect_error("HOOKFLOW_TEST_WORKERS", "four", "not a whole number");
    expect_error("HOOKFLOW_TEST_WORKERS", "4x", "not a whole number");
    expect_error("HOOKFLOW_TEST_WORKERS", "", "not a whole number");
    expect_error("HOOKFLOW_TEST_WORKERS", "99999999999999999999", "not a whole number");
}

static void test_out_of_range_int_names_the_range(void **state)
{
    (void)state;
    expect_error("HOOKFLOW_TEST_WORKERS", "0", "out of range (1..64)");
    expect_error("HOOKFLOW_TEST_WORKERS", "65", "out of range (1..64)");
    expect_error("HOOKFLOW_TEST_WORKERS", "-3", "out of range (1..64)");
}

static void test_decimals(void **state)
{
    (void)state;
    test_settings s = {0};
    char err[256];
    assert_int_equal(hf_config_load(table, HF_ARRAY_LEN(table), &s, err, sizeof err), 0);
    assert_true(s.delay_ms == 0.5);
    hf_config_free(table, HF_ARRAY_LEN(table), &s);
    static const struct {
        const char *text;
        double want;
    } ok[] = {{"0", 0}, {"2", 2}, {"10.25", 10.25}, {".5", 0.5}, {"7.", 7}, {"1000", 1000}};
    for (size_t i = 0; i < HF_ARRAY_LEN(ok); i++) {
        setenv("HOOKFLOW_TEST_DELAY_MS", ok[i].text, 1);
        memset(&s, 0, sizeof s);
        assert_int_equal(hf_config_load(table, HF_ARRAY_LEN(table), &s, err, sizeof err), 0);
        assert_true(s.delay_ms == ok[i].want);
        hf_config_free(table, HF_ARRAY_LEN(table), &s);
    }
    static const char *const bad[] = {"",    ".",   "abc",   "1e3", "0x10",
                                      "nan", "inf", "1.2.3", " 1",  "+1"};
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++)
        expect_error("HOOKFLOW_TEST_DELAY_MS", bad[i], "not a decimal number");
    expect_error("HOOKFLOW_TEST_DELAY_MS", "-0.5", "not a decimal number");
    expect_error("HOOKFLOW_TEST_DELAY_MS", "1000.5", "out of range (0..1000)");
}

static void test_bad_bool_is_rejected(void **state)
{
    (void)state;
    expect_error("HOOKFLOW_TEST_VERBOSE", "maybe", "not a boolean");
    expect_error("HOOKFLOW_TEST_VERBOSE", "", "not a boolean");
}

static void test_bad_enum_lists_the_choices(void **state)
{
    (void)state;
    expect_error("HOOKFLOW_TEST_FORMAT", "xml", "json|text");
    expect_error("HOOKFLOW_TEST_FORMAT", "jsonx", "json|text");
}

static void test_bad_listen_address_is_rejected(void **state)
{
    (void)state;
    expect_error("HOOKFLOW_TEST_LISTEN", "8080", "not a listen address");
    expect_error("HOOKFLOW_TEST_LISTEN", "localhost:", "not a listen address");
    expect_error("HOOKFLOW_TEST_LISTEN", "localhost:http", "not a listen address");
    expect_error("HOOKFLOW_TEST_LISTEN", "localhost:65536", "not a listen address");
    expect_error("HOOKFLOW_TEST_LISTEN", "localhost:-1", "not a listen address");
}

static void test_missing_required_setting_is_an_error(void **state)
{
    (void)state;
    typedef struct {
        char *url;
    } required_settings;
    static const hf_cfg_item required[] = {
        HF_CFG_STR("HOOKFLOW_TEST_REQUIRED_URL", NULL, required_settings, url, "Database URL."),
    };
    unsetenv("HOOKFLOW_TEST_REQUIRED_URL");
    required_settings s = {0};
    char err[256] = "";
    assert_int_equal(hf_config_load(required, 1, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "HOOKFLOW_TEST_REQUIRED_URL is required"));
    assert_null(s.url);
    setenv("HOOKFLOW_TEST_REQUIRED_URL", "postgresql:///hookflow", 1);
    assert_int_equal(hf_config_load(required, 1, &s, err, sizeof err), 0);
    assert_string_equal(s.url, "postgresql:///hookflow");
    hf_config_free(required, 1, &s);
    unsetenv("HOOKFLOW_TEST_REQUIRED_URL");
}

static void test_parse_listen_forms(void **state)
{
    (void)state;
    char host[64];
    int port = -1;
    assert_true(hf_config_parse_listen("127.0.0.1:8080", host, sizeof host, &port));
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8080);
    assert_true(hf_config_parse_listen(":9000", host, sizeof host, &port));
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(port, 9000);
    assert_true(hf_config_parse_listen("*:0", host, sizeof host, &port));
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(port, 0);
    assert_true(hf_config_parse_listen("[::1]:65535", host, sizeof host, &port));
    assert_string_equal(host, "::1");
    assert_int_equal(port, 65535);
    assert_true(hf_config_parse_listen("localhost:1", host, sizeof host, &port));
    assert_string_equal(host, "localhost");
    port = 77;
    assert_false(hf_config_parse_listen("", host, sizeof host, &port));
    assert_false(hf_config_parse_listen("host", host, sizeof host, &port));
    assert_false(hf_config_parse_listen("host: 80", host, sizeof host, &port));
    assert_false(hf_config_parse_listen("a-very-long-host-name:80", host, 8, &port));
    assert_int_equal(port, 77);
}

/* An IPv6 host needs its brackets: "::1" is not host ":" port 1. */
static void test_parse_listen_rejects_unbracketed_ipv6(void **state)
{
    (void)state;
    char host[64] = "";
    int port = 77;
    if (hf_config_parse_listen("::1", host, sizeof host, &port))
        fail_msg("\"::1\" accepted as host \"%s\" port %d", host, port);
    if (hf_config_parse_listen("fe80::1:8080", host, sizeof host, &port))
        fail_msg("\"fe80::1:8080\" accepted as host \"%s\" port %d", host, port);
    expect_error("HOOKFLOW_TEST_LISTEN", "::1", "not a listen address");
}

/* ---- HOOKFLOW_CONFIG_FILE (written by main before the first lookup) ---- */

static char g_dir[256];
static char g_file[300];

static const char file_text[] = "# hookflow test configuration\n"
                                "\n"
                                "HOOKFLOW_TEST_FILE_ONLY = from file  \n"
                                "HOOKFLOW_TEST_FILE_OVERRIDDEN=from file\n"
                                "   # an indented comment\n"
                                "HOOKFLOW_TEST_FILE_DUP=first\r\n"
                                "HOOKFLOW_TEST_FILE_DUP=second\r\n"
                                "HOOKFLOW_TEST_FILE_WORKERS=12\n"
                                "HOOKFLOW_TEST_FILE_EQUALS=a=b=c\n"
                                "HOOKFLOW_KAFKA_MESSAGE_MAX_BYTES=2000000\n"
                                "HOOKFLOW_KAFKA_LINGER_MS=5\n"
                                "HOOKFLOW_KAFKA_LINGER_MS=7\n"
                                "HOOKFLOW_KAFKA_STATISTICS_INTERVAL_MS=1000\n";

static void test_config_file_values_are_used(void **state)
{
    (void)state;
    assert_string_equal(hf_config_get("HOOKFLOW_TEST_FILE_ONLY"), "from file");
    assert_string_equal(hf_config_get("HOOKFLOW_TEST_FILE_DUP"), "second"); /* last one wins */
    assert_string_equal(hf_config_get("HOOKFLOW_TEST_FILE_EQUALS"), "a=b=c");
    assert_null(hf_config_get("HOOKFLOW_TEST_FILE_NOT_THERE"));
    typedef struct {
        long long workers;
    } file_settings;
    static const hf_cfg_item items[] = {
        HF_CFG_NUM("HOOKFLOW_TEST_FILE_WORKERS", "1", 1, 100, file_settings, workers, "W."),
    };
    file_settings s = {0};
    char err[256] = "";
    assert_int_equal(hf_config_load(items, 1, &s, err, sizeof err), 0);
    assert_int_equal(s.workers, 12);
}

static void test_environment_overrides_config_file(void **state)
{
    (void)state;
    assert_string_equal(hf_config_get("HOOKFLOW_TEST_FILE_OVERRIDDEN"), "from file");
    setenv("HOOKFLOW_TEST_FILE_OVERRIDDEN", "from env", 1);
    assert_string_equal(hf_config_get("HOOKFLOW_TEST_FILE_OVERRIDDEN"), "from env");
    /* Even an empty environment value wins over the file. */
    setenv("HOOKFLOW_TEST_FILE_OVERRIDDEN", "", 1);
    assert_string_equal(hf_config_get("HOOKFLOW_TEST_FILE_OVERRIDDEN"), "");
    unsetenv("HOOKFLOW_TEST_FILE_OVERRIDDEN");
    assert_string_equal(hf_config_get("HOOKFLOW_TEST_FILE_OVERRIDDEN"), "from file");
}

/* ---- Kafka property pass-through ---- */

typedef struct {
    hf_buf seen;    /* "prop=value\n" per call */
    int stop_after; /* return 7 from this call (1-based), 0 never */
    int calls;
} kafka_seen;

static int collect_property(const char *prop, const char *value, void *arg)
{
    kafka_seen *k = arg;
    hf_buf_printf(&k->seen, "%s=%s\n", prop, value);
    k->calls++;
    return k->calls == k->stop_after ? 7 : 0;
}

static void test_kafka_properties_map_to_librdkafka_names(void **state)
{
    (void)state;
    setenv("HOOKFLOW_KAFKA_SESSION_TIMEOUT_MS", "6000", 1);
    setenv("HOOKFLOW_KAFKA_BROKERS", "localhost:9092", 1);
    setenv("HOOKFLOW_KAFKA_ENABLE_IDEMPOTENCE", "true", 1);
    setenv("HOOKFLOW_KAFKA_", "ignored", 1);
    kafka_seen k = {0};
    hf_buf_puts(&k.seen, "\n");
    assert_int_equal(hf_config_each_kafka_property(collect_property, &k), 0);
    assert_non_null(strstr(k.seen.data, "\nsession.timeout.ms=6000\n"));
    assert_non_null(strstr(k.seen.data, "\nenable.idempotence=true\n"));
    assert_null(strstr(k.seen.data, "brokers"));
    assert_null(strstr(k.seen.data, "localhost:9092"));
    assert_null(strstr(k.seen.data, "ignored"));
    hf_buf_free(&k.seen);
    unsetenv("HOOKFLOW_KAFKA_SESSION_TIMEOUT_MS");
    unsetenv("HOOKFLOW_KAFKA_BROKERS");
    unsetenv("HOOKFLOW_KAFKA_ENABLE_IDEMPOTENCE");
    unsetenv("HOOKFLOW_KAFKA_");
}

static void test_kafka_properties_come_from_file_too_with_env_winning(void **state)
{
    (void)state;
    setenv("HOOKFLOW_KAFKA_STATISTICS_INTERVAL_MS", "60000", 1);
    kafka_seen k = {0};
    hf_buf_puts(&k.seen, "\n");
    assert_int_equal(hf_config_each_kafka_property(collect_property, &k), 0);
    assert_non_null(strstr(k.seen.data, "\nmessage.max.bytes=2000000\n"));
    /* A key repeated in the file is passed once, with its last value. */
    assert_non_null(strstr(k.seen.data, "\nlinger.ms=7\n"));
    assert_null(strstr(k.seen.data, "linger.ms=5"));
    /* The environment overrides the file and the property is passed once. */
    assert_non_null(strstr(k.seen.data, "\nstatistics.interval.ms=60000\n"));
    assert_null(strstr(k.seen.data, "statistics.interval.ms=1000\n"));
    hf_buf_free(&k.seen);
    unsetenv("HOOKFLOW_KAFKA_STATISTICS_INTERVAL_MS");
}

static void test_kafka_property_callback_error_stops_the_walk(void **state)
{
    (void)state;
    setenv("HOOKFLOW_KAFKA_SESSION_TIMEOUT_MS", "6000", 1);
    kafka_seen k = {.stop_after = 1};
    assert_int_equal(hf_config_each_kafka_property(collect_property, &k), 7);
    assert_int_equal(k.calls, 1);
    hf_buf_free(&k.seen);
    unsetenv("HOOKFLOW_KAFKA_SESSION_TIMEOUT_MS");
}

static int write_config_file(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/hf_test_config.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_file, sizeof g_file, "%s/hookflow.conf", g_dir);
    char err[256];
    if (hf_write_file_atomic(g_file, file_text, sizeof file_text - 1, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return setenv("HOOKFLOW_CONFIG_FILE", g_file, 1);
}

int main(void)
{
    if (write_config_file() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults_apply_when_unset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_environment_overrides_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_string_value_is_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_boolean_spelling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_int_is_one_line_naming_variable_and_value, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_out_of_range_int_names_the_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decimals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_bool_is_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_enum_lists_the_choices, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_listen_address_is_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_required_setting_is_an_error, setup, teardown),
        cmocka_unit_test(test_parse_listen_forms),
        cmocka_unit_test_setup_teardown(test_parse_listen_rejects_unbracketed_ipv6, setup,
                                        teardown),
        cmocka_unit_test(test_config_file_values_are_used),
        cmocka_unit_test(test_environment_overrides_config_file),
        cmocka_unit_test(test_kafka_properties_map_to_librdkafka_names),
        cmocka_unit_test(test_kafka_properties_come_from_file_too_with_env_winning),
        cmocka_unit_test(test_kafka_property_callback_error_stops_the_walk),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(g_file);
    rmdir(g_dir);
    return rc;
}
