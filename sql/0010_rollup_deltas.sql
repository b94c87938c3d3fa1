-- Rollups maintained from mergeable deltas, the same way on both backends.
--
-- Each ingest flush writes, in the transaction that stores its events, one
-- row of usage_rollup_deltas: for every (proxy, UTC day) of the events it
-- stored, their counts, sums, latency maximum, first and last event time
-- and latency histogram, as parallel arrays (one element per proxy-day;
-- histogram entries name their proxy-day by 1-based position). The rollup
-- worker folds consumed rows into usage_daily and
-- usage_latency_daily_packed (sums add, max/min combine, histograms merge):
-- work proportional to the new events, where recomputing a touched day
-- re-read all of that day's events (today's grow all day). Reads add the
-- pending rows of the requested proxies to the rolled-up rows, so they stay
-- exact without reading raw events.
--
-- TimescaleDB: the continuous aggregates are replaced by the same tables.
-- Refreshing a day re-reads all its raw events, so under steady ingest the
-- refresh of today cost more with every minute (BENCHMARKS.md); the
-- hypertable, its columnstore and its retention policy stay. Materialised
-- rows are kept; days their refreshes had not covered yet (after the
-- lowest watermark, or still in usage_invalidations) are recomputed here
-- from raw events, and the peaks of logged days too, so the
-- day-invalidation log can go.

