/* provider_assert: cmocka assertions on provider results shared by the provider unit tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "provider_assert.h"

void pr_assert_failed(const ingest_result *res, int status, const char *reason)
{
    assert_int_equal(res->status, status);
    assert_string_equal(res->reason, reason);
    assert_int_equal(res->nevents, 0);
    assert_null(res->response_body);
}

void pr_assert_rejected(const ingest_result *res, int status, const char *reason)
{
    pr_assert_failed(res, status, reason);
    assert_true(res->detail[0] != '\0');
}

void pr_assert_event(const ingest_event *e, const char *id, const char *native, const char *account,
                     const char *resource, const char *occurred_at, const char *payload)
{
    assert_string_equal(e->id, id);
    assert_string_equal(e->native_type, native);
    assert_string_equal(e->account, account);
    assert_string_equal(e->resource, resource);
    assert_string_equal(e->occurred_at, occurred_at);
    assert_string_equal(e->payload, payload);
}
