/* pg_fixture: fresh databases on the PostgreSQL cluster ctest starts for the unit tests that
 * need one (tests/unit/test_db_*.c; fixture unit_pg in tests/CMakeLists.txt). */
#ifndef HF_TEST_PG_FIXTURE_H
#define HF_TEST_PG_FIXTURE_H

#include <libpq-fe.h>

/* Drops and creates database name (lower case letters, digits, '_'; unique per test, since
 * ctest runs test files in parallel), applies schemas/migrations to it and returns its URL
 * (the caller frees it). Aborts with one clear line when the cluster is not running: these
 * tests are meant to fail, not skip, without their database. */
char *pgf_database(const char *name);

/* pgf_database without the migrations: an empty database. */
char *pgf_empty_database(const char *name);

/* A connection to url; aborts when it cannot connect. */
PGconn *pgf_connect(const char *url);

/* The first column of the first row of sql (no parameters) as a new string, NULL for SQL NULL
 * or no row; aborts when the statement fails. */
char *pgf_value(PGconn *db, const char *sql);

/* pgf_value for sql with n text parameters ($1...); a statement that returns no rows (an INSERT
 * without RETURNING) gives NULL too. Aborts when the statement fails. */
char *pgf_value_params(PGconn *db, const char *sql, int n, const char *const *params);

/* Runs sql (no parameters, no result wanted); aborts when it fails. */
void pgf_exec(PGconn *db, const char *sql);

#endif
