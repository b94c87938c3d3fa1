-- Each peak slot keeps its edges (internal/rollup/slotedges.go).
--
-- A re-paired connection changed the slots its old and new edges fall in,
-- and each was recomputed by re-reading every interval with an edge in it
-- from usage_connections: under live ingest a busy proxy's current slot,
-- on every run (BENCHMARKS.md (7): 75,000 interval rows a run at 1,000
-- proxies, the worker's largest statement). The slot now stores its
-- edges, and a run applies the changes to them: one row read and written
-- per changed slot. Reads of proxies with pending connections do the same
-- without writing.
--
-- edges is 9 bytes per edge, in order of instant then delta: the instant
-- in unix microseconds (int8, big-endian), then the delta (int1: 1 for a
-- start, -1 for an end).
--
-- The state is dropped, as in 0016: the worker fills a proxy-day's slots
-- (with their edges), hours and midnight counts from its stored intervals
-- the first time it touches the day, reads compute days without state from
-- their intervals, and the stored peaks (usage_daily_peak) stay valid.

-- +goose Up
DELETE FROM usage_peak_hours;
DELETE FROM usage_peak_slots;
DELETE FROM usage_peak_days;
ALTER TABLE usage_peak_slots ADD COLUMN edges bytea NOT NULL;

-- +goose Down
DELETE FROM usage_peak_hours;
DELETE FROM usage_peak_slots;
DELETE FROM usage_peak_days;
ALTER TABLE usage_peak_slots DROP COLUMN edges;
