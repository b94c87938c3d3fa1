-- A SELECT-only role for Grafana's business panels. docker-compose.yml runs
-- this once, when the TimescaleDB volume is first initialised (it is mounted
-- into /docker-entrypoint-initdb.d), as the database owner that the service
-- later migrates with; the default privileges cover the tables and views
-- the migrations create afterwards. The password is the stack's demo
-- credential (grafana/provisioning/datasources/datasources.yaml).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader') THEN
    CREATE ROLE grafana_reader LOGIN PASSWORD 'grafana_reader';
  END IF;
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO grafana_reader', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
ALTER ROLE grafana_reader SET statement_timeout = '30s';
ALTER ROLE grafana_reader SET default_transaction_read_only = on;
