-- Retention (hookflow-engine prune) deletes finished runs by age: without an index on
-- finished_at each batch would scan the whole table. Partial: unfinished runs have none.
CREATE INDEX runs_finished_idx ON runs (finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');
