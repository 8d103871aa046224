/* migrate: applies schemas/migrations (NNNN_name.sql) once each, in order, recorded in
 * schema_migrations, under an advisory lock so concurrent runs are safe. */
#include "migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "crypto.h"
#include "engine_cli.h"
#include "pg.h"

#ifndef HOOKFLOW_SOURCE_DIR
#define HOOKFLOW_SOURCE_DIR "."
#endif

/* pg_advisory_lock key of the migration lock: "hookflow" as a big-endian 64-bit integer. Advisory
 * locks are per database, so migrating two databases of one server never waits. */
#define MIGRATE_LOCK_KEY "7525356009429954423"

#define VERSION_DIGITS 4

/* One NNNN_name.sql file of the migrations folder. */
typedef struct migration {
    int version;
    char *file; /* "0001_core.sql" */
    char *name; /* "core" */
    char *sql;  /* the file's bytes, NUL-terminated */
    size_t len;
    char checksum[HF_SHA256_LEN * 2 + 1]; /* sha256 of the bytes, lower-case hex */
} migration;

typedef struct migration_set {
    migration *items;
    size_t n;
} migration_set;

static void migration_set_free(migration_set *set)
{
    for (size_t i = 0; i < set->n; i++) {
        free(set->items[i].file);
        free(set->items[i].name);
        free(set->items[i].sql);
    }
    free(set->items);
    set->items = NULL;
    set->n = 0;
}

/* A file the runner must understand: anything ending in .sql or starting with a digit. Other
 * files (README.md, .gitkeep, editor dotfiles) are left alone. */
static bool is_candidate(const char *file)
{
    size_t n = strlen(file);
    if (file[0] == '.')
        return false;
    return isdigit((unsigned char)file[0]) || (n >= 4 && strcmp(file + n - 4, ".sql") == 0);
}

/* Parses "NNNN_name.sql" (name: letters, digits, '_' or '-'); false if the name does not fit. */
static bool parse_file_name(const char *file, int *version, char **name)
{
    size_t n = strlen(file);
    if (n <= VERSION_DIGITS + 1 + 4 || strcmp(file + n - 4, ".sql") != 0)
        return false;
    int v = 0;
    for (int i = 0; i < VERSION_DIGITS; i++) {
        if (!isdigit((unsigned char)file[i]))
            return false;
        v = v * 10 + (file[i] - '0');
    }
    if (v < 1 || file[VERSION_DIGITS] != '_')
        return false;
    const char *start = file + VERSION_DIGITS + 1, *end = file + n - 4;
    for (const char *p = start; p < end; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            return false;
    *version = v;
    *name = xstrndup(start, (size_t)(end - start));
    return true;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int compare_versions(const void *a, const void *b)
{
    const migration *x = a, *y = b;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    return strcmp(x->file, y->file);
}

/* Lists the candidate file names of dir, sorted, so that errors come out the same every run. */
static int list_candidates(const char *dir, char ***out, size_t *count, char *err, size_t errlen)
{
    *out = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d)
        return hf_err(err, errlen, "cannot open migrations directory %s: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!is_candidate(e->d_name))
            continue;
        char *path = xasprintf("%s/%s", dir, e->d_name);
        struct stat st;
        bool regular = stat(path, &st) == 0 && S_ISREG(st.st_mode);
        free(path);
        if (!regular)
            continue;
        names = xrealloc(names, (n + 1) * sizeof *names);
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof *names, compare_names);
    *out = names;
    *count = n;
    return 0;
}

/* Reads and checks every migration file of dir into set (caller frees with
 * migration_set_free, also on failure). */
static int load_migrations(const char *dir, migration_set *set, char *err, size_t errlen)
{
    char **names = NULL;
    size_t count = 0;
    int rc = list_candidates(dir, &names, &count, err, errlen);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        int version;
        char *name = NULL;
        if (!parse_file_name(names[i], &version, &name)) {
            rc = hf_err(err, errlen,
                        "%s in %s does not match NNNN_name.sql (a %d-digit version from 0001, "
                        "'_', then letters, digits, '_' or '-'); rename it",
                        names[i], dir, VERSION_DIGITS);
            break;
        }
        set->items = xrealloc(set->items, (set->n + 1) * sizeof *set->items);
        migration *m = &set->items[set->n++];
        *m = (migration){.version = version, .file = xstrdup(names[i]), .name = name};
        char *path = xasprintf("%s/%s", dir, names[i]);
        char readerr[512];
        m->sql = hf_read_file(path, &m->len, readerr, sizeof readerr);
        free(path);
        if (!m->sql) {
            rc = hf_err(err, errlen, "%s", readerr);
            break;
        }
        /* libpq stops at a NUL, so the checksum would cover bytes that never ran. */
        if (memchr(m->sql, '\0', m->len)) {
            rc = hf_err(err, errlen, "%s contains a NUL byte; migrations are SQL text", m->file);
            break;
        }
        unsigned char digest[HF_SHA256_LEN];
        hf_sha256(m->sql, m->len, digest);
        hf_hex_encode(digest, sizeof digest, m->checksum);
    }
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
    if (rc != 0)
        return rc;
    if (set->n > 0)
        qsort(set->items, set->n, sizeof *set->items, compare_versions);
    for (size_t i = 1; i < set->n; i++)
        if (set->items[i].version == set->items[i - 1].version)
            return hf_err(err, errlen, "%s and %s share version %04d; give one a new number",
                          set->items[i - 1].file, set->items[i].file, set->items[i].version);
    return 0;
}

