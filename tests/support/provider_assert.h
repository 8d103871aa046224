/* provider_assert: cmocka assertions on provider results shared by the provider unit tests. */
#ifndef HF_TEST_PROVIDER_ASSERT_H
#define HF_TEST_PROVIDER_ASSERT_H

#include "provider.h"

/* An error outcome: status, reason, no events and no response body. */
void pr_assert_failed(const ingest_result *res, int status, const char *reason);

/* pr_assert_failed, plus a non-empty detail. */
void pr_assert_rejected(const ingest_result *res, int status, const char *reason);

/* Every field of event e equals the one given. */
void pr_assert_event(const ingest_event *e, const char *id, const char *native, const char *account,
                     const char *resource, const char *occurred_at, const char *payload);

#endif
