-- The invalidation logs hold one row per ingest flush, its distinct
-- entries as parallel arrays, instead of one row per entry: a batch flush
-- of ~1,250 events touches ~700 proxy-days and ~400 connections, and
-- writing them as rows with their B-trees cost ~60 % as much database time
-- as storing the events themselves (BENCHMARKS.md). GIN indexes on the
-- proxy arrays keep the read path's "is this proxy dirty" checks indexed.
-- Pending entries are carried over.

-- +goose Up
CREATE TABLE usage_invalidations_v2 (
  id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  proxy_ids text[]      NOT NULL,
  days      date[]      NOT NULL CHECK (cardinality(days) = cardinality(proxy_ids)),
  logged_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO usage_invalidations_v2 (proxy_ids, days, logged_at)
SELECT array_agg(proxy_id ORDER BY id), array_agg(day ORDER BY id), min(logged_at)
  FROM usage_invalidations HAVING count(*) > 0;
DROP TABLE usage_invalidations;
ALTER TABLE usage_invalidations_v2 RENAME TO usage_invalidations;
ALTER INDEX usage_invalidations_v2_pkey RENAME TO usage_invalidations_pkey;
CREATE INDEX usage_invalidations_proxy_ids_idx ON usage_invalidations USING gin (proxy_ids);

CREATE TABLE usage_connection_invalidations_v2 (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  proxy_ids      text[]      NOT NULL,
  connection_ids text[]      NOT NULL CHECK (cardinality(connection_ids) = cardinality(proxy_ids)),
  logged_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO usage_connection_invalidations_v2 (proxy_ids, connection_ids, logged_at)
SELECT array_agg(proxy_id ORDER BY id), array_agg(connection_id ORDER BY id), min(logged_at)
  FROM usage_connection_invalidations HAVING count(*) > 0;
DROP TABLE usage_connection_invalidations;
ALTER TABLE usage_connection_invalidations_v2 RENAME TO usage_connection_invalidations;
ALTER INDEX usage_connection_invalidations_v2_pkey RENAME TO usage_connection_invalidations_pkey;
CREATE INDEX usage_connection_invalidations_proxy_ids_idx ON usage_connection_invalidations USING gin (proxy_ids);

-- +goose Down
CREATE TABLE usage_invalidations_v1 (
  id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  proxy_id  text        NOT NULL,
  day       date        NOT NULL,
  logged_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO usage_invalidations_v1 (proxy_id, day, logged_at)
SELECT u.proxy_id, u.day, l.logged_at FROM usage_invalidations l, unnest(l.proxy_ids, l.days) AS u(proxy_id, day) ORDER BY l.id;
DROP TABLE usage_invalidations;
ALTER TABLE usage_invalidations_v1 RENAME TO usage_invalidations;
ALTER INDEX usage_invalidations_v1_pkey RENAME TO usage_invalidations_pkey;
CREATE INDEX usage_invalidations_proxy_day_idx ON usage_invalidations (proxy_id, day);

CREATE TABLE usage_connection_invalidations_v1 (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  proxy_id      text        NOT NULL,
  connection_id text        NOT NULL,
  logged_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO usage_connection_invalidations_v1 (proxy_id, connection_id, logged_at)
SELECT u.proxy_id, u.connection_id, l.logged_at
  FROM usage_connection_invalidations l, unnest(l.proxy_ids, l.connection_ids) AS u(proxy_id, connection_id) ORDER BY l.id;
DROP TABLE usage_connection_invalidations;
ALTER TABLE usage_connection_invalidations_v1 RENAME TO usage_connection_invalidations;
ALTER INDEX usage_connection_invalidations_v1_pkey RENAME TO usage_connection_invalidations_pkey;
CREATE INDEX usage_connection_invalidations_proxy_idx ON usage_connection_invalidations (proxy_id);
