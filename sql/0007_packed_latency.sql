-- Latency histograms packed one row per proxy-day: usage_latency_daily has
-- a row per (proxy, day, latency bucket) — ~39 per proxy-day in the
-- benchmark — and those rows were most of every read (BENCHMARKS.md). The
-- packed form holds the day's buckets and their sample counts as two
-- parallel arrays, sorted by bucket.
--
-- TimescaleDB: a hierarchical continuous aggregate over usage_latency_daily,
-- refreshed by the rollup worker right after it. usage_latency_daily becomes
-- materialized-only: a refresh of the level above reads it through its
-- view, and that view's real-time part re-evaluated its watermark for every
-- row, making a refresh of two busy days take 8 s instead of 0.7 s
-- (BENCHMARKS.md). Nothing reads that intermediate view for real-time
-- answers: the service reads the materializations, and raw events for the
-- days still in the invalidation log. Existing proxy-days are put in that
-- log so that reads recompute them from raw events until the worker has
-- materialised the new aggregate (a refresh cannot run inside this
-- migration's transaction).
-- Plain PostgreSQL: a table maintained by the rollup worker, filled here
-- from usage_latency_daily, which becomes a view over it (same names and
-- rows on both backends).

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
  IF current_setting('proxyusage.backend', true) = 'timescaledb' THEN
    EXECUTE $q$
      CREATE MATERIALIZED VIEW usage_latency_daily_packed
      WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
      SELECT proxy_id,
             time_bucket(interval '1 day', bucket) AS bucket,
             array_agg(latency_bucket ORDER BY latency_bucket) AS latency_buckets,
             array_agg(samples ORDER BY latency_bucket) AS samples
        FROM usage_latency_daily
       GROUP BY proxy_id, time_bucket(interval '1 day', bucket)
      WITH NO DATA $q$;
    ALTER MATERIALIZED VIEW usage_latency_daily SET (timescaledb.materialized_only = true);
    PERFORM add_continuous_aggregate_policy('usage_latency_daily_packed',
      start_offset => interval '40 days', end_offset => interval '1 hour', schedule_interval => interval '1 hour');
    INSERT INTO usage_invalidations (proxy_ids, days)
    SELECT array_agg(proxy_id), array_agg(day)
      FROM (SELECT proxy_id, (bucket AT TIME ZONE 'UTC')::date AS day, row_number() OVER () AS n FROM usage_daily) d
     GROUP BY (n - 1) / 5000;
  ELSE
    CREATE TABLE usage_latency_daily_packed (
      proxy_id        text        NOT NULL,
      bucket          timestamptz NOT NULL,
      latency_buckets smallint[]  NOT NULL,
      samples         bigint[]    NOT NULL CHECK (cardinality(samples) = cardinality(latency_buckets)),
      PRIMARY KEY (proxy_id, bucket)
    );
    INSERT INTO usage_latency_daily_packed (proxy_id, bucket, latency_buckets, samples)
    SELECT proxy_id, bucket, array_agg(latency_bucket ORDER BY latency_bucket), array_agg(samples ORDER BY latency_bucket)
      FROM usage_latency_daily
     GROUP BY proxy_id, bucket;
    DROP TABLE usage_latency_daily;
    CREATE VIEW usage_latency_daily AS
    SELECT p.proxy_id, p.bucket, u.latency_bucket, u.samples
      FROM usage_latency_daily_packed p, unnest(p.latency_buckets, p.samples) AS u(latency_bucket, samples);
  END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_class WHERE relname = 'usage_latency_daily_packed' AND relkind = 'v') THEN
    DROP MATERIALIZED VIEW usage_latency_daily_packed;
    ALTER MATERIALIZED VIEW usage_latency_daily SET (timescaledb.materialized_only = false);
  ELSE
    CREATE TABLE usage_latency_daily_unpacked (
      proxy_id       text        NOT NULL,
      bucket         timestamptz NOT NULL,
      latency_bucket smallint    NOT NULL,
      samples        bigint      NOT NULL,
      PRIMARY KEY (proxy_id, bucket, latency_bucket)
    );
    INSERT INTO usage_latency_daily_unpacked SELECT * FROM usage_latency_daily;
    DROP VIEW usage_latency_daily;
    DROP TABLE usage_latency_daily_packed;
    ALTER TABLE usage_latency_daily_unpacked RENAME TO usage_latency_daily;
    ALTER INDEX usage_latency_daily_unpacked_pkey RENAME TO usage_latency_daily_pkey;
    CREATE INDEX usage_latency_daily_read_idx ON usage_latency_daily (proxy_id, bucket, latency_bucket) INCLUDE (samples);
  END IF;
END
$$;
-- +goose StatementEnd
