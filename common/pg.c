/* pg: thin libpq helpers: connect with a timeout, parameterised exec, transactions, errors. */
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "log.h"

/* Copies libpq's (possibly multi-line, tab-indented) message as one line: "\n\t" continuation
 * lines join with a space, separate messages (several hosts tried) with "; ". */
static void one_line(const char *msg, char *out, size_t outlen)
{
    hf_buf b = {0};
    for (const char *p = msg; *p; p++) {
        if (*p == '\r')
            continue;
        if (*p == '\n') {
            if (p[1] == '\t' || p[1] == ' ')
                hf_buf_putc(&b, ' ');
            else if (p[1] != '\0' && p[1] != '\n')
                hf_buf_puts(&b, "; ");
            while (p[1] == '\t' || p[1] == ' ')
                p++;
            continue;
        }
        hf_buf_putc(&b, *p == '\t' ? ' ' : *p);
    }
    snprintf(out, outlen, "%s", b.data ? b.data : "");
    hf_buf_free(&b);
}

/* Replaces every occurrence of secret in s (in place, within cap bytes) by "[redacted]". Secrets
 * shorter than 4 bytes are left alone, like the log does: they would match ordinary text. */
static void redact(char *s, size_t cap, const char *secret)
{
    static const char mark[] = "[redacted]";
    size_t n = secret ? strlen(secret) : 0;
    if (n < 4)
        return;
    hf_buf b = {0};
    const char *p = s;
    for (const char *hit; (hit = strstr(p, secret)) != NULL; p = hit + n) {
        hf_buf_append(&b, p, (size_t)(hit - p));
        hf_buf_puts(&b, mark);
    }
    if (p == s)
        return;
    hf_buf_puts(&b, p);
    snprintf(s, cap, "%s", b.data);
    hf_buf_free(&b);
}

/* libpq's conninfo parse errors quote the offending fragment, which may be the password (e.g. an
 * unterminated IPv6 host quotes the whole URI). Single quoted characters ("=", "]") are kept
 * since they explain the mistake; from the first longer fragment on, everything is hidden: a
 * password may itself hold '"', so where that fragment ends cannot be known. */
static void hide_quoted(const char *msg, char *out, size_t outlen)
{
    hf_buf b = {0};
    for (const char *p = msg; *p; p++) {
        if (*p != '"') {
            hf_buf_putc(&b, *p);
            continue;
        }
        if (p[1] && p[1] != '"' && p[2] == '"') {
            hf_buf_append(&b, p, 3);
            p += 2;
            continue;
        }
        hf_buf_puts(&b, "\"[hidden]\"");
        break;
    }
    char *flat = hf_buf_steal(&b);
    one_line(flat ? flat : "", out, outlen);
    free(flat);
}

static const char *option_value(const PQconninfoOption *opts, const char *keyword)
{
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, keyword) == 0)
            return o->val && *o->val ? o->val : NULL;
    return NULL;
}

/* Item i of a comma-separated libpq list ("h1,h2"); false past the end. */
static bool list_item(const char *list, size_t i, char *out, size_t outlen)
{
    const char *p = list;
    for (; i > 0; i--) {
        p = strchr(p, ',');
        if (!p)
            return false;
        p++;
    }
    size_t n = strcspn(p, ",");
    snprintf(out, outlen, "%.*s", (int)n, p);
    return true;
}

static void describe_options(const PQconninfoOption *opts, char *out, size_t outlen)
{
    const char *hosts = option_value(opts, "host");
    if (!hosts)
        hosts = option_value(opts, "hostaddr");
    if (!hosts)
        hosts = "";
    const char *ports = option_value(opts, "port");
    const char *db = option_value(opts, "dbname");
    hf_buf b = {0};
    char host[256], port[32];
    for (size_t i = 0; list_item(hosts, i, host, sizeof host); i++) {
        /* One port applies to every host; a missing one is libpq's default. */
        if (!ports ||
            (!list_item(ports, i, port, sizeof port) && !list_item(ports, 0, port, sizeof port)) ||
            !*port)
            snprintf(port, sizeof port, "5432");
        if (i > 0)
            hf_buf_putc(&b, ',');
        if (!*host)
            hf_buf_printf(&b, "[local]:%s", port);
        else if (host[0] == '/' || host[0] == '@')
            hf_buf_printf(&b, "[local:%s]:%s", host, port);
        else if (strchr(host, ':'))
            hf_buf_printf(&b, "[%s]:%s", host, port);
        else
            hf_buf_printf(&b, "%s:%s", host, port);
    }
    hf_buf_printf(&b, "/%s", db ? db : "(default)");
    snprintf(out, outlen, "%s", b.data);
    hf_buf_free(&b);
}

