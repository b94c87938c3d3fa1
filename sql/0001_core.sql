-- Core tables: users with tier history, proxies, raw usage events, the
-- deduplication keys and the invalidation log that the rollups consume.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
  IF current_setting('proxyusage.backend', true) = 'timescaledb' THEN
    CREATE EXTENSION IF NOT EXISTS timescaledb;
  END IF;
END
$$;
-- +goose StatementEnd

CREATE TABLE users (
  id         text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 256),
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Tier history: the tier in effect on a day is the entry with the latest
-- effective_from on or before it; before the first entry the tier is free.
CREATE TABLE user_tiers (
  user_id        text NOT NULL REFERENCES users (id),
  effective_from date NOT NULL,
  tier           text NOT NULL CHECK (tier IN ('free', 'premium', 'enterprise')),
  set_at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, effective_from)
);

-- Proxies are archived, never deleted: billing history must survive.
CREATE TABLE proxies (
  id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._:-]{1,128}$'),
  user_id     text NOT NULL REFERENCES users (id),
  name        text NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  archived_at timestamptz
);
CREATE INDEX proxies_user_id_idx ON proxies (user_id, id);

-- Raw events. Durations and latencies are stored as integer microseconds so
-- that sums are exact and identical whatever order a backend adds them in.
CREATE TABLE usage_events (
  time           timestamptz NOT NULL,
  proxy_id       text        NOT NULL,
  event_type     text        NOT NULL CHECK (event_type IN ('connection_start', 'connection_end', 'data_transfer', 'error')),
  event_id       text,
  connection_id  text,
  bytes_sent     bigint      NOT NULL DEFAULT 0 CHECK (bytes_sent >= 0),
  bytes_received bigint      NOT NULL DEFAULT 0 CHECK (bytes_received >= 0),
  duration_us    bigint      CHECK (duration_us >= 0),
  latency_us     bigint      CHECK (latency_us >= 0),
  error_message  text,
  ip_address     inet,
  received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_events_proxy_time_idx ON usage_events (proxy_id, time);
-- Serves connection pairing (start ↔ end by connectionId) for peak concurrency.
CREATE INDEX usage_events_connection_idx ON usage_events (proxy_id, connection_id, time)
  WHERE connection_id IS NOT NULL;

-- +goose StatementBegin
DO $$
BEGIN
  IF current_setting('proxyusage.backend', true) = 'timescaledb' THEN
    PERFORM create_hypertable('usage_events', 'time',
      chunk_time_interval => interval '1 day', create_default_indexes => false);
  END IF;
END
$$;
-- +goose StatementEnd

-- Idempotency keys, separate from the hypertable because a unique index
-- there would have to include the time column. Pruned after the dedup window.
CREATE TABLE usage_event_keys (
  proxy_id    text        NOT NULL,
  event_id    text        NOT NULL,
  received_at timestamptz NOT NULL,
  PRIMARY KEY (proxy_id, event_id)
);
CREATE INDEX usage_event_keys_received_at_idx ON usage_event_keys (received_at);

-- Invalidation log: every stored event appends (proxy, day). Append-only so
-- concurrent writers never contend; the rollup worker consumes it and the
-- read path computes logged days from raw events until then.
CREATE TABLE usage_invalidations (
  id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  proxy_id  text        NOT NULL,
  day       date        NOT NULL,
  logged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_invalidations_proxy_day_idx ON usage_invalidations (proxy_id, day);

-- +goose Down
DROP TABLE usage_invalidations;
DROP TABLE usage_event_keys;
DROP TABLE usage_events;
DROP TABLE proxies;
DROP TABLE user_tiers;
DROP TABLE users;
