/* test_pg: the libpq helpers that need no server: error text, redaction, loss classification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

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

/* A password holding '"' does not reach err through libpq's quoted fragments either. */
static void malformed_conninfo_with_a_quote_in_the_password_never_shows_it(void **state)
{
    (void)state;
    static const char *const conninfos[] = {
        "postgresql://u:s3cr\"etpw-tail@[::1/db", /* unterminated IPv6 host */
        "host=127.0.0.1 s3cr\"etpw-tail",         /* missing '=' */
    };
    for (size_t i = 0; i < sizeof conninfos / sizeof conninfos[0]; i++) {
        PGconn *conn = (PGconn *)0x1;
        char err[1024] = "";
        int rc = hf_pg_connect(conninfos[i], NULL, &conn, err, sizeof err);
        assert_int_not_equal(rc, HF_PG_OK);
        assert_null(conn);
        assert_non_null(strstr(err, "invalid database connection string"));
        if (strstr(err, "etpw-tail") || strstr(err, "s3cr"))
            fail_msg("password shown: %s", err);
    }
}

/* A fake PostgreSQL server on 127.0.0.1 that answers one startup with the ErrorResponse a real
 * server sends for a wrong password, in a child process. Returns the port; *child its pid. */
static int fake_server_refusing_password(const char *user, pid_t *child)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t len = sizeof sin;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(10);
        int c = accept(fd, NULL, NULL);
        if (c < 0)
            _exit(1);
        for (;;) { /* SSLRequest / GSSENCRequest get 'N', then the startup packet */
            unsigned char hdr[8];
            if (recv(c, hdr, 8, MSG_WAITALL) != 8)
                _exit(1);
            uint32_t n =
                (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
            uint32_t code =
                (uint32_t)hdr[4] << 24 | (uint32_t)hdr[5] << 16 | (uint32_t)hdr[6] << 8 | hdr[7];
            if (n == 8 && (code == 80877103u || code == 80877104u)) {
                if (send(c, "N", 1, 0) != 1)
                    _exit(1);
                continue;
            }
            char rest[4096];
            if (n < 8 || n - 8 > sizeof rest ||
                recv(c, rest, n - 8, MSG_WAITALL) != (ssize_t)(n - 8))
                _exit(1);
            break;
        }
        char body[512];
        int m =
            snprintf(body, sizeof body,
                     "SFATAL%cVFATAL%cC28P01%cMpassword authentication failed for user \"%s\"%c", 0,
                     0, 0, user, 0);
        body[m++] = '\0';
        unsigned char msg[600];
        uint32_t total = (uint32_t)m + 4;
        msg[0] = 'E';
        msg[1] = (unsigned char)(total >> 24);
        msg[2] = (unsigned char)(total >> 16);
        msg[3] = (unsigned char)(total >> 8);
        msg[4] = (unsigned char)total;
        memcpy(msg + 5, body, (size_t)m);
        if (send(c, msg, (size_t)m + 5, 0) < 0)
            _exit(1);
        close(c);
        _exit(0);
    }
    close(fd);
    *child = pid;
    return ntohs(sin.sin_port);
}

/* A server refusal naming the user ("... for user \"name\"") does not show it in err. */
static void refused_login_error_never_shows_the_user(void **state)
{
    (void)state;
    static const char user[] = "alice-the-db-user";
    pid_t child;
    int port = fake_server_refusing_password(user, &child);
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d dbname=db user=%s password=" PASSWORD
             " sslmode=disable gssencmode=disable",
             port, user);
    PGconn *conn = (PGconn *)0x1;
    char err[1024] = "";
    int rc = hf_pg_connect(conninfo, NULL, &conn, err, sizeof err);
    int status = 0;
    waitpid(child, &status, 0);
    assert_int_equal(rc, HF_PG_ERR_LOST);
    assert_null(conn);
    assert_non_null(strstr(err, "password authentication failed")); /* the server did answer */
    if (strstr(err, user))
        fail_msg("user shown: %s", err);
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
        cmocka_unit_test(malformed_conninfo_with_a_quote_in_the_password_never_shows_it),
        cmocka_unit_test(refused_login_error_never_shows_the_user),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
