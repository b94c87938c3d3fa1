// Package deploy_test checks the operator-facing files that ship with the
// service: the Grafana dashboards and provisioning, the Prometheus scrape
// config and alert rules, the Dockerfile and docker-compose.yml. Tools that
// may be missing (promtool, prometheus, docker compose) make their tests
// skip; everything else runs against the real service on a throwaway
// PostgreSQL.
package deploy_test

import (
	"testing"

	"proxyusage/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