static migration *find_version(const migration_set *set, int version)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->items[i].version == version)
            return &set->items[i];
    return NULL;
}

/* ---- transaction control inside a file ------------------------------------------------------
 * The runner wraps each file in one transaction; a COMMIT inside would commit the part before it
 * and leave the rest to "fail and roll back", and every later run would then trip over the half
 * that stayed. So files are read, before anything runs, by a small lexer that knows what can hide
 * a statement's first word: comments (-- and nested block ones), quoted strings (with E'' escapes),
 * quoted identifiers, dollar-quoted bodies and BEGIN ATOMIC ... END bodies. */

typedef struct sql_lexer {
    const char *p;
    int line;
} sql_lexer;

static bool word_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '$' || c >= 0x80;
}

/* Skips whitespace and comments. */
static void skip_blank(sql_lexer *lx)
{
    for (;;) {
        const char *p = lx->p;
        if (*p == '\n') {
            lx->line++;
            lx->p++;
        } else if (isspace((unsigned char)*p)) {
            lx->p++;
        } else if (p[0] == '-' && p[1] == '-') {
            while (*lx->p && *lx->p != '\n')
                lx->p++;
        } else if (p[0] == '/' && p[1] == '*') {
            int depth = 1;
            lx->p += 2;
            while (*lx->p && depth > 0) {
                if (lx->p[0] == '/' && lx->p[1] == '*') {
                    depth++;
                    lx->p += 2;
                } else if (lx->p[0] == '*' && lx->p[1] == '/') {
                    depth--;
                    lx->p += 2;
                } else {
                    lx->line += *lx->p++ == '\n';
                }
            }
        } else {
            return;
        }
    }
}

/* Past a quoted string or identifier that starts at lx->p (quote doubled inside; with
 * backslashes, a backslash escapes the next byte). */
static void skip_quoted(sql_lexer *lx, bool backslashes)
{
    char q = *lx->p++;
    while (*lx->p) {
        char c = *lx->p++;
        lx->line += c == '\n';
        if (backslashes && c == '\\' && *lx->p) {
            lx->line += *lx->p++ == '\n';
        } else if (c == q) {
            if (*lx->p != q)
                return;
            lx->p++;
        }
    }
}

/* Past a dollar-quoted body if one starts at lx->p ($$ or $tag$); false if none does. */
static bool skip_dollar_quoted(sql_lexer *lx)
{
    const char *p = lx->p + 1;
    if (isdigit((unsigned char)*p)) /* $1: a parameter */
        return false;
    while (*p && *p != '$' && word_char((unsigned char)*p))
        p++;
    if (*p != '$')
        return false;
    size_t taglen = (size_t)(p - lx->p + 1);
    const char *end = p + 1;
    while (*end && !(*end == '$' && strncmp(end, lx->p, taglen) == 0))
        end++;
    for (const char *c = lx->p; c < end; c++)
        lx->line += *c == '\n';
    lx->p = *end ? end + taglen : end;
    return true;
}

