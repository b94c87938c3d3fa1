-- Cheaper writes per ingested event. Every stored event claims a key and
-- appends to the invalidation log, so each index on those tables is paid
-- once per event (BENCHMARKS.md, batch ingest).
--
-- usage_event_keys.received_at is only read by the key pruner, which
-- deletes keys older than the dedup window in batches: keys are appended in
-- received_at order, so a BRIN index finds them at a fraction of the cost
-- of maintaining a B-tree on every insert.
-- usage_invalidations.logged_at is no longer read: the worker's lag comes
-- from the oldest entry by id.

-- +goose Up
DROP INDEX usage_invalidations_logged_at_idx;
DROP INDEX usage_event_keys_received_at_idx;
CREATE INDEX usage_event_keys_received_at_idx ON usage_event_keys USING brin (received_at);

-- +goose Down
DROP INDEX usage_event_keys_received_at_idx;
CREATE INDEX usage_event_keys_received_at_idx ON usage_event_keys (received_at);
CREATE INDEX usage_invalidations_logged_at_idx ON usage_invalidations (logged_at);
