/* apply: configuration as code. Loads tenants, branches and roles, support approvals,
 * connections (tokens sealed) and workflows from a declarative JSON document into PostgreSQL,
 * idempotently and in one transaction. The format is described in docs/apply.md. */
#ifndef ENGINE_APPLY_H
#define ENGINE_APPLY_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "catalog.h"
#include "tokens.h"
#include "util.h"

/* Applies the document json (len bytes) to db in one transaction:
 *   - validates all of it first (shape, catalog connectors/events/actions, workflow definitions
 *     through wf_parse, token sources), then upserts row by row, writing one audit_log row
 *     (actor "apply") per change;
 *   - a workflow whose definition differs (jsonb equality) from its current version gets a new
 *     version; an unchanged one keeps its version, so applying twice changes nothing;
 *   - tokens are stored only as engine_token_seal() output under keys; keys may be NULL when
 *     the document sets no token (a token then fails with "...: no token key ...").
 * Relative {"file": ...} token paths resolve against the current directory.
 * dry_run computes the same changes and rolls them back.
 * On success appends one line per tenant to summary ("demo-laundry: 1 connection created, ...",
 * or "...: no changes") and returns 0. On any error rolls back and returns -1 with one line in
 * err that starts with the JSON path of the culprit (e.g. "tenants[0].connections[1].connector:
 * \"shopfy\" is not a catalog connector ..."), or with "line L, column C" for malformed JSON.
 * Never puts a token in err or summary. db must not be inside a transaction. */
HF_MUST_CHECK int engine_apply(PGconn *db, const char *json, size_t len, const engine_keyring *keys,
                               const hf_catalog *cat, bool dry_run, hf_buf *summary, char *err,
                               size_t errlen);

/* engine_apply with relative token file paths resolved against base_dir (the directory of the
 * applied file; NULL for the current directory). */
HF_MUST_CHECK int engine_apply_in(PGconn *db, const char *json, size_t len, const char *base_dir,
                                  const engine_keyring *keys, const hf_catalog *cat, bool dry_run,
                                  hf_buf *summary, char *err, size_t errlen);

#endif