/* The next word, upper-cased into word (cut to wordlen - 1), with lx->p past it. */
static void read_word(sql_lexer *lx, char *word, size_t wordlen)
{
    size_t n = 0;
    while (word_char((unsigned char)*lx->p)) {
        if (n + 1 < wordlen)
            word[n++] = (char)toupper((unsigned char)*lx->p);
        lx->p++;
    }
    word[n] = '\0';
}

/* The word after lx's place, lx itself unmoved. */
static void peek_word(sql_lexer lx, char *word, size_t wordlen)
{
    skip_blank(&lx);
    read_word(&lx, word, wordlen);
}

/* The transaction control a statement starting with the words w, next is, or NULL. ROLLBACK TO
 * (a savepoint) and PREPARE name AS are fine. */
static const char *transaction_control(const char *w, const char *next)
{
    static const char *const ending[] = {"BEGIN", "START", "COMMIT", "END", "ABORT", "ROLLBACK"};
    for (size_t i = 0; i < HF_ARRAY_LEN(ending); i++)
        if (strcmp(w, ending[i]) == 0)
            return strcmp(w, "ROLLBACK") == 0 && strcmp(next, "TO") == 0 ? NULL : ending[i];
    return strcmp(w, "PREPARE") == 0 && strcmp(next, "TRANSACTION") == 0 ? "PREPARE TRANSACTION"
                                                                         : NULL;
}

/* The line of the first statement of sql that begins or ends a transaction (its keyword in
 * word), or 0 if there is none. */
static int transaction_control_line(const char *sql, char *word, size_t wordlen)
{
    sql_lexer lx = {sql, 1};
    bool at_start = true; /* the next word starts a statement */
    bool in_atomic = false, atomic_start = false;
    char w[16], prev[16] = "";
    for (;;) {
        skip_blank(&lx);
        char c = *lx.p;
        if (!c)
            return 0;
        if (c == ';') {
            lx.p++;
            at_start = !in_atomic;
            atomic_start = in_atomic;
            prev[0] = '\0';
            continue;
        }
        if (c == '\'' || c == '"') {
            skip_quoted(&lx, false);
        } else if (c == '$' && skip_dollar_quoted(&lx)) {
            /* skipped */
        } else if (word_char((unsigned char)c)) {
            int line = lx.line;
            read_word(&lx, w, sizeof w);
            if ((strcmp(w, "E") == 0) && *lx.p == '\'') {
                skip_quoted(&lx, true);
            } else if (at_start) {
                char next[16];
                peek_word(lx, next, sizeof next);
                const char *control = transaction_control(w, next);
                if (control) {
                    snprintf(word, wordlen, "%s", control);
                    return line;
                }
            } else if (in_atomic && atomic_start && strcmp(w, "END") == 0) {
                in_atomic = false; /* the statement of the BEGIN ATOMIC goes on to its ';' */
            } else if (!in_atomic && strcmp(prev, "BEGIN") == 0 && strcmp(w, "ATOMIC") == 0) {
                in_atomic = true;
            }
            snprintf(prev, sizeof prev, "%s", w);
        } else {
            lx.p++;
            prev[0] = '\0';
        }
        at_start = false;
        atomic_start = false;
    }
}

/* PostgreSQL reports a syntax error's place as a 1-based character (not byte) offset into the
 * script; turn it into a line number of the file. 0 if there is none. */
static int error_line(const PGresult *res, const char *sql)
{
    const char *pos = res ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
    long long chars;
    if (!pos || !hf_parse_ll(pos, &chars) || chars < 1)
        return 0;
    int line = 1;
    for (const unsigned char *p = (const unsigned char *)sql; *p && chars > 1; p++) {
        if ((*p & 0xC0) == 0x80)
            continue; /* UTF-8 continuation byte: same character */
        if (*p == '\n')
            line++;
        chars--;
    }
    return line;
}

