-- A delta row per flush and user, found by user.
--
-- Reads add the pending deltas of the proxies they answer for. With one
-- row per flush, a batch over a thousand proxies logged a row of ~500
-- proxy-days, and a read of one user's ten proxies unnested every entry
-- of every pending row to keep its few (EXPLAIN under ingest: 50 pending
-- rows, 25,000 entries, 200 ms for the access question). A proxy belongs
-- to one user for good (proxies.user_id is never updated), and every read
-- answers for one user's proxies (or, for admins, for all), so a flush now
-- logs one row per user it wrote for and reads find the rows of the
-- proxies' owners with a btree on user_id: a read unnests its own entries.
-- The GIN index on proxy_ids, which ingest maintained for every entry, is
-- no longer needed.
--
-- Pending rows are split by owner here, histogram entries renumbered to
-- their position in the new row (each step a join or a grouping: the
-- table is locked meanwhile, and a backlog may be large).

-- +goose Up
ALTER TABLE usage_rollup_deltas ADD COLUMN user_id text;

WITH entry AS (
  SELECT l.id, l.logged_at, coalesce(p.user_id, '') AS user_id, u.*
    FROM usage_rollup_deltas l
   CROSS JOIN LATERAL unnest(l.proxy_ids, l.days, l.event_counts, l.connection_counts, l.success_counts, l.error_counts,
                             l.bytes_sent, l.bytes_received, l.duration_sums_us, l.duration_counts, l.latency_sums_us,
                             l.latency_counts, l.latency_max_us, l.first_event_at, l.last_event_at) WITH ORDINALITY
         AS u(proxy_id, day, event_count, connection_count, success_count, error_count, bytes_sent, bytes_received,
              duration_sum_us, duration_count, latency_sum_us, latency_count, latency_max_us, first_event_at, last_event_at, pos)
    LEFT JOIN proxies p ON p.id = u.proxy_id
   WHERE l.user_id IS NULL
), numbered AS (
  SELECT e.*, row_number() OVER (PARTITION BY e.id, e.user_id ORDER BY e.pos)::int AS new_pos FROM entry e
), hist AS (
  SELECT n.id, n.user_id,
         array_agg(n.new_pos ORDER BY n.new_pos, h.hn) AS entries,
         array_agg(h.latency_bucket ORDER BY n.new_pos, h.hn) AS buckets,
         array_agg(h.samples ORDER BY n.new_pos, h.hn) AS samples
    FROM usage_rollup_deltas l
   CROSS JOIN LATERAL unnest(l.latency_entries, l.latency_buckets, l.latency_samples) WITH ORDINALITY AS h(entry, latency_bucket, samples, hn)
    JOIN numbered n ON n.id = l.id AND n.pos = h.entry
   WHERE l.user_id IS NULL
   GROUP BY n.id, n.user_id
), grouped AS (
  SELECT n.id, n.user_id, n.logged_at,
         array_agg(n.proxy_id ORDER BY n.new_pos) AS proxy_ids, array_agg(n.day ORDER BY n.new_pos) AS days,
         array_agg(n.event_count ORDER BY n.new_pos) AS event_counts, array_agg(n.connection_count ORDER BY n.new_pos) AS connection_counts,
         array_agg(n.success_count ORDER BY n.new_pos) AS success_counts, array_agg(n.error_count ORDER BY n.new_pos) AS error_counts,
         array_agg(n.bytes_sent ORDER BY n.new_pos) AS bytes_sent, array_agg(n.bytes_received ORDER BY n.new_pos) AS bytes_received,
         array_agg(n.duration_sum_us ORDER BY n.new_pos) AS duration_sums_us, array_agg(n.duration_count ORDER BY n.new_pos) AS duration_counts,
         array_agg(n.latency_sum_us ORDER BY n.new_pos) AS latency_sums_us, array_agg(n.latency_count ORDER BY n.new_pos) AS latency_counts,
         array_agg(n.latency_max_us ORDER BY n.new_pos) AS latency_max_us,
         array_agg(n.first_event_at ORDER BY n.new_pos) AS first_event_at, array_agg(n.last_event_at ORDER BY n.new_pos) AS last_event_at
    FROM numbered n
   GROUP BY n.id, n.user_id, n.logged_at
)
INSERT INTO usage_rollup_deltas (user_id, proxy_ids, days, event_counts, connection_counts, success_counts, error_counts,
  bytes_sent, bytes_received, duration_sums_us, duration_counts, latency_sums_us, latency_counts, latency_max_us,
  first_event_at, last_event_at, latency_entries, latency_buckets, latency_samples, logged_at)
SELECT g.user_id, g.proxy_ids, g.days, g.event_counts, g.connection_counts, g.success_counts, g.error_counts,
       g.bytes_sent, g.bytes_received, g.duration_sums_us, g.duration_counts, g.latency_sums_us, g.latency_counts, g.latency_max_us,
       g.first_event_at, g.last_event_at, coalesce(h.entries, '{}'), coalesce(h.buckets, '{}'), coalesce(h.samples, '{}'), g.logged_at
  FROM grouped g LEFT JOIN hist h ON h.id = g.id AND h.user_id = g.user_id
 ORDER BY g.id, g.user_id;

DELETE FROM usage_rollup_deltas WHERE user_id IS NULL;
-- '' marks a row of several users: one written by a replica older than
-- this migration during a rolling deploy (its insert names no user_id),
-- or a proxy without an owner row. Reads include those rows too.
ALTER TABLE usage_rollup_deltas ALTER COLUMN user_id SET DEFAULT '', ALTER COLUMN user_id SET NOT NULL;
DROP INDEX usage_rollup_deltas_proxy_ids_idx;
CREATE INDEX usage_rollup_deltas_user_id_idx ON usage_rollup_deltas (user_id);

-- +goose Down
DROP INDEX usage_rollup_deltas_user_id_idx;
CREATE INDEX usage_rollup_deltas_proxy_ids_idx ON usage_rollup_deltas USING gin (proxy_ids);
ALTER TABLE usage_rollup_deltas DROP COLUMN user_id;