-- +goose Up
CREATE TABLE usage_rollup_deltas (
  id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  proxy_ids         text[]        NOT NULL,
  days              date[]        NOT NULL CHECK (cardinality(days) = cardinality(proxy_ids)),
  event_counts      bigint[]      NOT NULL CHECK (cardinality(event_counts) = cardinality(proxy_ids)),
  connection_counts bigint[]      NOT NULL,
  success_counts    bigint[]      NOT NULL,
  error_counts      bigint[]      NOT NULL,
  bytes_sent        numeric[]     NOT NULL,
  bytes_received    numeric[]     NOT NULL,
  duration_sums_us  numeric[]     NOT NULL, -- NULL elements: no duration
  duration_counts   bigint[]      NOT NULL,
  latency_sums_us   numeric[]     NOT NULL, -- NULL elements: no latency
  latency_counts    bigint[]      NOT NULL,
  latency_max_us    bigint[]      NOT NULL, -- NULL elements: no latency
  first_event_at    timestamptz[] NOT NULL,
  last_event_at     timestamptz[] NOT NULL,
  latency_entries   int[]         NOT NULL, -- position in proxy_ids/days
  latency_buckets   smallint[]    NOT NULL CHECK (cardinality(latency_buckets) = cardinality(latency_entries)),
  latency_samples   bigint[]      NOT NULL CHECK (cardinality(latency_samples) = cardinality(latency_entries)),
  logged_at         timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX usage_rollup_deltas_proxy_ids_idx ON usage_rollup_deltas USING gin (proxy_ids);

-- The histogram entries of a delta row with the proxy-day each names by
-- position. In PL/pgSQL the array arguments are expanded once, so each
-- lookup is O(1); in SQL a subscript detoasts the whole array, and a join
-- on the position is planned as a nested loop (unnest's row estimate):
-- both quadratic in the row's size.
-- +goose StatementBegin
CREATE FUNCTION usage_rollup_delta_histograms(p_proxy_ids text[], p_days date[], p_entries int[], p_buckets smallint[], p_samples bigint[])
RETURNS TABLE (proxy_id text, day date, latency_bucket smallint, samples bigint)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE ROWS 1000 AS $$
BEGIN
  FOR i IN 1 .. coalesce(array_length(p_entries, 1), 0) LOOP
    proxy_id := p_proxy_ids[p_entries[i]];
    day := p_days[p_entries[i]];
    latency_bucket := p_buckets[i];
    samples := p_samples[i];
    RETURN NEXT;
  END LOOP;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
DECLARE
  daily_mat   text;
  latency_mat text;
  attempt     int;
BEGIN
  CREATE TEMP TABLE recompute (proxy_id text, day date, PRIMARY KEY (proxy_id, day)) ON COMMIT DROP;
  INSERT INTO recompute
  SELECT DISTINCT u.proxy_id, u.day FROM usage_invalidations l, unnest(l.proxy_ids, l.days) AS u(proxy_id, day)
  ON CONFLICT DO NOTHING;

  IF current_setting('proxyusage.backend', true) = 'timescaledb' THEN
    SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) INTO daily_mat
      FROM timescaledb_information.continuous_aggregates WHERE view_name = 'usage_daily';
    SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) INTO latency_mat
      FROM timescaledb_information.continuous_aggregates WHERE view_name = 'usage_latency_daily_packed';
    CREATE TABLE usage_daily_t (
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
    CREATE TABLE usage_latency_daily_packed_t (
      proxy_id        text        NOT NULL,
      bucket          timestamptz NOT NULL,
      latency_buckets smallint[]  NOT NULL,
      samples         bigint[]    NOT NULL CHECK (cardinality(samples) = cardinality(latency_buckets)),
      PRIMARY KEY (proxy_id, bucket)
    );
    -- Days at or after the lowest materialised day of either aggregate may
    -- be partly materialised: recompute them.
    EXECUTE format($q$
      INSERT INTO recompute
      SELECT DISTINCT proxy_id, (time AT TIME ZONE 'UTC')::date FROM usage_events
       WHERE time >= least((SELECT coalesce(max(bucket), '-infinity') FROM %s), (SELECT coalesce(max(bucket), '-infinity') FROM %s))
      ON CONFLICT DO NOTHING $q$, daily_mat, latency_mat);
    EXECUTE format($q$
      INSERT INTO usage_daily_t SELECT proxy_id, bucket, event_count, connection_count, success_count, error_count,
             bytes_sent, bytes_received, duration_sum_us, duration_count, latency_sum_us, latency_count, latency_max_us,
             first_event_at, last_event_at FROM %s $q$, daily_mat);
    EXECUTE format($q$
      INSERT INTO usage_latency_daily_packed_t SELECT proxy_id, bucket, latency_buckets, samples FROM %s $q$, latency_mat);
    -- The aggregates' refresh jobs may be running (the scheduler starts
    -- them soon after they are created): dropping a job then fails with
    -- "tuple concurrently updated". Retry until they are out of the way.
    FOR attempt IN 1 .. 100 LOOP
      BEGIN
        PERFORM remove_continuous_aggregate_policy(v::regclass, true)
           FROM unnest(ARRAY['usage_latency_daily_packed', 'usage_latency_daily', 'usage_daily']) AS v;
        DROP MATERIALIZED VIEW usage_latency_daily_packed;
        DROP MATERIALIZED VIEW usage_latency_daily;
        DROP MATERIALIZED VIEW usage_daily;
        EXIT;
      EXCEPTION WHEN OTHERS THEN
        IF attempt = 100 THEN
          RAISE;
        END IF;
        PERFORM pg_sleep(0.1);
      END;
    END LOOP;
    ALTER TABLE usage_daily_t RENAME TO usage_daily;
    ALTER INDEX usage_daily_t_pkey RENAME TO usage_daily_pkey;
    ALTER TABLE usage_latency_daily_packed_t RENAME TO usage_latency_daily_packed;
    ALTER INDEX usage_latency_daily_packed_t_pkey RENAME TO usage_latency_daily_packed_pkey;
    CREATE VIEW usage_latency_daily AS
    SELECT p.proxy_id, p.bucket, u.latency_bucket, u.samples
      FROM usage_latency_daily_packed p, unnest(p.latency_buckets, p.samples) AS u(latency_bucket, samples);
  END IF;

  DELETE FROM usage_daily d USING recompute k
   WHERE d.proxy_id = k.proxy_id AND d.bucket = k.day::timestamp AT TIME ZONE 'UTC';
  DELETE FROM usage_latency_daily_packed d USING recompute k
   WHERE d.proxy_id = k.proxy_id AND d.bucket = k.day::timestamp AT TIME ZONE 'UTC';
  INSERT INTO usage_daily (proxy_id, bucket, event_count, connection_count, success_count, error_count, bytes_sent, bytes_received,
         duration_sum_us, duration_count, latency_sum_us, latency_count, latency_max_us, first_event_at, last_event_at)
  SELECT k.proxy_id, k.day::timestamp AT TIME ZONE 'UTC',
         count(*),
         count(*) FILTER (WHERE event_type = 'connection_start'),
         count(*) FILTER (WHERE event_type = 'connection_end'),
         count(*) FILTER (WHERE event_type = 'error'),
         sum(bytes_sent), sum(bytes_received),
         sum(duration_us) FILTER (WHERE event_type = 'connection_end'),
         count(duration_us) FILTER (WHERE event_type = 'connection_end'),
         sum(latency_us), count(latency_us), max(latency_us), min(time), max(time)
    FROM recompute k JOIN usage_events e ON e.proxy_id = k.proxy_id
     AND e.time >= k.day::timestamp AT TIME ZONE 'UTC' AND e.time < (k.day + 1)::timestamp AT TIME ZONE 'UTC'
   GROUP BY k.proxy_id, k.day;
  INSERT INTO usage_latency_daily_packed (proxy_id, bucket, latency_buckets, samples)
  SELECT proxy_id, bucket, array_agg(latency_bucket ORDER BY latency_bucket), array_agg(samples ORDER BY latency_bucket)
    FROM (SELECT k.proxy_id, k.day::timestamp AT TIME ZONE 'UTC' AS bucket, e.latency_bucket, count(*) AS samples
            FROM recompute k JOIN usage_events e ON e.proxy_id = k.proxy_id
             AND e.time >= k.day::timestamp AT TIME ZONE 'UTC' AND e.time < (k.day + 1)::timestamp AT TIME ZONE 'UTC'
           WHERE e.latency_bucket IS NOT NULL
           GROUP BY k.proxy_id, k.day, e.latency_bucket) h
   GROUP BY proxy_id, bucket;

  -- Peaks of the logged days from the stored intervals (the worker also
  -- recomputed them; bulk pairing logs the days its intervals cover). The
  -- sweep is internal/rollup's Peak: starts clipped to the day, ends
  -- within it applied before starts at the same instant.
  INSERT INTO usage_daily_peak (proxy_id, day, peak)
  SELECT k.proxy_id, k.day, coalesce(p.peak, 0)
    FROM (SELECT DISTINCT u.proxy_id, u.day FROM usage_invalidations l, unnest(l.proxy_ids, l.days) AS u(proxy_id, day)) k
    LEFT JOIN LATERAL (
      SELECT max(open) AS peak FROM (
        SELECT sum(delta) OVER (ORDER BY at, delta ROWS UNBOUNDED PRECEDING) AS open FROM (
          SELECT greatest(c.start_time, k.day::timestamp AT TIME ZONE 'UTC') AS at, 1 AS delta
            FROM usage_connections c
           WHERE c.proxy_id = k.proxy_id AND c.start_time < c.end_time
             AND c.end_time > k.day::timestamp AT TIME ZONE 'UTC' AND c.start_time < (k.day + 1)::timestamp AT TIME ZONE 'UTC'
          UNION ALL
          SELECT c.end_time, -1
            FROM usage_connections c
           WHERE c.proxy_id = k.proxy_id AND c.start_time < c.end_time
             AND c.end_time > k.day::timestamp AT TIME ZONE 'UTC' AND c.end_time < (k.day + 1)::timestamp AT TIME ZONE 'UTC'
        ) edges
      ) sweep
    ) p ON true
  ON CONFLICT (proxy_id, day) DO UPDATE SET peak = excluded.peak;
