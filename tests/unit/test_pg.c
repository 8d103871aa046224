/* test_pg: the libpq helpers that need no server: error text, redaction, loss classification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "pg.h"

#define PASSWORD "s3cretpw"

/* Connecting to port 1 of localhost is refused at once: nothing listens there. */
static void connect_failure_never_shows_the_password(void **state)
{
    (void)state;
    static const char *const conninfos[] = {
        "postgresql://u:" PASSWORD "@127.0.0.1:1/db",
        "postgresql://u@127.0.0.1:1/db?password=" PASSWORD,
        "host=127.0.0.1 port=1 dbname=db user=u password=" PASSWORD,
        "host=127.0.0.1 port=1 dbname=db user=u password='" PASSWORD "'",
    };
    for (size_t i = 0; i < sizeof conninfos / sizeof conninfos[0]; i++) {
        PGconn *conn = (PGconn *)0x1;
        char err[1024] = "";
        int rc = hf_pg_connect(conninfos[i], "test_pg", &conn, err, sizeof err);
        assert_int_equal(rc, HF_PG_ERR_LOST);
        assert_null(conn);
        assert_non_null(strstr(err, "cannot connect to PostgreSQL at 127.0.0.1:1/db"));
        assert_non_null(strstr(err, "refused"));
        assert_null(strstr(err, PASSWORD));
        assert_null(strstr(err, "postgresql://"));
        assert_null(strchr(err, '\n'));
    }
}

/* libpq quotes the malformed part of a conninfo in its parse errors, and that part can be the
 * password. */
static void malformed_conninfo_never_shows_the_password(void **state)
{
    (void)state;
    static const char *const conninfos[] = {
        "postgresql://u:" PASSWORD "@[::1/db",         /* unterminated IPv6 host */
        "postgresql://u:" PASSWORD "%zz@127.0.0.1/db", /* bad percent escape */
        "host=127.0.0.1 password='" PASSWORD,          /* unterminated quote */
        "host=127.0.0.1 " PASSWORD,                    /* missing '=' */
    };
    for (size_t i = 0; i < sizeof conninfos / sizeof conninfos[0]; i++) {
        PGconn *conn = (PGconn *)0x1;
        char err[1024] = "";
        int rc = hf_pg_connect(conninfos[i], NULL, &conn, err, sizeof err);
        assert_int_not_equal(rc, HF_PG_OK);
        assert_null(conn);
        assert_non_null(strstr(err, "invalid database connection string"));
        assert_null(strstr(err, PASSWORD));
        assert_null(strchr(err, '\n'));
    }
}

/* After a connect, log lines redact the conninfo's password too. */
static void connect_registers_the_password_with_the_log(void **state)
{
    (void)state;
    PGconn *conn = NULL;
    char err[1024];
    assert_int_not_equal(
        hf_pg_connect("postgresql://u:" PASSWORD "x@127.0.0.1:1/db", NULL, &conn, err, sizeof err),
        HF_PG_OK);
    FILE *f = tmpfile();
    assert_non_null(f);
    hf_log_set_fd(fileno(f));
    hf_log_info("test", "leaked %s?", PASSWORD "x");
    hf_log_set_fd(2);
    char line[1024] = "";
    rewind(f);
    size_t n = fread(line, 1, sizeof line - 1, f);
    line[n] = '\0';
    fclose(f);
    assert_non_null(strstr(line, "leaked"));
    assert_null(strstr(line, PASSWORD));
    hf_log_forget_secrets();
}

