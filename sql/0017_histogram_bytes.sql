-- A proxy-day's latency histogram in one bytea instead of two arrays
-- (internal/rollup/latency.go, Histogram.AppendBinary).
--
-- Reads send every stored histogram of the days they cover, and
-- PostgreSQL sends an array element by element (a send function call and
-- an allocation each): a 30-day report of 10 proxies spent 4.6 ms of its
-- 5.5 ms of statement time sending ~300 arrays of a few hundred elements,
-- the largest part of a tenant's read (BENCHMARKS.md, fairness 8). A bytea
-- is sent as it is stored. The encoding: one 10-byte entry per non-empty
-- bucket, in ascending bucket order, the bucket as a big-endian int2 and
-- its samples as a big-endian int8 (int2send(bucket) || int8send(samples)),
-- so SQL can still read it (usage_histogram_entries, the view
-- usage_latency_daily) and the layout stays canonical: equal histograms
-- are equal bytes. The worker merges histograms in Go
-- (internal/rollup/fold.go).
--
-- Old replicas' fold and read statements name the dropped columns: stop
-- them before migrating.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION usage_histogram_entries(h bytea)
RETURNS TABLE (latency_bucket smallint, samples bigint)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT ((get_byte(h, i) << 8) | get_byte(h, i + 1))::smallint,
         ('x' || encode(substring(h FROM i + 3 FOR 8), 'hex'))::bit(64)::bigint
    FROM generate_series(0, length(h) - 10, 10) AS i
$$;
-- +goose StatementEnd
DROP VIEW usage_latency_daily;
ALTER TABLE usage_latency_daily_packed ADD COLUMN histogram bytea;
UPDATE usage_latency_daily_packed p
   SET histogram = (SELECT coalesce(string_agg(int2send(u.b) || int8send(u.s), ''::bytea ORDER BY u.b), ''::bytea)
                      FROM unnest(p.latency_buckets, p.samples) AS u(b, s) WHERE u.s <> 0);
ALTER TABLE usage_latency_daily_packed
  ALTER COLUMN histogram SET NOT NULL,
  ADD CONSTRAINT usage_latency_daily_packed_histogram_check CHECK (length(histogram) % 10 = 0),
  DROP COLUMN latency_buckets,
  DROP COLUMN samples;
CREATE VIEW usage_latency_daily AS
SELECT p.proxy_id, p.bucket, e.latency_bucket, e.samples
  FROM usage_latency_daily_packed p, usage_histogram_entries(p.histogram) AS e;

-- +goose Down
DROP VIEW usage_latency_daily;
ALTER TABLE usage_latency_daily_packed
  ADD COLUMN latency_buckets smallint[],
  ADD COLUMN samples bigint[];
UPDATE usage_latency_daily_packed p
   SET latency_buckets = coalesce((SELECT array_agg(e.latency_bucket ORDER BY e.latency_bucket) FROM usage_histogram_entries(p.histogram) e), '{}'),
       samples = coalesce((SELECT array_agg(e.samples ORDER BY e.latency_bucket) FROM usage_histogram_entries(p.histogram) e), '{}');
ALTER TABLE usage_latency_daily_packed
  ALTER COLUMN latency_buckets SET NOT NULL,
  ALTER COLUMN samples SET NOT NULL,
  ADD CONSTRAINT usage_latency_daily_packed_check CHECK (cardinality(samples) = cardinality(latency_buckets)),
  DROP COLUMN histogram;
CREATE VIEW usage_latency_daily AS
SELECT p.proxy_id, p.bucket, u.latency_bucket, u.samples
  FROM usage_latency_daily_packed p, unnest(p.latency_buckets, p.samples) AS u(latency_bucket, samples);
DROP FUNCTION usage_histogram_entries(bytea);