void hf_pg_describe(const char *conninfo, char *out, size_t outlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", &perr);
    PQfreemem(perr);
    if (!opts) {
        snprintf(out, outlen, "(invalid conninfo)");
        return;
    }
    describe_options(opts, out, outlen);
    PQconninfoFree(opts);
}

/* Server notices ("relation already exists, skipping") go to the debug log, not stderr. */
static void notice_to_log(void *arg, const char *message)
{
    (void)arg;
    if (!hf_log_enabled(HF_LOG_DEBUG))
        return;
    char line[1024];
    one_line(message, line, sizeof line);
    hf_log_debug("pg.notice", "%s", line);
}

int hf_pg_connect(const char *conninfo, const char *app_name, PGconn **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", &perr);
    if (!opts) {
        char reason[512];
        hide_quoted(perr ? perr : "out of memory", reason, sizeof reason);
        PQfreemem(perr);
        return hf_err(err, errlen,
                      "invalid database connection string (want key=value pairs or a "
                      "postgresql:// URI): %s",
                      reason);
    }
    char target[512];
    describe_options(opts, target, sizeof target);
    const char *password = option_value(opts, "password");
    if (password)
        hf_log_register_secret(password, strlen(password));

    /* Keywords before the expanded dbname entry are defaults the conninfo may override. */
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", HF_PG_CONNECT_TIMEOUT_S);
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {timeout, app_name ? app_name : "hookflow", conninfo, NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    int rc = HF_PG_OK;
    if (PQstatus(conn) != CONNECTION_OK) {
        char reason[1024];
        one_line(conn ? PQerrorMessage(conn) : "out of memory", reason, sizeof reason);
        redact(reason, sizeof reason, password);
        /* The server names the user in some refusals (password authentication failed for user
         * "..."); the header promises err never shows it. */
        redact(reason, sizeof reason, option_value(opts, "user"));
        rc = HF_PG_ERR_LOST;
        hf_err(err, errlen, "cannot connect to PostgreSQL at %s: %s", target, reason);
        PQfinish(conn);
    } else {
        PQsetNoticeProcessor(conn, notice_to_log, NULL);
        *out = conn;
    }
    PQconninfoFree(opts);
    return rc;
}

bool hf_pg_connection_lost(const PGconn *conn)
{
    return PQstatus(conn) == CONNECTION_BAD;
}

const char *hf_pg_sqlstate(const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return state ? state : "";
}

bool hf_pg_refuses_data(const char *sqlstate)
{
    if (!sqlstate || strlen(sqlstate) != 5)
        return false;
    return strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0 ||
           strncmp(sqlstate, "54", 2) == 0;
}

/* Leaves a connection that a COPY statement put into copy mode usable again. */
static void abandon_copy(PGconn *conn, ExecStatusType st)
{
    if (st == PGRES_COPY_IN) {
        (void)PQputCopyEnd(conn, "COPY FROM STDIN is not supported here");
    } else if (st == PGRES_COPY_OUT) {
        char *row;
        while (PQgetCopyData(conn, &row, 0) > 0)
            PQfreemem(row);
    }
    for (PGresult *r; (r = PQgetResult(conn)) != NULL;)
        PQclear(r);
}

/* Turns a finished statement into a result class and, on failure, one line in err. */
static int finish(PGconn *conn, PGresult *res, bool empty_ok, PGresult **out, char *err,
                  size_t errlen)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int rc = HF_PG_OK;
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
        abandon_copy(conn, st);
        rc = hf_err(err, errlen, "COPY to or from the client is not supported");
    } else if (st == PGRES_EMPTY_QUERY && !empty_ok) {
        rc = hf_err(err, errlen, "empty statement");
    } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        char reason[1024];
        if (hf_pg_connection_lost(conn)) {
            one_line(PQerrorMessage(conn), reason, sizeof reason);
            rc = HF_PG_ERR_LOST;
            hf_err(err, errlen, "connection to PostgreSQL lost: %s",
                   *reason ? reason : "no connection");
        } else {
            const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
            one_line(primary ? primary : PQerrorMessage(conn), reason, sizeof reason);
            const char *state = hf_pg_sqlstate(res);
            rc = HF_PG_ERR_SQL;
            if (*state)
                hf_err(err, errlen, "%s (SQLSTATE %s)", reason, state);
            else
                hf_err(err, errlen, "%s", *reason ? reason : "statement failed");
        }
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return rc;
}