static void describe_names_host_port_and_database_only(void **state)
{
    (void)state;
    static const struct {
        const char *conninfo, *want;
    } cases[] = {
        {"postgresql://u:" PASSWORD "@db.example:6432/hookflow", "db.example:6432/hookflow"},
        {"postgresql://u:" PASSWORD "@h1:1,h2:2/app", "h1:1,h2:2/app"},
        {"host=h1,h2 port=7 dbname=app password=" PASSWORD, "h1:7,h2:7/app"},
        {"postgresql://[::1]:5433/x", "[::1]:5433/x"},
        {"host=/var/run/postgresql dbname=x", "[local:/var/run/postgresql]:5432/x"},
        {"postgresql:///x?host=/tmp&port=55", "[local:/tmp]:55/x"},
        {"user=u password=" PASSWORD, "[local]:5432/(default)"},
        {"postgresql://u:" PASSWORD "@[::1/db", "(invalid conninfo)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256];
        hf_pg_describe(cases[i].conninfo, out, sizeof out);
        assert_string_equal(out, cases[i].want);
    }
}

static void lost_connection_is_classified_as_lost(void **state)
{
    (void)state;
    assert_true(hf_pg_connection_lost(NULL));

    PGconn *conn = PQconnectdb("host=127.0.0.1 port=1 dbname=db connect_timeout=5");
    assert_non_null(conn);
    assert_true(hf_pg_connection_lost(conn));

    PGresult *res = (PGresult *)0x1;
    char err[512] = "";
    const char *params[] = {"1"};
    assert_int_equal(hf_pg_exec(conn, "SELECT $1", 1, params, &res, err, sizeof err),
                     HF_PG_ERR_LOST);
    assert_non_null(strstr(err, "connection to PostgreSQL lost"));
    assert_string_equal(hf_pg_sqlstate(res), "");
    PQclear(res);

    assert_int_equal(hf_pg_exec_script(conn, "SELECT 1; SELECT 2", NULL, err, sizeof err),
                     HF_PG_ERR_LOST);
    assert_int_equal(hf_pg_begin(conn, err, sizeof err), HF_PG_ERR_LOST);
    assert_int_equal(hf_pg_commit(conn, err, sizeof err), HF_PG_ERR_LOST);
    assert_int_equal(hf_pg_rollback(conn), HF_PG_ERR_LOST);
    PQfinish(conn);

    assert_int_equal(hf_pg_exec(NULL, "SELECT 1", 0, NULL, NULL, err, sizeof err), HF_PG_ERR_LOST);
    assert_int_equal(hf_pg_rollback(NULL), HF_PG_ERR_LOST);
}

static void sqlstate_is_empty_without_a_server_error(void **state)
{
    (void)state;
    assert_string_equal(hf_pg_sqlstate(NULL), "");
    PGresult *ok = PQmakeEmptyPGresult(NULL, PGRES_COMMAND_OK);
    assert_non_null(ok);
    assert_string_equal(hf_pg_sqlstate(ok), "");
    PQclear(ok);
}

static void data_refusals_are_told_from_failures_that_may_pass(void **state)
{
    (void)state;
    static const char *const refused[] = {"22003", "22P02", "22021", "22P05",
                                          "23503", "23505", "54000"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        assert_true(hf_pg_refuses_data(refused[i]));
    /* serialization, deadlock, disk full, too many connections, admin shutdown, read only,
     * lock timeout, a libpq-side error (no SQLSTATE) and malformed values */
    static const char *const may_pass[] = {"40001", "40P01", "53100", "53300",  "57P01", "25006",
                                           "55P03", "",      "22",    "220030", "XX000"};
    for (size_t i = 0; i < sizeof may_pass / sizeof may_pass[0]; i++)
        assert_false(hf_pg_refuses_data(may_pass[i]));
    assert_false(hf_pg_refuses_data(NULL));
}

static void bytea_text_round_trips_and_malformed_text_is_refused(void **state)
{
    (void)state;
    const unsigned char raw[] = {0x00, 0x0a, 0x1b, 0xff};
    char *text = hf_pg_bytea_text(raw, sizeof raw);
    assert_string_equal(text, "\\x000a1bff");
    size_t n = 0;
    unsigned char *back = hf_pg_bytea_decode(text, &n);
    assert_non_null(back);
    assert_int_equal(n, sizeof raw);
    assert_memory_equal(back, raw, sizeof raw);
    free(back);
    free(text);
    back = hf_pg_bytea_decode("\\x", &n);
    assert_non_null(back);
    assert_int_equal(n, 0);
    free(back);
    static const char *const bad[] = {"000a", "\\x0", "\\x0g", "\\x 0a", "x0a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_null(hf_pg_bytea_decode(bad[i], &n));
    assert_null(hf_pg_bytea_decode(NULL, &n));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connect_failure_never_shows_the_password),
        cmocka_unit_test(malformed_conninfo_never_shows_the_password),
        cmocka_unit_test(connect_registers_the_password_with_the_log),
        cmocka_unit_test(describe_names_host_port_and_database_only),
        cmocka_unit_test(lost_connection_is_classified_as_lost),
        cmocka_unit_test(sqlstate_is_empty_without_a_server_error),
        cmocka_unit_test(data_refusals_are_told_from_failures_that_may_pass),
        cmocka_unit_test(bytea_text_round_trips_and_malformed_text_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
