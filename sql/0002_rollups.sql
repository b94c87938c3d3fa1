-- Rollups: daily metrics per proxy, latency histograms, connection
-- intervals and daily peak concurrency, and period snapshots.
--
-- On TimescaleDB usage_daily and usage_latency_daily are continuous
-- aggregates; on plain PostgreSQL they are tables with the same columns that
-- internal/rollup maintains from the invalidation log. Both are read the same
-- way. The aggregate expressions here must match internal/rollup's.

-- +goose Up
-- Log-scale latency bucket (see internal/rollup/latency.go), set at ingest so
-- that the histogram is a plain GROUP BY on both backends.
ALTER TABLE usage_events ADD COLUMN latency_bucket smallint;

-- Connection ids touched by start/end events, consumed by the rollup worker
-- to re-pair connections.
CREATE TABLE usage_connection_invalidations (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  proxy_id      text        NOT NULL,
  connection_id text        NOT NULL,
  logged_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_connection_invalidations_proxy_idx ON usage_connection_invalidations (proxy_id);
CREATE INDEX usage_invalidations_logged_at_idx ON usage_invalidations (logged_at);

-- Connection intervals [start_time, end_time) after pairing each start with
-- the earliest unused end of its connection id at or after it; unpaired
-- starts end at start + MAX_CONNECTION_AGE.
CREATE TABLE usage_connections (
  proxy_id      text        NOT NULL,
  connection_id text        NOT NULL,
  start_time    timestamptz NOT NULL,
  end_time      timestamptz NOT NULL,
  paired        boolean     NOT NULL
);
CREATE INDEX usage_connections_conn_idx ON usage_connections (proxy_id, connection_id);
CREATE INDEX usage_connections_end_idx ON usage_connections (proxy_id, end_time);

-- Exact daily peak of concurrent connections (not expressible as an aggregate).
CREATE TABLE usage_daily_peak (
  proxy_id text NOT NULL,
  day      date NOT NULL,
  peak     int  NOT NULL,
  PRIMARY KEY (proxy_id, day)
);

-- Snapshots written by POST /proxy/usage/aggregate.
CREATE TABLE proxy_usage_aggregation (
  user_id      text        NOT NULL REFERENCES users (id),
  period_start date        NOT NULL,
  period_end   date        NOT NULL,
  tier         text        NOT NULL,
  proxy_count  int         NOT NULL,
  active_days  int         NOT NULL,
  totals       jsonb       NOT NULL,
  snapshot_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, period_start, period_end)
);

-- +goose StatementBegin
DO $$
BEGIN
  IF current_setting('proxyusage.backend', true) = 'timescaledb' THEN
    EXECUTE $q$
      CREATE MATERIALIZED VIEW usage_daily
      WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
      SELECT proxy_id,
             time_bucket(interval '1 day', time) AS bucket,
             count(*) AS event_count,
             count(*) FILTER (WHERE event_type = 'connection_start') AS connection_count,
             count(*) FILTER (WHERE event_type = 'connection_end') AS success_count,
             count(*) FILTER (WHERE event_type = 'error') AS error_count,
             sum(bytes_sent) AS bytes_sent,
             sum(bytes_received) AS bytes_received,
             sum(duration_us) FILTER (WHERE event_type = 'connection_end') AS duration_sum_us,
             count(duration_us) FILTER (WHERE event_type = 'connection_end') AS duration_count,
             sum(latency_us) AS latency_sum_us,
             count(latency_us) AS latency_count,
             max(latency_us) AS latency_max_us,
             min(time) AS first_event_at,
             max(time) AS last_event_at
        FROM usage_events
       GROUP BY proxy_id, time_bucket(interval '1 day', time)
      WITH NO DATA $q$;
    EXECUTE $q$
      CREATE MATERIALIZED VIEW usage_latency_daily
      WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
      SELECT proxy_id,
             time_bucket(interval '1 day', time) AS bucket,
             latency_bucket,
             count(*) AS samples
        FROM usage_events
       WHERE latency_bucket IS NOT NULL
       GROUP BY proxy_id, time_bucket(interval '1 day', time), latency_bucket
      WITH NO DATA $q$;
    -- Backstop refreshes; the rollup worker refreshes invalidated days
    -- within seconds.
    PERFORM add_continuous_aggregate_policy('usage_daily',
      start_offset => interval '40 days', end_offset => interval '1 hour', schedule_interval => interval '1 hour');
    PERFORM add_continuous_aggregate_policy('usage_latency_daily',
      start_offset => interval '40 days', end_offset => interval '1 hour', schedule_interval => interval '1 hour');
    -- Columnstore for chunks past the late-data window.
    ALTER TABLE usage_events SET (timescaledb.compress,
      timescaledb.compress_segmentby = 'proxy_id', timescaledb.compress_orderby = 'time');
    PERFORM add_compression_policy('usage_events', interval '45 days');
    -- Raw retention; the service re-applies RAW_RETENTION at start.
    PERFORM add_retention_policy('usage_events', interval '400 days');
  ELSE
    CREATE TABLE usage_daily (
      proxy_id         text        NOT NULL,
      bucket           timestamptz NOT NULL,
      event_count      bigint      NOT NULL,
      connection_count bigint      NOT NULL,
      success_count    bigint      NOT NULL,
      error_count      bigint      NOT NULL,
      bytes_sent       numeric,
      bytes_received   numeric,
      duration_sum_us  numeric,
      duration_count   bigint      NOT NULL,
      latency_sum_us   numeric,
      latency_count    bigint      NOT NULL,
      latency_max_us   bigint,
      first_event_at   timestamptz,
      last_event_at    timestamptz,
      PRIMARY KEY (proxy_id, bucket)
    );
    CREATE TABLE usage_latency_daily (
      proxy_id       text        NOT NULL,
      bucket         timestamptz NOT NULL,
      latency_bucket smallint    NOT NULL,
      samples        bigint      NOT NULL,
      PRIMARY KEY (proxy_id, bucket, latency_bucket)
    );
  END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_class WHERE relname = 'usage_daily' AND relkind = 'v') THEN
    DROP MATERIALIZED VIEW usage_latency_daily;
    DROP MATERIALIZED VIEW usage_daily;
  ELSE
    DROP TABLE usage_latency_daily;
    DROP TABLE usage_daily;
  END IF;
END
$$;
-- +goose StatementEnd
DROP TABLE proxy_usage_aggregation;
DROP TABLE usage_daily_peak;
DROP TABLE usage_connections;
DROP TABLE usage_connection_invalidations;
DROP INDEX usage_invalidations_logged_at_idx;
ALTER TABLE usage_events DROP COLUMN latency_bucket;
