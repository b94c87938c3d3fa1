-- The connection log, like the delta log (0014), a row per flush and user.
--
-- Reads of proxies with connections waiting to be re-paired list them from
-- usage_connection_invalidations: with a row per flush, each read unnested
-- every (proxy, connection) entry of every pending row naming one of its
-- proxies (44 ms a read under sustained ingest, BENCHMARKS.md (12)). A row
-- per user it wrote for, found by a btree on user_id, makes a read unnest
-- its own user's entries; ingest no longer maintains a GIN entry per
-- connection. Pending rows are split by owner here.

-- +goose Up
ALTER TABLE usage_connection_invalidations ADD COLUMN user_id text;

INSERT INTO usage_connection_invalidations (user_id, proxy_ids, connection_ids, logged_at)
SELECT coalesce(p.user_id, ''), array_agg(u.proxy_id ORDER BY u.n), array_agg(u.connection_id ORDER BY u.n), l.logged_at
  FROM usage_connection_invalidations l
 CROSS JOIN LATERAL unnest(l.proxy_ids, l.connection_ids) WITH ORDINALITY AS u(proxy_id, connection_id, n)
  LEFT JOIN proxies p ON p.id = u.proxy_id
 WHERE l.user_id IS NULL
 GROUP BY l.id, p.user_id, l.logged_at
 ORDER BY l.id, 1;

DELETE FROM usage_connection_invalidations WHERE user_id IS NULL;
-- '' as in 0014: a row of several users (an older replica's, or ownerless).
ALTER TABLE usage_connection_invalidations ALTER COLUMN user_id SET DEFAULT '', ALTER COLUMN user_id SET NOT NULL;
DROP INDEX usage_connection_invalidations_proxy_ids_idx;
CREATE INDEX usage_connection_invalidations_user_id_idx ON usage_connection_invalidations (user_id);

-- +goose Down
DROP INDEX usage_connection_invalidations_user_id_idx;
CREATE INDEX usage_connection_invalidations_proxy_ids_idx ON usage_connection_invalidations USING gin (proxy_ids);
ALTER TABLE usage_connection_invalidations DROP COLUMN user_id;
