/* pg_fixture: see pg_fixture.h. */
#include "pg_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate.h"
#include "util.h"

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "pg_fixture: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

/* The cluster's URL of its "hookflow" database, from the file pg.sh wrote. */
static char *cluster_url(void)
{
    const char *dir = getenv("HOOKFLOW_TEST_PG_DIR");
    if (!dir || !*dir)
        die("HOOKFLOW_TEST_PG_DIR is not set (run this test through ctest, which starts the "
            "unit_pg fixture)",
            NULL);
    char path[1024];
    snprintf(path, sizeof path, "%s/url", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        die("no PostgreSQL cluster URL at", path);
    char line[512] = "";
    if (!fgets(line, sizeof line, f))
        line[0] = '\0';
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (!line[0])
        die("empty cluster URL file", path);
    return xstrdup(line);
}

/* url with its database name (after the last '/') replaced by db. */
static char *with_database(const char *url, const char *db)
{
    const char *slash = strrchr(url, '/');
    if (!slash)
        die("cluster URL has no database part", NULL);
    char *base = xstrndup(url, (size_t)(slash - url + 1));
    char *joined = xconcat(base, db, NULL);
    free(base);
    return joined;
}

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *pgf_connect(const char *url)
{
    PGconn *db = PQconnectdb(url);
    if (PQstatus(db) != CONNECTION_OK)
        die("cannot connect to the test cluster", PQerrorMessage(db));
    PQsetNoticeProcessor(db, quiet, NULL); /* "does not exist, skipping" and the like */
    return db;
}

void pgf_exec(PGconn *db, const char *sql)
{
    PGresult *r = PQexec(db, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(db));
    PQclear(r);
}

char *pgf_value(PGconn *db, const char *sql)
{
    PGresult *r = PQexec(db, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(db));
    char *v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? xstrdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    return v;
}

char *pgf_value_params(PGconn *db, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(db, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        die(sql, PQerrorMessage(db));
    char *v = st == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)
                  ? xstrdup(PQgetvalue(r, 0, 0))
                  : NULL;
    PQclear(r);
    return v;
}

char *pgf_empty_database(const char *name)
{
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            die("database names here are [a-z0-9_]+, not", name);
    char *cluster = cluster_url();
    char *admin_url = with_database(cluster, "postgres");
    PGconn *admin = pgf_connect(admin_url);
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    pgf_exec(admin, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    pgf_exec(admin, sql);
    PQfinish(admin);
    free(admin_url);
    char *url = with_database(cluster, name);
    free(cluster);
    return url;
}

char *pgf_database(const char *name)
{
    char *url = pgf_empty_database(name);
    const char *src = getenv("HOOKFLOW_SOURCE_DIR");
    if (!src || !*src)
        die("HOOKFLOW_SOURCE_DIR is not set", NULL);
    char *migrations = xconcat(src, "/schemas/migrations", NULL);
    char err[1024];
    int applied = 0;
    if (engine_migrate(url, migrations, &applied, err, sizeof err) != 0)
        die("migrations failed", err);
    free(migrations);
    return url;
}