/* Runs one migration and its schema_migrations row in one transaction. */
static int apply_one(PGconn *conn, const migration *m, char *err, size_t errlen)
{
    PGresult *res = NULL;
    char reason[1024];
    int rc = hf_pg_begin(conn, reason, sizeof reason);
    if (rc == HF_PG_OK) {
        rc = hf_pg_exec_script(conn, m->sql, &res, reason, sizeof reason);
        if (rc != HF_PG_OK) {
            hf_buf line = {0};
            hf_buf_puts(&line, reason);
            int at = error_line(res, m->sql);
            if (at > 0)
                hf_buf_printf(&line, " at line %d", at);
            const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
            const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
            if (detail)
                hf_buf_printf(&line, "; %s", detail);
            if (hint)
                hf_buf_printf(&line, "; hint: %s", hint);
            for (char *p = line.data; *p; p++)
                if (*p == '\n' || *p == '\t')
                    *p = ' ';
            snprintf(reason, sizeof reason, "%s", line.data);
            hf_buf_free(&line);
        } else if (PQtransactionStatus(conn) != PQTRANS_INTRANS) {
            rc = hf_err(reason, sizeof reason,
                        "it ended the transaction itself (COMMIT or ROLLBACK inside the file); "
                        "the runner wraps each file in one transaction");
        }
        PQclear(res);
    }
    if (rc == HF_PG_OK) {
        char version[16];
        snprintf(version, sizeof version, "%d", m->version);
        const char *params[] = {version, m->name, m->checksum};
        rc = hf_pg_exec(conn,
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        3, params, NULL, reason, sizeof reason);
    }
    if (rc == HF_PG_OK)
        rc = hf_pg_commit(conn, reason, sizeof reason);
    if (rc != HF_PG_OK) {
        (void)hf_pg_rollback(conn);
        return hf_err(err, errlen, "%s failed and was rolled back: %s", m->file, reason);
    }
    return 0;
}

/* Compares what the database recorded with the files; refuses any drift. Also returns the
 * database's version (highest applied). */
static int check_applied(PGconn *conn, const migration_set *set, const char *dir, int *dbversion,
                         char *err, size_t errlen)
{
    PGresult *res = NULL;
    char reason[1024];
    *dbversion = 0;
    if (hf_pg_exec(conn, "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
                   0, NULL, &res, reason, sizeof reason) != HF_PG_OK) {
        PQclear(res);
        return hf_err(err, errlen, "cannot read schema_migrations: %s", reason);
    }
    int rows = PQntuples(res), rc = 0;
    for (int row = 0; row < rows; row++) /* all of them: a refusal below still reports it */
        if (atoi(PQgetvalue(res, row, 0)) > *dbversion)
            *dbversion = atoi(PQgetvalue(res, row, 0));
    bool *recorded = xcalloc(set->n ? set->n : 1, sizeof *recorded);
    for (int row = 0; rc == 0 && row < rows; row++) {
        int version = atoi(PQgetvalue(res, row, 0));
        const char *name = PQgetvalue(res, row, 1);
        const char *checksum = PQgetvalue(res, row, 2);
        const migration *m = find_version(set, version);
        if (!m)
            rc = hf_err(err, errlen,
                        "%04d_%s.sql was applied but is missing from %s; restore it (applied "
                        "migrations are never removed)",
                        version, name, dir);
        else if (strcmp(m->name, name) != 0)
            rc = hf_err(err, errlen,
                        "%s was applied as %04d_%s.sql; restore the original name (applied "
                        "migrations are never renamed)",
                        m->file, version, name);
        else if (strcmp(m->checksum, checksum) != 0)
            rc = hf_err(err, errlen,
                        "%s was edited after it was applied (checksum mismatch); add a new "
                        "migration instead",
                        m->file);
        else
            recorded[m - set->items] = true;
    }
    /* A file numbered below the database's version that never ran (e.g. from a branch merged
     * late) would apply out of order; make its author renumber it. */
    for (size_t i = 0; rc == 0 && i < set->n && set->items[i].version < *dbversion; i++)
        if (!recorded[i])
            rc = hf_err(err, errlen,
                        "%s is numbered below the database's version %04d but was never "
                        "applied; renumber it above %04d",
                        set->items[i].file, *dbversion, *dbversion);
    free(recorded);
    PQclear(res);
    return rc;
}

