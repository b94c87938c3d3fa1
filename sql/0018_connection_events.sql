-- The connection events (starts and ends) in a narrow table of their own,
-- for pairing (internal/rollup/connections.go).
--
-- Re-pairing a connection reads every start and end of its (proxy,
-- connectionId). From usage_events that is one index probe per chunk on
-- TimescaleDB, whatever the connection's age: the rollup worker's pairing
-- lookups and the reads of proxies with pending connections took about a
-- second per 10,000 connections (BENCHMARKS.md, fairness 8b and live
-- ingest 12), the largest statement under a connection-heavy tenant. Here
-- it is one probe of one B-tree on both backends. Ingest writes a row per
-- connection event in the same transaction as the event
-- (internal/ingest/store), and the partial index on usage_events that
-- served pairing goes.
--
-- Old replicas store events without these rows: stop them before
-- migrating.

-- +goose Up
CREATE TABLE usage_connection_events (
  proxy_id      text        NOT NULL,
  connection_id text        NOT NULL,
  time          timestamptz NOT NULL,
  is_start      boolean     NOT NULL
);
INSERT INTO usage_connection_events (proxy_id, connection_id, time, is_start)
SELECT proxy_id, connection_id, time, event_type = 'connection_start'
  FROM usage_events
 WHERE event_type IN ('connection_start', 'connection_end') AND connection_id IS NOT NULL;
CREATE INDEX usage_connection_events_key_idx ON usage_connection_events (proxy_id, connection_id);
-- Raw-event retention (TimescaleDB) deletes by time: rows arrive nearly in
-- time order, so a BRIN index finds the old ones for almost nothing.
CREATE INDEX usage_connection_events_time_idx ON usage_connection_events USING brin (time);
DROP INDEX usage_events_connection_idx;
-- The TimescaleDB job the rollup worker schedules next to the raw-event
-- retention policy (config {"retention": "<interval>"}).
-- +goose StatementBegin
CREATE PROCEDURE usage_prune_connection_events(job_id int, config jsonb)
LANGUAGE sql AS $$
  DELETE FROM usage_connection_events WHERE time < now() - (config->>'retention')::interval
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    PERFORM delete_job(job_id) FROM timescaledb_information.jobs WHERE proc_name = 'usage_prune_connection_events';
  END IF;
END
$$;
-- +goose StatementEnd
DROP PROCEDURE usage_prune_connection_events(int, jsonb);
CREATE INDEX usage_events_connection_idx ON usage_events (proxy_id, connection_id, time)
  WHERE connection_id IS NOT NULL;
DROP TABLE usage_connection_events;