END
$$;
-- +goose StatementEnd
DROP TABLE usage_invalidations;

-- +goose Down
CREATE TABLE usage_invalidations (
  id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  proxy_ids text[]      NOT NULL,
  days      date[]      NOT NULL CHECK (cardinality(days) = cardinality(proxy_ids)),
  logged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_invalidations_proxy_ids_idx ON usage_invalidations USING gin (proxy_ids);
-- The days of pending deltas go back to the log: the worker of that
-- version recomputes them from raw events.
INSERT INTO usage_invalidations (proxy_ids, days)
SELECT array_agg(proxy_id), array_agg(day)
  FROM (SELECT DISTINCT u.proxy_id, u.day FROM usage_rollup_deltas l, unnest(l.proxy_ids, l.days) AS u(proxy_id, day)) d
HAVING count(*) > 0;
DROP TABLE usage_rollup_deltas;
DROP FUNCTION usage_rollup_delta_histograms;
-- +goose StatementBegin
DO $$
BEGIN
  IF current_setting('proxyusage.backend', true) = 'timescaledb' THEN
    -- Back to the continuous aggregates of migrations 2 and 7, every
    -- proxy-day logged so reads recompute them until the worker has
    -- refreshed them. The policies' first runs wait an hour: a refresh
    -- started now by the scheduler would make the worker's fail (55P03).
    INSERT INTO usage_invalidations (proxy_ids, days)
    SELECT array_agg(proxy_id), array_agg(day)
      FROM (SELECT proxy_id, (bucket AT TIME ZONE 'UTC')::date AS day, row_number() OVER () AS n FROM usage_daily) d
     GROUP BY (n - 1) / 5000;
    DROP VIEW usage_latency_daily;
    DROP TABLE usage_latency_daily_packed;
    DROP TABLE usage_daily;
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
      WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
      SELECT proxy_id,
             time_bucket(interval '1 day', time) AS bucket,
             latency_bucket,
             count(*) AS samples
        FROM usage_events
       WHERE latency_bucket IS NOT NULL
       GROUP BY proxy_id, time_bucket(interval '1 day', time), latency_bucket
      WITH NO DATA $q$;
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
    PERFORM add_continuous_aggregate_policy('usage_daily',
      start_offset => interval '40 days', end_offset => interval '1 hour', schedule_interval => interval '1 hour', initial_start => now() + interval '1 hour');
    PERFORM add_continuous_aggregate_policy('usage_latency_daily',
      start_offset => interval '40 days', end_offset => interval '1 hour', schedule_interval => interval '1 hour', initial_start => now() + interval '1 hour');
    PERFORM add_continuous_aggregate_policy('usage_latency_daily_packed',
      start_offset => interval '40 days', end_offset => interval '1 hour', schedule_interval => interval '1 hour', initial_start => now() + interval '1 hour');
  END IF;
END
$$;
-- +goose StatementEnd