int engine_migrate_run(const char *conninfo, const char *dir, const engine_migrate_report *report,
                       int *applied, int *version, char *err, size_t errlen)
{
    static const engine_migrate_report quiet = {0};
    if (!report)
        report = &quiet;
    migration_set set = {0};
    PGconn *conn = NULL;
    PGresult *res = NULL;
    char reason[1024];
    int count = 0, dbversion = 0, rc = -1;
    const char *lock_params[] = {MIGRATE_LOCK_KEY};

    if (load_migrations(dir, &set, err, errlen) != 0)
        goto done;
    if (hf_pg_connect(conninfo, "hookflow-migrate", &conn, err, errlen) != HF_PG_OK)
        goto done;

    /* The lock is held by the session until it ends, so a run that dies mid-way releases it. */
    if (hf_pg_exec(conn, "SELECT pg_try_advisory_lock($1::bigint)", 1, lock_params, &res, reason,
                   sizeof reason) != HF_PG_OK) {
        hf_err(err, errlen, "cannot take the migration lock: %s", reason);
        goto done;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        if (report->waiting)
            report->waiting(report->arg);
        if (hf_pg_exec(conn, "SELECT pg_advisory_lock($1::bigint)", 1, lock_params, NULL, reason,
                       sizeof reason) != HF_PG_OK) {
            hf_err(err, errlen, "cannot take the migration lock: %s", reason);
            goto done;
        }
    }
    if (hf_pg_exec(conn,
                   "CREATE TABLE IF NOT EXISTS schema_migrations ("
                   " version integer PRIMARY KEY,"
                   " name text NOT NULL,"
                   " checksum text NOT NULL,"
                   " applied_at timestamptz NOT NULL DEFAULT now())",
                   0, NULL, NULL, reason, sizeof reason) != HF_PG_OK) {
        hf_err(err, errlen, "cannot create schema_migrations: %s", reason);
        goto done;
    }
    if (check_applied(conn, &set, dir, &dbversion, err, errlen) != 0)
        goto done;
    for (size_t i = 0; i < set.n; i++) {
        char word[32];
        int line = set.items[i].version > dbversion
                       ? transaction_control_line(set.items[i].sql, word, sizeof word)
                       : 0;
        if (line > 0) {
            hf_err(err, errlen,
                   "%s, line %d: %s is not allowed in a migration (the runner runs each file in "
                   "one transaction of its own); nothing was applied",
                   set.items[i].file, line, word);
            goto done;
        }
    }

    for (size_t i = 0; i < set.n; i++) {
        const migration *m = &set.items[i];
        if (m->version <= dbversion)
            continue; /* check_applied proved every such file is recorded */
        int64_t started = hf_now_ms();
        if (apply_one(conn, m, err, errlen) != 0)
            goto done;
        count++;
        dbversion = m->version;
        if (report->applied)
            report->applied(m->version, m->file, (long long)(hf_now_ms() - started), report->arg);
    }
    rc = 0;
    if (hf_pg_exec(conn, "SELECT pg_advisory_unlock($1::bigint)", 1, lock_params, NULL, NULL, 0) !=
        HF_PG_OK) {
        /* Nothing to do: ending the session below releases the lock as well. */
    }

done:
    PQclear(res);
    PQfinish(conn); /* also releases the lock if still held */
    migration_set_free(&set);
    if (applied)
        *applied = count;
    if (version)
        *version = dbversion;
    return rc;
}

int engine_migrate(const char *conninfo, const char *dir, int *applied, char *err, size_t errlen)
{
    return engine_migrate_run(conninfo, dir, NULL, applied, NULL, err, errlen);
}

/* ---- hookflow-engine migrate ---------------------------------------------------------------- */

typedef struct migrate_settings {
    char *database_url;
    char *migrations_dir;
} migrate_settings;

static const hf_cfg_item migrate_settings_table[] = {
    HF_CFG_STR("HOOKFLOW_DATABASE_URL", "", migrate_settings, database_url,
               "PostgreSQL libpq conninfo or postgresql:// URI (required)"),
    HF_CFG_STR("HOOKFLOW_MIGRATIONS_DIR", HOOKFLOW_SOURCE_DIR "/schemas/migrations",
               migrate_settings, migrations_dir, "folder of NNNN_name.sql migrations"),
};

