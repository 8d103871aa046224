-- 0001_core: the engine's data model.
--
-- Tenants and who may act for them; connections to the six platforms with their (encrypted)
-- OAuth tokens; workflows and their immutable versions; the dedupe keys of intake; runs and the
-- attempts of their nodes; and an audit trail.
--
-- Applied by `hookflow-engine migrate` in one transaction. Never edit this file once applied:
-- add a new NNNN_name.sql instead (the runner refuses a changed checksum).
-- gen_random_uuid() is built into PostgreSQL 13+, so no extension is needed.

-- ---------------------------------------------------------------------------------------------
-- Tenants and access
-- ---------------------------------------------------------------------------------------------

CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]*$'),
    name        text NOT NULL,
    -- sandbox tenants run against the platforms' sandbox APIs and may be reset freely
    environment text NOT NULL DEFAULT 'production'
                CHECK (environment IN ('production', 'sandbox')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A tenant's branches (locations, business units); roles are granted per branch.
CREATE TABLE branches (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    branch     text NOT NULL CHECK (branch <> ''),
    name       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, branch)
);

-- Branch-level role mappings: subject (the bearer token's user) holds one role in one branch.
-- Only 'admin' may use the workflow and integration APIs.
CREATE TABLE role_mappings (
    tenant_id  uuid NOT NULL,
    branch     text NOT NULL,
    subject    text NOT NULL CHECK (subject <> ''),
    role       text NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, branch, subject),
    FOREIGN KEY (tenant_id, branch) REFERENCES branches (tenant_id, branch) ON DELETE CASCADE
);
-- Authorisation looks a subject up across its tenant's branches.
CREATE INDEX role_mappings_subject_idx ON role_mappings (subject, tenant_id);

-- ---------------------------------------------------------------------------------------------
-- Connections to the platforms
-- ---------------------------------------------------------------------------------------------

-- One authorised account of one connector for one tenant. `account` is the provider's tenant id
-- carried by every webhook (Xero tenantId, QuickBooks realmId, HubSpot portalId, Klaviyo
-- account, Twilio AccountSid, Meta page id); UNIQUE (connector, account) makes an incoming event
-- map to exactly one tenant. A connection is 'pending' while the OAuth dance runs and the account
-- is not known yet (NULLs do not collide in the unique constraint).
-- Tokens are sealed with AES-256-GCM (hf_aead_seal: nonce || ciphertext || tag) under a key from
-- the secrets dir; they never appear in plaintext in the database. token_version increments on
-- every rotation so two workers refreshing at once cannot overwrite each other's token
-- (UPDATE ... WHERE token_version = $seen).
CREATE TABLE connections (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    connector         text NOT NULL,
    account           text,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'active', 'disabled')),
    granted_scopes    text[] NOT NULL DEFAULT '{}',
    access_token_enc  bytea,
    refresh_token_enc bytea,
    token_expires_at  timestamptz,
    token_version     integer NOT NULL DEFAULT 0 CHECK (token_version >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (connector, account),
    CHECK (status = 'pending' OR account IS NOT NULL)
);
CREATE INDEX connections_tenant_idx ON connections (tenant_id, connector);
-- The token refresher looks for active connections whose access token expires soon.
CREATE INDEX connections_token_expiry_idx ON connections (token_expires_at)
    WHERE status = 'active';

-- Beta connectors may be enabled for a tenant only after support approved it.
CREATE TABLE support_approvals (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    connector   text NOT NULL,
    approved_by text NOT NULL,
    approved_at timestamptz NOT NULL DEFAULT now(),
    note        text,
    PRIMARY KEY (tenant_id, connector)
);

-- ---------------------------------------------------------------------------------------------
-- Workflows
-- ---------------------------------------------------------------------------------------------

-- A workflow is a name plus a pointer to its current immutable version. trigger_connector and
-- trigger_event are copied from the current version's definition so that intake matches an
-- event with one index scan instead of reading JSON. Deleting is soft (deleted_at), so the runs
-- of a deleted workflow stay readable.
CREATE TABLE workflows (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name              text NOT NULL CHECK (name <> ''),
    enabled           boolean NOT NULL DEFAULT false,
    current_version   integer NOT NULL DEFAULT 1 CHECK (current_version >= 1),
    trigger_connector text NOT NULL,
    trigger_event     text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);
-- Intake: which enabled workflows does (connector, event) trigger, for the event's tenant.
CREATE INDEX workflows_trigger_idx ON workflows (trigger_connector, trigger_event, tenant_id)
    WHERE enabled AND deleted_at IS NULL;
-- Names are unique among a tenant's live workflows (`hookflow-engine apply` matches by name).
CREATE UNIQUE INDEX workflows_tenant_name_key ON workflows (tenant_id, name)
    WHERE deleted_at IS NULL;

-- Every saved definition is a new version; a run records the version it executes, so editing a
-- workflow never changes a run in flight.
CREATE TABLE workflow_versions (
    workflow_id uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    version     integer NOT NULL CHECK (version >= 1),
    definition  jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text,
    PRIMARY KEY (workflow_id, version)
);

