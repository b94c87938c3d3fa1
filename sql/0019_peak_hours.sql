-- An hour level over the peak slots (internal/rollup/peaks.go).
--
-- A day's peak was derived from all of its slots: up to 288 rows per
-- proxy-day, read by every rollup run that touched the day and by every
-- read of a proxy with connections still in the log. Under live ingest
-- that is every proxy's today, every run (BENCHMARKS.md: the largest
-- statement of the worker, 100,000 slot rows a run at 1,000 proxies).
-- Each hour now keeps the same state as a slot, summed over its slots in
-- order: the net change, and the highest running value after an instant
-- from the hour's start. A day's peak reads its hours (at most 24), and a
-- changed slot re-reads the slots of its own hour (at most 12).
--
-- An hour row exists exactly when a slot of the hour does, and always
-- equals the fold of its slots (checked by the rollup tests).

-- +goose Up
CREATE TABLE usage_peak_hours (
  proxy_id   text        NOT NULL,
  hour_start timestamptz NOT NULL,
  net        int         NOT NULL, -- starts minus ends in the hour
  top        int         NOT NULL, -- highest running sum after an instant's edges, from the hour's start
  PRIMARY KEY (proxy_id, hour_start)
);
INSERT INTO usage_peak_hours (proxy_id, hour_start, net, top)
SELECT proxy_id, hour_start, sum(net), max(before + top)
  FROM (SELECT proxy_id, net, top,
               date_trunc('hour', slot_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour_start,
               coalesce(sum(net) OVER (PARTITION BY proxy_id, date_trunc('hour', slot_start AT TIME ZONE 'UTC')
                                       ORDER BY slot_start ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
          FROM usage_peak_slots) s
 GROUP BY proxy_id, hour_start;

-- +goose Down
DROP TABLE usage_peak_hours;
