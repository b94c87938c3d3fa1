-- Covering indexes for the read path: the reader's rollup queries
-- (per proxy, a range of days) become index-only scans instead of one heap
-- fetch per row. On TimescaleDB the indexes on the continuous aggregates
-- are created on their materialization hypertables, which the reader
-- queries directly (see internal/rollup/reader.go).

-- +goose Up
CREATE INDEX usage_daily_read_idx ON usage_daily (proxy_id, bucket)
  INCLUDE (event_count, connection_count, success_count, error_count, bytes_sent, bytes_received,
           duration_sum_us, duration_count, latency_sum_us, latency_count, latency_max_us,
           first_event_at, last_event_at);
CREATE INDEX usage_latency_daily_read_idx ON usage_latency_daily (proxy_id, bucket, latency_bucket) INCLUDE (samples);
CREATE INDEX usage_daily_peak_read_idx ON usage_daily_peak (proxy_id, day) INCLUDE (peak);

-- +goose Down
-- +goose StatementBegin
DO $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT schemaname, indexname FROM pg_indexes
            WHERE indexname IN ('usage_daily_read_idx', 'usage_latency_daily_read_idx', 'usage_daily_peak_read_idx') LOOP
    EXECUTE format('DROP INDEX %I.%I', r.schemaname, r.indexname);
  END LOOP;
END
$$;
-- +goose StatementEnd
