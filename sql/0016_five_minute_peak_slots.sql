-- Peak slots of 5 minutes instead of 15 (internal/rollup/peaks.go).
--
-- Under sustained ingest the worker and the reads of proxies with
-- connections still in the log re-read the edges of every slot a changed
-- connection starts or ends in: a live proxy's current slot, which holds
-- every edge of the slot's elapsed part (thousands in a busy 15 minutes;
-- BENCHMARKS.md (12)). A third of the width is a third of those rows,
-- for 288 slot rows at most to derive a day's peak instead of 96.
--
-- The state of the old width is dropped; the worker fills a proxy-day's
-- state from its stored intervals the first time it touches the day, and
-- the stored peaks (usage_daily_peak) stay valid meanwhile.

-- +goose Up
DELETE FROM usage_peak_slots;
DELETE FROM usage_peak_days;

-- +goose Down
DELETE FROM usage_peak_slots;
DELETE FROM usage_peak_days;
