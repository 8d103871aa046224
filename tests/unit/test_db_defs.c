/* test_db_defs: the workflow definition cache against real PostgreSQL (fixture unit_pg). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "defs.h"
#include "pg_fixture.h"
#include "util.h"

static const char definition[] =
    "{\"name\": \"Pickup\", \"trigger\": {\"connector\": \"meta\", \"event\": \"message\"}, "
    "\"nodes\": [{\"id\": \"wait\", \"type\": \"delay\", \"delay_ms\": 1000}], \"edges\": []}";

static PGconn *db;
static char *workflow_id;

static int setup(void **state)
{
    (void)state;
    char *url = pgf_database("unit_defs");
    db = pgf_connect(url);
    free(url);
    pgf_exec(db, "INSERT INTO tenants (slug, name) VALUES ('t1', 'T1')");
    pgf_exec(db, "BEGIN"); /* the current-version key is checked at commit */
    workflow_id =
        pgf_value(db, "INSERT INTO workflows (tenant_id, name, trigger_connector, trigger_event) "
                      "SELECT id, 'Pickup', 'meta', 'message' FROM tenants RETURNING id");
    char *sql = xconcat(
        "INSERT INTO workflow_versions (workflow_id, version, definition) VALUES ('", workflow_id,
        "', 1, '", definition, "'), ('", workflow_id, "', 2, '{\"name\": \"broken\"}')", NULL);
    pgf_exec(db, sql);
    pgf_exec(db, "COMMIT");
    free(sql);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    PQfinish(db);
    free(workflow_id);
    return 0;
}

/* The first get reads the row; the second is served from the cache, even with the row gone. */
static void loads_once_then_serves_from_memory(void **state)
{
    (void)state;
    engine_defs *d = engine_defs_new();
    char err[256] = "";
    const wf_def *a = engine_defs_get(d, db, workflow_id, 1, NULL, err, sizeof err);
    assert_non_null(a);
    pgf_exec(db, "BEGIN");
    pgf_exec(db, "SET CONSTRAINTS ALL DEFERRED");
    pgf_exec(db, "DELETE FROM workflow_versions WHERE version = 1");
    const wf_def *b = engine_defs_get(d, db, workflow_id, 1, NULL, err, sizeof err);
    pgf_exec(db, "ROLLBACK");
    assert_ptr_equal(a, b);
    engine_defs_free(d);
}

/* A missing version and a stored definition that does not parse are errors naming them. */
static void missing_and_unparsable_versions_are_named(void **state)
{
    (void)state;
    engine_defs *d = engine_defs_new();
    char err[256] = "";
    assert_null(engine_defs_get(d, db, workflow_id, 7, NULL, err, sizeof err));
    assert_non_null(strstr(err, "has no version 7"));
    assert_null(engine_defs_get(d, db, workflow_id, 2, NULL, err, sizeof err));
    assert_non_null(strstr(err, "version 2 does not parse"));
    engine_defs_free(d);
}

/* A definition passed in is parsed without a round trip: a broken connection does not matter. */
static void given_definition_needs_no_database(void **state)
{
    (void)state;
    engine_defs *d = engine_defs_new();
    char err[256] = "";
    const wf_def *def = engine_defs_get(d, NULL, "00000000-0000-0000-0000-000000000001", 3,
                                        definition, err, sizeof err);
    assert_non_null(def);
    assert_ptr_equal(def, engine_defs_get(d, NULL, "00000000-0000-0000-0000-000000000001", 3, NULL,
                                          err, sizeof err));
    engine_defs_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loads_once_then_serves_from_memory),
        cmocka_unit_test(missing_and_unparsable_versions_are_named),
        cmocka_unit_test(given_definition_needs_no_database),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
