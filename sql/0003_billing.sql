-- Enterprise contracts: custom pricing set by an admin. One current contract
-- per user; enterprise days without one are billed as "contact sales".

-- +goose Up
CREATE TABLE user_contracts (
  user_id      text PRIMARY KEY REFERENCES users (id),
  base_monthly numeric(20, 6) NOT NULL CHECK (base_monthly >= 0),
  per_gb       numeric(20, 9) NOT NULL CHECK (per_gb >= 0),
  currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE user_contracts;
