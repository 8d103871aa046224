-- 0002_api: what `hookflow-engine serve` (the admin API) needs beyond the engine's data model.
--
--   * oauth_states: the pending OAuth authorisations (state + PKCE verifier) between
--     POST /api/integrations/{connector}/oauth/start and the platform's redirect back to
--     .../oauth/callback.
--   * connections: the scopes shown to the admin and requested from the platform, who connected
--     it and when; at most one not-yet-authorised placeholder per tenant and connector.
--   * runs: retries. A retry re-queues the SAME run row (so the event's dedupe key, the run id the
--     admin is looking at and UNIQUE (workflow_id, event_id) all stay as they are) and bumps its
--     generation; the node attempts the new generation must not see move to node_attempt_history.
--   * an index for the runs listing filtered by status.
--
-- Never edit this file once applied: add a new NNNN_name.sql instead.

-- ---------------------------------------------------------------------------------------------
-- OAuth authorisations in flight
-- ---------------------------------------------------------------------------------------------

-- One row per POST .../oauth/start. The state handed to the browser is 32 random bytes
-- (base64url); only its SHA-256 is stored, so reading this table does not let anyone complete
-- somebody else's authorisation. The PKCE code_verifier must be sent in clear to the token
-- endpoint at the callback, so it cannot be hashed: it is sealed with the token key
-- (engine_token_seal, AAD context "<connector>:<hex sha256 of state>:pkce_verifier").
-- A state is good for one callback within 10 minutes: the callback consumes it (used_at) before
-- it talks to the platform, so a replayed redirect is refused even while the first one runs.
-- The callback carries no bearer token; tenant, branch and user here say on whose behalf it runs.
CREATE TABLE oauth_states (
    state_hash        bytea PRIMARY KEY CHECK (octet_length(state_hash) = 32),
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    connector         text NOT NULL,
    branch            text NOT NULL,
    created_by        text NOT NULL,               -- the admin's JWT "sub"
    code_verifier_enc bytea NOT NULL,
    redirect_uri      text NOT NULL,               -- must be sent again, identical, at the exchange
    scopes            text[] NOT NULL DEFAULT '{}', -- the catalog's scopes shown to the admin
    account           text,                        -- an account the admin named (HubSpot, Klaviyo)
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL DEFAULT now() + interval '10 minutes',
    used_at           timestamptz,
    CHECK (expires_at > created_at)
);
-- Housekeeping: start deletes states that expired a day ago.
CREATE INDEX oauth_states_expires_idx ON oauth_states (expires_at);

-- ---------------------------------------------------------------------------------------------
-- Connections
-- ---------------------------------------------------------------------------------------------

-- requested_scopes: what the admin was shown and the platform was asked for (the catalog's
-- scopes at the time); granted_scopes (0001) is what the platform's token answer says it granted.
-- connected_by / connected_at: the admin who last authorised it (OAuth callback or Twilio
-- credentials) and when.
ALTER TABLE connections
    ADD COLUMN requested_scopes text[] NOT NULL DEFAULT '{}',
    ADD COLUMN connected_by     text,
    ADD COLUMN connected_at     timestamptz;

-- A tenant starting OAuth for a connector it has no connection to gets one 'pending' row without
-- an account (the account is only known after the callback). One such placeholder per tenant and
-- connector, however often the admin clicks "connect"; the callback fills it in.
CREATE UNIQUE INDEX connections_placeholder_key ON connections (tenant_id, connector)
    WHERE account IS NULL;

-- ---------------------------------------------------------------------------------------------
-- Runs: retries
-- ---------------------------------------------------------------------------------------------

-- generation: 1 for the run intake created, +1 for every POST /api/runs/{id}/retry.
-- retried_at / retried_by / retry_from: the latest retry ('start' or 'failed_node').
-- A retry sets status 'pending', next_run_at now(), clears the lease, error, started_at and
-- finished_at, and moves workflow_version to the workflow's current version; a worker then claims
-- it like any other runnable run.
ALTER TABLE runs
    ADD COLUMN generation integer NOT NULL DEFAULT 1 CHECK (generation >= 1),
    ADD COLUMN retried_at timestamptz,
    ADD COLUMN retried_by text,
    ADD COLUMN retry_from text CHECK (retry_from IN ('start', 'failed_node'));

-- The attempts of earlier generations of a run. The executor rebuilds a claimed run's node state
-- from every node_attempts row of the run (a 'succeeded' row marks its node done with that
-- output; the highest attempt number is where the node's retry budget stands), so a retry moves
-- out of node_attempts what the new generation must not build on:
--   from 'start':        every attempt (and the run's context is cleared);
--   from 'failed_node':  every attempt that did not succeed, so the outputs of the nodes that
--                        succeeded are kept and the failed node starts again at attempt 1 with
--                        its full retry budget.
-- Rows keep their id (ids are still in execution order across both tables) and say which
-- generation they belonged to. GET /api/runs/{id} shows both.
CREATE TABLE node_attempt_history (
    id              bigint PRIMARY KEY,
    run_id          uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    generation      integer NOT NULL CHECK (generation >= 1),
    node_id         text NOT NULL,
    attempt         integer NOT NULL,
    status          text NOT NULL,
    input           jsonb,
    output          jsonb,
    http_status     integer,
    duration_ms     integer,
    error           text,
    idempotency_key text,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    superseded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX node_attempt_history_run_idx ON node_attempt_history (run_id, id);

-- ---------------------------------------------------------------------------------------------
-- Runs: the listing
-- ---------------------------------------------------------------------------------------------

-- GET /api/workflows/{id}/runs pages newest first with a keyset cursor on (created_at, id): id
-- breaks ties between runs created in the same microsecond (one intake batch), so no run is
-- skipped or shown twice between pages. 0001's runs_workflow_created_idx (workflow_id,
-- created_at DESC) answers it and from/to ranges: the cursor's created_at bounds the index scan
-- and the rare ties are put in id order by an incremental sort, so no wider copy of that index
-- is added to the busiest table.
-- The same listing filtered by status ("show me the failed runs") would otherwise walk every run
-- of a busy workflow to find a few failed ones.
CREATE INDEX runs_workflow_status_created_idx
    ON runs (workflow_id, status, created_at DESC, id DESC);