static void migrate_usage(FILE *out)
{
    fprintf(out,
            "usage: hookflow-engine migrate [--dir DIR] [--database-url URL] [--help]\n\n"
            "Applies the NNNN_name.sql files of DIR in order, each once and in its own\n"
            "transaction, recorded in the schema_migrations table. Safe to run repeatedly and\n"
            "concurrently. Refuses to run when an applied file was edited, renamed or removed,\n"
            "or when a pending file has its own BEGIN/COMMIT/ROLLBACK (the runner's transaction\n"
            "is the file's).\n\n"
            "  --dir DIR            migrations folder (overrides HOOKFLOW_MIGRATIONS_DIR)\n"
            "  --database-url URL   database (overrides HOOKFLOW_DATABASE_URL; prefer the\n"
            "                       variable: arguments are visible to other local users)\n\n"
            "Configuration (environment, or KEY=VALUE lines in HOOKFLOW_CONFIG_FILE):\n");
    for (size_t i = 0; i < HF_ARRAY_LEN(migrate_settings_table); i++) {
        const hf_cfg_item *it = &migrate_settings_table[i];
        fprintf(out, "  %-24s %s%s%s\n", it->name, it->help, *it->def ? "; default " : "", it->def);
    }
}

static void print_waiting(void *arg)
{
    (void)arg;
    printf("waiting for another migrate run to finish\n");
    fflush(stdout);
}

static void print_applied(int version, const char *file, long long elapsed_ms, void *arg)
{
    (void)arg;
    (void)version;
    printf("applied %s (%lld ms)\n", file, elapsed_ms);
    fflush(stdout);
}

/* Takes "--opt VALUE" or "--opt=VALUE"; advances *i past a separate value. */
static bool option_value(int argc, char **argv, int *i, const char *opt, const char **value)
{
    size_t n = strlen(opt);
    if (strncmp(argv[*i], opt, n) != 0)
        return false;
    if (argv[*i][n] == '=') {
        *value = argv[*i] + n + 1;
        return true;
    }
    if (argv[*i][n] != '\0')
        return false;
    *value = *i + 1 < argc ? argv[++*i] : NULL;
    return true;
}

int engine_cmd_migrate(int argc, char **argv)
{
    const char *dir = NULL, *url = NULL;
    for (int i = 1; i < argc; i++) {
        const char *value = NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            migrate_usage(stdout);
            return 0;
        }
        if (option_value(argc, argv, &i, "--dir", &value)) {
            dir = value;
        } else if (option_value(argc, argv, &i, "--database-url", &value)) {
            url = value;
        } else {
            fprintf(stderr, "hookflow-engine: migrate: unexpected argument '%s' (try --help)\n",
                    argv[i]);
            return 2;
        }
        if (!value || !*value) {
            fprintf(stderr, "hookflow-engine: migrate: %s needs a value (try --help)\n", argv[i]);
            return 2;
        }
    }

    migrate_settings settings = {0};
    char err[1024];
    int status = 1;
    if (hf_config_load(migrate_settings_table, HF_ARRAY_LEN(migrate_settings_table), &settings, err,
                       sizeof err) != 0) {
        fprintf(stderr, "hookflow-engine: migrate: %s\n", err);
        goto done;
    }
    if (!url)
        url = settings.database_url;
    if (!dir)
        dir = settings.migrations_dir;
    if (!*url) {
        fprintf(stderr,
                "hookflow-engine: migrate: HOOKFLOW_DATABASE_URL is not set (a libpq conninfo "
                "or postgresql:// URI; or pass --database-url)\n");
        goto done;
    }

    const engine_migrate_report report = {.waiting = print_waiting, .applied = print_applied};
    int applied = 0, version = 0;
    if (engine_migrate_run(url, dir, &report, &applied, &version, err, sizeof err) != 0) {
        fprintf(stderr, "hookflow-engine: migrate: %s\n", err);
        goto done;
    }
    if (applied > 0)
        printf("applied %d migration%s, database at version %04d\n", applied,
               applied == 1 ? "" : "s", version);
    else
        printf("database is up to date at version %04d\n", version);
    status = 0;

done:
    hf_config_free(migrate_settings_table, HF_ARRAY_LEN(migrate_settings_table), &settings);
    return status;
}