int hf_pg_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
               PGresult **out, char *err, size_t errlen)
{
    if (out)
        *out = NULL;
    if (!conn)
        return finish(conn, NULL, false, out, err, errlen);
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    return finish(conn, res, false, out, err, errlen);
}

int hf_pg_exec_script(PGconn *conn, const char *script, PGresult **out, char *err, size_t errlen)
{
    if (out)
        *out = NULL;
    if (!conn)
        return finish(conn, NULL, true, out, err, errlen);
    PGresult *res = PQexec(conn, script);
    return finish(conn, res, true, out, err, errlen);
}

int hf_pg_begin(PGconn *conn, char *err, size_t errlen)
{
    return hf_pg_exec(conn, "BEGIN", 0, NULL, NULL, err, errlen);
}

int hf_pg_commit(PGconn *conn, char *err, size_t errlen)
{
    PGresult *res = NULL;
    int rc = hf_pg_exec(conn, "COMMIT", 0, NULL, &res, err, errlen);
    /* COMMIT of a transaction that already failed succeeds with the tag ROLLBACK. */
    if (rc == HF_PG_OK && strcmp(PQcmdStatus(res), "COMMIT") != 0)
        rc = hf_err(err, errlen, "transaction was rolled back by the server, not committed");
    PQclear(res);
    return rc;
}

int hf_pg_rollback(PGconn *conn)
{
    if (hf_pg_connection_lost(conn))
        return HF_PG_ERR_LOST;
    if (PQtransactionStatus(conn) == PQTRANS_IDLE)
        return HF_PG_OK;
    return hf_pg_exec(conn, "ROLLBACK", 0, NULL, NULL, NULL, 0);
}

void hf_pg_array_add(hf_pg_array *a, const char *value)
{
    if (a->n == 0) {
        hf_buf_reset(&a->text);
        hf_buf_putc(&a->text, '{');
    } else {
        /* Drop the closing brace written by the previous add. */
        a->text.len--;
        hf_buf_putc(&a->text, ',');
    }
    if (!value) {
        hf_buf_puts(&a->text, "NULL");
    } else {
        hf_buf_putc(&a->text, '"');
        for (const char *p = value; *p; p++) {
            if (*p == '"' || *p == '\\')
                hf_buf_putc(&a->text, '\\');
            hf_buf_putc(&a->text, *p);
        }
        hf_buf_putc(&a->text, '"');
    }
    hf_buf_putc(&a->text, '}');
    a->n++;
}

void hf_pg_array_add_int(hf_pg_array *a, long long value)
{
    char num[32];
    snprintf(num, sizeof num, "%lld", value);
    hf_pg_array_add(a, num);
}

const char *hf_pg_array_text(hf_pg_array *a)
{
    if (a->n == 0) {
        hf_buf_reset(&a->text);
        hf_buf_puts(&a->text, "{}");
    }
    return a->text.data;
}

void hf_pg_array_reset(hf_pg_array *a)
{
    hf_buf_reset(&a->text);
    a->n = 0;
}

void hf_pg_array_free(hf_pg_array *a)
{
    hf_buf_free(&a->text);
    a->n = 0;
}

char *hf_pg_bytea_text(const unsigned char *p, size_t n)
{
    char *out = xmalloc(2 * n + 3);
    out[0] = '\\';
    out[1] = 'x';
    hf_hex_encode(p, n, out + 2);
    return out;
}

unsigned char *hf_pg_bytea_decode(const char *text, size_t *len)
{
    if (!text || strncmp(text, "\\x", 2) != 0)
        return NULL;
    size_t hex = strlen(text + 2);
    unsigned char *out = xmalloc(hex / 2 + 1);
    if (hex % 2 || !hf_hex_decode(text + 2, hex, out, hex / 2)) {
        free(out);
        return NULL;
    }
    *len = hex / 2;
    return out;
}
