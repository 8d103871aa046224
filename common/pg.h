/* pg: thin libpq helpers: connect with a timeout, parameterised exec, transactions, errors. */
#ifndef HF_PG_H
#define HF_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

/* Results of the fallible calls below: 0, or a negative class the caller can act on. */
enum {
    HF_PG_OK = 0,
    HF_PG_ERR_SQL = -1,  /* the server (or libpq) rejected the statement; the session is usable */
    HF_PG_ERR_LOST = -2, /* the connection is gone (PQstatus == CONNECTION_BAD): reconnect */
};

/* Seconds a connect may take unless the conninfo sets connect_timeout itself. */
#define HF_PG_CONNECT_TIMEOUT_S 10

/* Connects to conninfo (libpq key=value string or postgresql:// URI). app_name becomes the
 * fallback application_name (may be NULL). Registers the conninfo's password with the log for
 * redaction. On success *out receives the connection (caller PQfinish()es it). On failure *out is
 * NULL and the result is HF_PG_ERR_LOST when the server was unreachable or refused the session,
 * -1 when the conninfo itself is malformed; err holds one line naming host:port/dbname only: the
 * conninfo, its password and its user are never copied into it. */
HF_MUST_CHECK int hf_pg_connect(const char *conninfo, const char *app_name, PGconn **out, char *err,
                                size_t errlen);

/* Describes where conninfo points as "host:port/dbname" (several hosts comma-separated), for
 * error and log lines. Never includes the user or password; "(invalid conninfo)" if unparsable. */
void hf_pg_describe(const char *conninfo, char *out, size_t outlen);

/* Runs one parameterised statement (text parameters, text results; params[i] NULL is SQL NULL).
 * Returns HF_PG_OK when the server answered COMMAND_OK or TUPLES_OK, else HF_PG_ERR_SQL or
 * HF_PG_ERR_LOST with one line in err ("message (SQLSTATE xxxxx)").
 * If out is not NULL it receives the result on success and on failure alike (NULL when libpq
 * returned none), so hf_pg_sqlstate() can inspect an error; the caller PQclear()s it either way.
 * If out is NULL the result is freed here. */
HF_MUST_CHECK int hf_pg_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
                             PGresult **out, char *err, size_t errlen);

/* Runs a trusted SQL script that may hold several statements (simple query protocol), such as a
 * migration file. Never pass text that came from outside: it takes no parameters. Same results
 * and ownership of *out as hf_pg_exec (out receives the last statement's result). */
HF_MUST_CHECK int hf_pg_exec_script(PGconn *conn, const char *script, PGresult **out, char *err,
                                    size_t errlen);

/* BEGIN / COMMIT. hf_pg_commit fails (HF_PG_ERR_SQL) when the server rolled the transaction back
 * instead, which is what COMMIT does after an error inside it. */
HF_MUST_CHECK int hf_pg_begin(PGconn *conn, char *err, size_t errlen);
HF_MUST_CHECK int hf_pg_commit(PGconn *conn, char *err, size_t errlen);

/* ROLLBACK, for cleanup paths: returns the same classes but callers may ignore it, since a lost
 * connection rolls back on the server anyway. Does nothing outside a transaction. */
int hf_pg_rollback(PGconn *conn);

/* True when conn is NULL or its connection is gone (PQstatus == CONNECTION_BAD), as opposed to a
 * statement the server rejected. */
bool hf_pg_connection_lost(const PGconn *conn);

/* The five-character SQLSTATE of an error result ("23505"), or "" when there is none (no result,
 * a success, or an error raised inside libpq). Valid as long as res. */
const char *hf_pg_sqlstate(const PGresult *res);

/* True when sqlstate says the server refused the statement's data rather than failed to run it:
 * class 22 (data exception: a number out of range, text that is not valid UTF-8 or JSON), 23
 * (integrity constraint) or 54 (program limit exceeded). Sending the same values again fails the
 * same way, whereas other failures (lost connection, serialization, disk full) may pass later. */
bool hf_pg_refuses_data(const char *sqlstate);

/* Well-known SQLSTATEs callers branch on. */
#define HF_PG_UNIQUE_VIOLATION "23505"
#define HF_PG_SERIALIZATION_FAILURE "40001"
#define HF_PG_DEADLOCK_DETECTED "40P01"

/* A PostgreSQL array literal built element by element, for set-based statements
 * (unnest($1::text[], ...)): one round trip for a whole batch. Zero-initialise to start. */
typedef struct hf_pg_array {
    hf_buf text;
    size_t n;
} hf_pg_array;

/* Appends one element (NULL is SQL NULL); every value is quoted and escaped. */
void hf_pg_array_add(hf_pg_array *a, const char *value);
void hf_pg_array_add_int(hf_pg_array *a, long long value);
/* The literal, e.g. {"a","b",NULL}; valid until the next add or free. */
const char *hf_pg_array_text(hf_pg_array *a);
void hf_pg_array_reset(hf_pg_array *a);
void hf_pg_array_free(hf_pg_array *a);

/* bytea for a text parameter: "\x" + lowercase hex of p (malloc'd). */
char *hf_pg_bytea_text(const unsigned char *p, size_t n);
/* A bytea column in text format ("\x0a1b...") as bytes (malloc'd, length in *len); NULL when
 * text is NULL or not in that format. */
unsigned char *hf_pg_bytea_decode(const char *text, size_t *len);

#endif
