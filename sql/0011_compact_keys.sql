-- Compact idempotency keys. A remembered (proxyId, eventId) was two text
-- columns under a text B-tree, about 204 bytes per key, and random uuid4
-- eventIds land at random positions of that index, so ingest slowed as the
-- keys grew. A key is now the first 128 bits of
-- SHA-256(proxyId || 0x00 || eventId) stored as a uuid: a 40-byte heap
-- tuple plus received_at and a 16-byte B-tree entry, under 100 bytes per
-- key all told, and 5x fewer index pages to keep in memory. Neither part
-- can hold a NUL, so the separator makes the encoding injective; the
-- chance that two distinct keys collide among n remembered ones is about
-- n^2 / 2^129 (1.5 * 10^-17 at 10^11 keys, a 35-day window at 33,000 events/s), and a collision only makes an
-- event look like a retry.
--
-- The keys stay in one table with one unique index: every claim is a
-- single index probe, whereas range partitions by received day (dropping
-- a day instead of deleting it) make each claim probe every partition of
-- the window, 35 B-trees per key (measured in BENCHMARKS.md).
--
-- The key function is the definition; internal/ingest computes the same
-- bytes in Go (a test checks they agree).
--
-- Raw events store an eventId that is a uuid in canonical text form in a
-- uuid column (16 bytes) instead of as text (36 characters, random, a
-- third of a compressed row). Rows stored before keep their text.
--
-- On TimescaleDB the columnstore now takes raw-event chunks after 2 days
-- instead of 45: late events (up to 35 days) are inserted into compressed
-- chunks, which TimescaleDB supports, and the continuous aggregates read
-- them as before.

-- +goose Up
ALTER TABLE usage_events ADD COLUMN event_uuid uuid;

CREATE FUNCTION usage_event_key(proxy_id text, event_id text) RETURNS uuid
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN encode(substring(sha256(convert_to(proxy_id, 'UTF8') || '\x00'::bytea || convert_to(event_id, 'UTF8')) FOR 16), 'hex')::uuid;

-- Writers of the old layout must not add keys between the copy and the
-- swap; the migration runs in one transaction, so a crash leaves the old
-- table as it was.
LOCK TABLE usage_event_keys IN EXCLUSIVE MODE;
CREATE TABLE usage_event_keys_compact (
  key         uuid        NOT NULL,
  received_at timestamptz NOT NULL
);
-- Every key is carried over, including expired ones (the pruner forgets
-- those on its next run; the window is a service setting). A collision
-- keeps the earliest claim.
INSERT INTO usage_event_keys_compact (key, received_at)
SELECT usage_event_key(proxy_id, event_id), min(received_at)
  FROM usage_event_keys
 GROUP BY 1
 ORDER BY min(received_at);
DROP TABLE usage_event_keys;
ALTER TABLE usage_event_keys_compact RENAME TO usage_event_keys;
ALTER TABLE usage_event_keys ADD CONSTRAINT usage_event_keys_pkey PRIMARY KEY (key);
-- Keys are appended in received_at order: the pruner finds expired ones
-- through a BRIN index at almost no cost per insert.
CREATE INDEX usage_event_keys_received_at_idx ON usage_event_keys USING brin (received_at);

-- +goose StatementBegin
DO $$
BEGIN
  IF current_setting('proxyusage.backend', true) = 'timescaledb' THEN
    PERFORM remove_compression_policy('usage_events', if_exists => true);
    PERFORM add_compression_policy('usage_events', compress_after => interval '2 days');
  END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
BEGIN
  IF current_setting('proxyusage.backend', true) = 'timescaledb' THEN
    PERFORM remove_compression_policy('usage_events', if_exists => true);
    PERFORM add_compression_policy('usage_events', interval '45 days');
  END IF;
END
$$;
-- +goose StatementEnd
-- The text keys cannot be recovered from their hashes: going down restarts
-- deduplication with an empty window.
DROP TABLE usage_event_keys;
CREATE TABLE usage_event_keys (
  proxy_id    text        NOT NULL,
  event_id    text        NOT NULL,
  received_at timestamptz NOT NULL,
  PRIMARY KEY (proxy_id, event_id)
);
CREATE INDEX usage_event_keys_received_at_idx ON usage_event_keys USING brin (received_at);
DROP FUNCTION usage_event_key(text, text);
UPDATE usage_events SET event_id = event_uuid::text WHERE event_uuid IS NOT NULL;
ALTER TABLE usage_events DROP COLUMN event_uuid;
