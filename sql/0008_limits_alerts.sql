-- Usage limits, threshold alerts with their webhook outbox, and contract
-- history. The same on both backends: these are small ordinary tables.
--
-- usage_alerts is the outbox: an alert is committed here (unique per user,
-- month and threshold, so no replica can record it twice) before any
-- delivery is tried; deliverers claim due rows with a lease, so a crash
-- between recording and delivering only delays the webhook.

-- +goose Up
CREATE TABLE user_limits (
  user_id        text PRIMARY KEY REFERENCES users (id),
  monthly_gb     numeric(30, 9) NOT NULL CHECK (monthly_gb > 0),
  enforcement    text NOT NULL CHECK (enforcement IN ('hard', 'soft')),
  alert_percents integer[] NOT NULL CHECK (cardinality(alert_percents) <= 10),
  updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_webhooks (
  user_id    text PRIMARY KEY REFERENCES users (id),
  url        text NOT NULL,
  secret     text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE usage_alerts (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id           text NOT NULL REFERENCES users (id),
  month             date NOT NULL CHECK (extract(day FROM month) = 1),
  threshold_percent integer NOT NULL CHECK (threshold_percent BETWEEN 1 AND 1000),
  limit_gb          numeric(30, 9) NOT NULL,
  used_bytes        numeric NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  -- pending: to deliver; delivered; failed: gave up after the retry
  -- window; no_webhook: the user had no webhook when it was recorded.
  state             text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed', 'no_webhook')),
  attempts          integer NOT NULL DEFAULT 0,
  next_attempt_at   timestamptz NOT NULL DEFAULT now(),
  finished_at       timestamptz,
  UNIQUE (user_id, month, threshold_percent)
);
CREATE INDEX usage_alerts_due_idx ON usage_alerts (next_attempt_at) WHERE state = 'pending';

CREATE TABLE webhook_deliveries (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  alert_id    uuid NOT NULL REFERENCES usage_alerts (id),
  user_id     text NOT NULL,
  attempt     integer NOT NULL,
  http_status integer,       -- null when no HTTP answer came
  result      text NOT NULL, -- delivered, http_error, timeout, network_error, refused
  at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_user_idx ON webhook_deliveries (user_id, id DESC);

-- Contract history: a contract applies from its effective date; the
-- existing one-per-user contracts become their users' first entry.
ALTER TABLE user_contracts ADD COLUMN effective_from date;
UPDATE user_contracts SET effective_from = (updated_at AT TIME ZONE 'UTC')::date;
ALTER TABLE user_contracts ALTER COLUMN effective_from SET NOT NULL,
  ALTER COLUMN effective_from SET DEFAULT ((now() AT TIME ZONE 'UTC')::date);
ALTER TABLE user_contracts DROP CONSTRAINT user_contracts_pkey;
ALTER TABLE user_contracts ADD PRIMARY KEY (user_id, effective_from);

-- +goose Down
DELETE FROM user_contracts c WHERE effective_from < (
  SELECT max(effective_from) FROM user_contracts l WHERE l.user_id = c.user_id);
ALTER TABLE user_contracts DROP CONSTRAINT user_contracts_pkey;
ALTER TABLE user_contracts DROP COLUMN effective_from;
ALTER TABLE user_contracts ADD PRIMARY KEY (user_id);
DROP TABLE webhook_deliveries;
DROP TABLE usage_alerts;
DROP TABLE user_webhooks;
DROP TABLE user_limits;