-- The current version must exist. Deferred, so a workflow and its first version are inserted in
-- one transaction in either order.
ALTER TABLE workflows ADD CONSTRAINT workflows_current_version_fkey
    FOREIGN KEY (id, current_version) REFERENCES workflow_versions (workflow_id, version)
    DEFERRABLE INITIALLY DEFERRED;

-- ---------------------------------------------------------------------------------------------
-- Intake and runs
-- ---------------------------------------------------------------------------------------------

-- One row per event id ever taken in: intake inserts it (ON CONFLICT DO NOTHING) in the same
-- transaction as the event's runs, so a Kafka redelivery finds it and starts nothing. The
-- envelope id is stable per provider event and unique across providers. Where it came from in
-- Kafka is kept for replay and audit.
CREATE TABLE event_keys (
    event_id        text PRIMARY KEY,
    provider        text NOT NULL,
    account         text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    kafka_topic     text,
    kafka_partition integer,
    kafka_offset    bigint
);
-- Retention: old keys are pruned by age.
CREATE INDEX event_keys_received_at_idx ON event_keys (received_at);

-- One execution of one workflow version for one event.
--   pending   waiting to start (next_run_at)      running    leased by a worker
--   waiting   a retry backoff or a delay node is sleeping until next_run_at
--   succeeded / failed / cancelled                 terminal, finished_at set
-- A worker claims a runnable row with FOR UPDATE SKIP LOCKED and sets lease_owner and
-- lease_expires_at; a run whose lease expired (its worker died) is claimed again elsewhere.
-- ordering_key is the Kafka key (provider:account) and ordering_seq increases with event order
-- under one key, so runs of one key can be started in event order.
-- UNIQUE (workflow_id, event_id) is the second guard against running an event twice.
CREATE TABLE runs (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_id      uuid NOT NULL,
    workflow_version integer NOT NULL,
    event_id         text NOT NULL,
    ordering_key     text NOT NULL,
    ordering_seq     bigint NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'waiting', 'succeeded', 'failed',
                                       'cancelled')),
    trigger          jsonb NOT NULL,                -- the event envelope
    context          jsonb NOT NULL DEFAULT '{}',   -- node outputs so far
    next_run_at      timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    attempt          integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (workflow_id, event_id),
    FOREIGN KEY (workflow_id, workflow_version)
        REFERENCES workflow_versions (workflow_id, version) ON DELETE CASCADE,
    CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL)),
    CHECK (status NOT IN ('succeeded', 'failed', 'cancelled') OR finished_at IS NOT NULL)
);
-- Claiming: runnable runs in due order. Partial, so finished runs never bloat it.
CREATE INDEX runs_runnable_idx ON runs (next_run_at) WHERE status IN ('pending', 'waiting');
-- Recovery: running runs whose worker stopped renewing the lease.
CREATE INDEX runs_lease_idx ON runs (lease_expires_at) WHERE status = 'running';
-- Ordering: is an earlier run of this key still to start?
CREATE INDEX runs_ordering_idx ON runs (ordering_key, ordering_seq);
-- API: a workflow's runs newest first; a tenant's runs by status.
CREATE INDEX runs_workflow_created_idx ON runs (workflow_id, created_at DESC);
CREATE INDEX runs_tenant_status_idx ON runs (tenant_id, status);

-- Each try of each node of a run. A row is written as 'running' before the connector is called
-- and completed after; a row still 'running' after a crash becomes 'outcome_unknown' and is
-- retried with the same idempotency_key where the platform honours one (Xero Idempotency-Key,
-- QuickBooks requestid). input holds the parameters after templating.
-- UNIQUE (run_id, node_id, attempt) also serves "attempts of a run" (run_id leads the index).
CREATE TABLE node_attempts (
    id              bigserial PRIMARY KEY,
    run_id          uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    node_id         text NOT NULL,
    attempt         integer NOT NULL CHECK (attempt >= 1),
    status          text NOT NULL
                    CHECK (status IN ('succeeded', 'failed', 'outcome_unknown', 'skipped',
                                      'running')),
    input           jsonb,
    output          jsonb,
    http_status     integer,
    duration_ms     integer CHECK (duration_ms >= 0),
    error           text,
    idempotency_key text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (run_id, node_id, attempt)
);

-- ---------------------------------------------------------------------------------------------
-- Audit
-- ---------------------------------------------------------------------------------------------

-- Who changed what (workflow saved, connection enabled, approval granted, ...). Append-only. No
-- foreign key on tenant_id: the trail outlives what it describes; NULL for platform-wide actions.
CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    tenant_id    uuid,
    actor        text NOT NULL,
    action       text NOT NULL,
    subject_type text,
    subject_id   text,
    detail       jsonb NOT NULL DEFAULT '{}',
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_at_idx ON audit_log (tenant_id, at DESC);
