-- Proxy lists are in byte order of the id whatever the database's
-- collation: GET /proxies pages and report rows (sorted in Go) agree, and
-- "ascending id" means the same on a C database and an en_US one. The
-- keyset index follows the same order.

-- +goose Up
CREATE INDEX proxies_user_id_byte_order_idx ON proxies (user_id, (id COLLATE "C"));
DROP INDEX proxies_user_id_idx;

-- +goose Down
CREATE INDEX proxies_user_id_idx ON proxies (user_id, id);
DROP INDEX proxies_user_id_byte_order_idx;
