-- Peaks maintained from the edges that changed, not from a day's intervals.
--
-- A day's peak is the maximum, over its instants t, of the intervals open
-- at t. The worker used to recompute it by reading every stored interval
-- open on each day a re-paired connection covered: the size of the day.
-- Now it keeps, per proxy and 15-minute slot holding at least one interval
-- edge (a start or an end), the net change of the open count over the
-- slot's edges and the highest running value after an instant's edges
-- (usage_peak_slots), and per proxy-day the intervals open just before
-- and at midnight (usage_peak_days). A day's peak is then the open count
-- at midnight or the best of its slots, each offset by the count before
-- it — at most 96 rows. A re-paired connection changes only the slots of
-- its old and new edges (re-read from the intervals with an edge in the
-- slot: two index range scans) and the midnight counts it crosses (±1).
--
-- A proxy-day without a usage_peak_days row has no state yet: the worker
-- fills it from the stored intervals the first time the day is touched,
-- so nothing is filled here.

-- +goose Up
CREATE TABLE usage_peak_slots (
  proxy_id   text        NOT NULL,
  slot_start timestamptz NOT NULL,
  net        int         NOT NULL, -- starts minus ends in the slot
  top        int         NOT NULL, -- highest running sum after an instant's edges, from the slot's start
  PRIMARY KEY (proxy_id, slot_start)
);
CREATE TABLE usage_peak_days (
  proxy_id   text NOT NULL,
  day        date NOT NULL,
  open_before int NOT NULL, -- intervals with start < midnight <= end
  open_at    int NOT NULL, -- intervals with start <= midnight < end
  PRIMARY KEY (proxy_id, day)
);
CREATE INDEX usage_connections_start_idx ON usage_connections (proxy_id, start_time);

-- +goose Down
DROP INDEX usage_connections_start_idx;
DROP TABLE usage_peak_days;
DROP TABLE usage_peak_slots;
