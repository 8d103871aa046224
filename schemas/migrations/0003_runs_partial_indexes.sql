-- 0003: narrower indexes on runs, for the executor's write path.
--
-- Every claim and every finish updates a run's status, and such an update cannot be HOT: it adds
-- an entry to every index of runs whose predicate the new row matches. Two indexes only serve
-- rows in a few statuses, so they become partial:
--   runs_ordering_idx: the claim's "no earlier pending run of this ordering key" check only ever
--     looks for pending runs;
--   runs_tenant_status_idx: operators look up a tenant's unfinished runs; finished runs (the vast
--     majority) are listed per workflow through the runs_workflow_* indexes.

DROP INDEX runs_ordering_idx;
CREATE INDEX runs_ordering_idx ON runs (ordering_key, ordering_seq) WHERE status = 'pending';

DROP INDEX runs_tenant_status_idx;
CREATE INDEX runs_tenant_status_idx ON runs (tenant_id, status)
    WHERE status IN ('pending', 'running', 'waiting');
