-- The connection log carries each logged start and end, and
-- usage_connections keeps a connection's unmatched ends: a connection's
-- stored rows plus its pending log entries are all of its events.
--
-- Re-pairing a connection read its stored intervals (usage_connections)
-- and every start and end it ever had (usage_connection_events, 0018):
-- two index probes a connection, for the rollup worker and for every read
-- of a proxy with connections waiting. Under ten minutes of live ingest
-- that lookup was the reads' largest statement, and ingest wrote a
-- usage_connection_events row per connection event (BENCHMARKS.md, live
-- ingest (12)). Now a log entry is the event itself (times, is_starts
-- beside proxy_ids and connection_ids), pairing reads one table, and
-- ingest writes no row beyond the log's. Pairing a connection's stored
-- intervals and unmatched ends with its new events gives what pairing all
-- of its events gives (internal/rollup/concurrency.go, pairEnds), and the
-- intervals outlive the raw events' retention.
--
-- An unmatched end is a usage_connections row with start_time NULL (and
-- paired false): every range predicate on start_time leaves it out.
--
-- Existing data: a connection's events not held by its stored intervals
-- (starts, paired ends) are its unmatched ends when the connection is
-- settled, and new log entries when it waits (or, inconsistently, holds a
-- start no interval has); the old log rows go.
--
-- Old replicas write usage_connection_events, which is dropped: their
-- flushes with connection events fail (nothing is acknowledged, nothing
-- lost). Stop them before migrating.

-- +goose Up
ALTER TABLE usage_connections ALTER COLUMN start_time DROP NOT NULL;

CREATE TEMP TABLE connection_rest ON COMMIT DROP AS
SELECT proxy_id, connection_id, time, is_start FROM usage_connection_events
EXCEPT ALL
(SELECT proxy_id, connection_id, start_time, true FROM usage_connections
 UNION ALL
 SELECT proxy_id, connection_id, end_time, false FROM usage_connections WHERE paired);

CREATE TEMP TABLE connection_waiting ON COMMIT DROP AS
SELECT u.proxy_id, u.connection_id
  FROM usage_connection_invalidations l, unnest(l.proxy_ids, l.connection_ids) AS u(proxy_id, connection_id)
UNION
SELECT proxy_id, connection_id FROM connection_rest WHERE is_start;

INSERT INTO usage_connections (proxy_id, connection_id, start_time, end_time, paired)
SELECT r.proxy_id, r.connection_id, NULL, r.time, false
  FROM connection_rest r
 WHERE NOT EXISTS (SELECT 1 FROM connection_waiting w WHERE w.proxy_id = r.proxy_id AND w.connection_id = r.connection_id);

ALTER TABLE usage_connection_invalidations ADD COLUMN times timestamptz[], ADD COLUMN is_starts boolean[];

-- A row per owner and up to 4,096 entries, as ingest logs them.
INSERT INTO usage_connection_invalidations (user_id, proxy_ids, connection_ids, times, is_starts, logged_at)
SELECT user_id, array_agg(proxy_id ORDER BY n), array_agg(connection_id ORDER BY n), array_agg(time ORDER BY n),
       array_agg(is_start ORDER BY n),
       (SELECT coalesce(min(logged_at), now()) FROM usage_connection_invalidations WHERE times IS NULL)
  FROM (SELECT coalesce(p.user_id, '') AS user_id, r.*,
               row_number() OVER (PARTITION BY coalesce(p.user_id, '') ORDER BY r.proxy_id, r.connection_id, r.time, r.is_start) AS n
          FROM connection_rest r
          JOIN connection_waiting w ON w.proxy_id = r.proxy_id AND w.connection_id = r.connection_id
          LEFT JOIN proxies p ON p.id = r.proxy_id) e
 GROUP BY user_id, (n - 1) / 4096
 ORDER BY user_id, (n - 1) / 4096;
DELETE FROM usage_connection_invalidations WHERE times IS NULL;

ALTER TABLE usage_connection_invalidations
  ALTER COLUMN times SET NOT NULL, ALTER COLUMN is_starts SET NOT NULL,
  ADD CONSTRAINT usage_connection_invalidations_events_check
    CHECK (cardinality(times) = cardinality(proxy_ids) AND cardinality(is_starts) = cardinality(proxy_ids));

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
DROP TABLE usage_connection_events;

-- +goose Down
-- As 0018: the connection events from the raw events (those retention
-- kept), and the old log rows name connections, not events.
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
CREATE INDEX usage_connection_events_time_idx ON usage_connection_events USING brin (time);
-- +goose StatementBegin
CREATE PROCEDURE usage_prune_connection_events(job_id int, config jsonb)
LANGUAGE sql AS $$
  DELETE FROM usage_connection_events WHERE time < now() - (config->>'retention')::interval
$$;
-- +goose StatementEnd
DELETE FROM usage_connections WHERE start_time IS NULL;
ALTER TABLE usage_connections ALTER COLUMN start_time SET NOT NULL;
ALTER TABLE usage_connection_invalidations
  DROP CONSTRAINT usage_connection_invalidations_events_check, DROP COLUMN times, DROP COLUMN is_starts;
