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
-- their position in the new row.

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
  SELECT n.id, n.user_id, n.new_pos, h.latency_bucket, h.samples, h.hn
    FROM usage_rollup_deltas l
   CROSS JOIN LATERAL unnest(l.latency_entries, l.latency_buckets, l.latency_samples) WITH ORDINALITY AS h(entry, latency_bucket, samples, hn)
    JOIN numbered n ON n.id = l.id AND n.pos = h.entry
   WHERE l.user_id IS NULL
)
INSERT INTO usage_rollup_deltas (user_id, proxy_ids, days, event_counts, connection_counts, success_counts, error_counts,
  bytes_sent, bytes_received, duration_sums_us, duration_counts, latency_sums_us, latency_counts, latency_max_us,
  first_event_at, last_event_at, latency_entries, latency_buckets, latency_samples, logged_at)
SELECT n.user_id, array_agg(n.proxy_id ORDER BY n.new_pos), array_agg(n.day ORDER BY n.new_pos),
       array_agg(n.event_count ORDER BY n.new_pos), array_agg(n.connection_count ORDER BY n.new_pos),
       array_agg(n.success_count ORDER BY n.new_pos), array_agg(n.error_count ORDER BY n.new_pos),
       array_agg(n.bytes_sent ORDER BY n.new_pos), array_agg(n.bytes_received ORDER BY n.new_pos),
       array_agg(n.duration_sum_us ORDER BY n.new_pos), array_agg(n.duration_count ORDER BY n.new_pos),
       array_agg(n.latency_sum_us ORDER BY n.new_pos), array_agg(n.latency_count ORDER BY n.new_pos),
       array_agg(n.latency_max_us ORDER BY n.new_pos), array_agg(n.first_event_at ORDER BY n.new_pos),
       array_agg(n.last_event_at ORDER BY n.new_pos),
       coalesce((SELECT array_agg(h.new_pos ORDER BY h.new_pos, h.hn) FROM hist h WHERE h.id = n.id AND h.user_id = n.user_id), '{}'),
       coalesce((SELECT array_agg(h.latency_bucket ORDER BY h.new_pos, h.hn) FROM hist h WHERE h.id = n.id AND h.user_id = n.user_id), '{}'),
       coalesce((SELECT array_agg(h.samples ORDER BY h.new_pos, h.hn) FROM hist h WHERE h.id = n.id AND h.user_id = n.user_id), '{}'),
       n.logged_at
  FROM numbered n
 GROUP BY n.id, n.user_id, n.logged_at
 ORDER BY n.id, n.user_id;

DELETE FROM usage_rollup_deltas WHERE user_id IS NULL;
ALTER TABLE usage_rollup_deltas ALTER COLUMN user_id SET NOT NULL;
DROP INDEX usage_rollup_deltas_proxy_ids_idx;
CREATE INDEX usage_rollup_deltas_user_id_idx ON usage_rollup_deltas (user_id);

-- +goose Down
DROP INDEX usage_rollup_deltas_user_id_idx;
CREATE INDEX usage_rollup_deltas_proxy_ids_idx ON usage_rollup_deltas USING gin (proxy_ids);
ALTER TABLE usage_rollup_deltas DROP COLUMN user_id;
