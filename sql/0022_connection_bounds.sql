-- Each proxy's longest stored connection interval, kept by a trigger.
--
-- The intervals open at an instant (a day's midnight counts, the intervals
-- overlapping a day a read recomputes) are those starting before it and
-- ending after it; with no bound on a connection's length either
-- condition alone matches every interval on one side of the instant, so
-- each lookup scanned a proxy's history: rolling up late events for days
-- a month old read every interval of the month after them, a heap fetch
-- each (842 ms of each catch-up run, 48 % of it, BENCHMARKS.md, (6)).
-- No stored interval of the proxy is longer than longest_us, so the
-- lookups read only the starts within that span before the instant (the
-- (proxy_id, start_time) index): about a day's, MAX_CONNECTION_AGE being
-- the length of an unpaired start.
--
-- The trigger fires for every statement that stores intervals (the
-- worker's COPY, a bulk load), so no writer can forget it. The bound only
-- grows: deleting or replacing an interval leaves it, which is still an
-- upper bound. A proxy with no row has no stored interval.

-- +goose Up
CREATE TABLE usage_connection_bounds (
  proxy_id   text   PRIMARY KEY,
  longest_us bigint NOT NULL -- ≥ (end_time - start_time) of every interval of the proxy, in microseconds
);

-- +goose StatementBegin
CREATE FUNCTION usage_connection_bounds_grow() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO usage_connection_bounds AS b (proxy_id, longest_us)
  SELECT proxy_id, max(extract(epoch FROM end_time - start_time) * 1000000)::bigint
    FROM stored WHERE start_time IS NOT NULL GROUP BY proxy_id
  ON CONFLICT (proxy_id) DO UPDATE SET longest_us = excluded.longest_us
   WHERE b.longest_us < excluded.longest_us;
  RETURN NULL;
END
$$;
-- +goose StatementEnd

-- A trigger with a transition table names one event: one for inserts
-- (COPY included), one for updates.
CREATE TRIGGER usage_connections_bound_insert AFTER INSERT ON usage_connections
  REFERENCING NEW TABLE AS stored FOR EACH STATEMENT EXECUTE FUNCTION usage_connection_bounds_grow();
CREATE TRIGGER usage_connections_bound_update AFTER UPDATE ON usage_connections
  REFERENCING NEW TABLE AS stored FOR EACH STATEMENT EXECUTE FUNCTION usage_connection_bounds_grow();

-- Existing intervals. CREATE TRIGGER locks out writers of
-- usage_connections until this migration commits, so none is missed.
INSERT INTO usage_connection_bounds (proxy_id, longest_us)
SELECT proxy_id, max(extract(epoch FROM end_time - start_time) * 1000000)::bigint
  FROM usage_connections WHERE start_time IS NOT NULL GROUP BY proxy_id;

-- +goose Down
DROP TRIGGER usage_connections_bound_update ON usage_connections;
DROP TRIGGER usage_connections_bound_insert ON usage_connections;
DROP FUNCTION usage_connection_bounds_grow();
DROP TABLE usage_connection_bounds;
