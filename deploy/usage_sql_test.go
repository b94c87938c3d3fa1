package deploy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	neturl "net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"proxyusage/internal/database"
	"proxyusage/internal/pgtest"
)

// newEmptyDB creates an empty database on the test server, as the compose
// stack's TimescaleDB starts: no schema yet.
func newEmptyDB(t *testing.T, name string) (adminDB, url string) {
	t.Helper()
	admin := pgtest.AdminURL(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	name = fmt.Sprintf("%s_%d_%d", name, os.Getpid(), time.Now().UnixNano()%1e6)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), admin)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(context.Background())
		}
	})
	u, err := neturl.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return name, u.String()
}

// connectAs connects to url as another role.
func connectAs(t *testing.T, url, user, password string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password = user, password
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

type seedProxy struct {
	id, user string
	scale    int64
	archived bool
}

// Every SQL panel of the usage dashboard, with Grafana's time macros
// expanded, runs as the read-only Grafana role against rollups seeded on
// each backend, and returns the seeded numbers.
func TestUsagePanelQueries(t *testing.T) {
	queries := sqlQueries(t)
	if len(queries) == 0 {
		t.Fatal("no SQL panel queries")
	}
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_, url := newEmptyDB(t, "deploy_usage_"+string(b))
			owner := connectAs(t, url, "postgres", "")
			// The compose order: the init script on the empty database,
			// then the service's migrations.
			if _, err := owner.Exec(ctx, readFile(t, "deploy", "postgres", "grafana-reader.sql")); err != nil {
				t.Fatalf("grafana-reader.sql: %v", err)
			}
			if got, err := database.Migrate(ctx, url, string(b), slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil || got != b {
				t.Fatalf("migrate: %v (backend %s)", err, got)
			}

			today := time.Now().UTC().Truncate(24 * time.Hour)
			proxies := []seedProxy{
				{"dash-a1", "dash-alice", 1, false}, {"dash-a2", "dash-alice", 2, false},
				{"dash-b1", "dash-bob", 3, false}, {"dash-c1", "dash-carol", 4, true},
			}
			const days = 7
			exec := func(sql string, args ...any) {
				t.Helper()
				if _, err := owner.Exec(ctx, sql, args...); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			for _, u := range []string{"dash-alice", "dash-bob", "dash-carol"} {
				exec(`INSERT INTO users (id) VALUES ($1)`, u)
			}
			// alice: free, then premium for the last 3 days; bob enterprise
			// since long ago; carol free (no row).
			exec(`INSERT INTO user_tiers (user_id, effective_from, tier) VALUES ($1, $2, 'premium'), ($3, $4, 'enterprise')`,
				"dash-alice", today.AddDate(0, 0, -2), "dash-bob", today.AddDate(0, 0, -60))
			var totalBytes, totalEvents int64
			bytesByTier := map[string]int64{}
			for _, p := range proxies {
				exec(`INSERT INTO proxies (id, user_id, name, archived_at) VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END)`,
					p.id, p.user, "proxy "+p.id, p.archived)
				for k := range days {
					day := today.AddDate(0, 0, -k)
					sent, recv := 1000*p.scale*int64(k+1), 100*p.scale
					totalBytes += sent + recv
					tier := map[string]string{"dash-bob": "enterprise"}[p.user]
					if p.user == "dash-alice" && k <= 2 {
						tier = "premium"
					}
					if tier == "" {
						tier = "free"
					}
					bytesByTier[tier] += sent + recv
					exec(`INSERT INTO usage_daily (proxy_id, bucket, event_count, connection_count, success_count, error_count,
						bytes_sent, bytes_received, duration_sum_us, duration_count, latency_sum_us, latency_count, latency_max_us,
						first_event_at, last_event_at)
						VALUES ($1, $2::timestamptz, 4, 1, 1, 1, $3, $4, 60000000, 1, 12000, 1, 12000, $2::timestamptz, $2::timestamptz + interval '2 minutes')`,
						p.id, day, sent, recv)
					totalEvents += 4
					exec(`INSERT INTO usage_daily_peak (proxy_id, day, peak) VALUES ($1, $2, $3)`, p.id, day, p.scale)
				}
			}

			reader := connectAs(t, url, "grafana_reader", "grafana_reader")
			if _, err := reader.Exec(ctx, `INSERT INTO users (id) VALUES ('intruder')`); err == nil {
				t.Fatal("the Grafana role can write")
			}

			now := time.Now().UTC()
			from, to := now.AddDate(0, 0, -30), now
			for _, q := range queries {
				sql := grafanaMacros(t, q.Text, from, to)
				if strings.Contains(sql, "$") {
					t.Fatalf("%s: unexpanded macro left in %s", q, sql)
				}
				rows, err := reader.Query(ctx, sql)
				if err != nil {
					t.Fatalf("%s: %v\n%s", q, err, sql)
				}
				var cols []string
				for _, f := range rows.FieldDescriptions() {
					cols = append(cols, f.Name)
				}
				var result []map[string]any
				for rows.Next() {
					vals, err := rows.Values()
					if err != nil {
						t.Fatal(err)
					}
					m := map[string]any{}
					for i, c := range cols {
						m[c] = vals[i]
					}
					result = append(result, m)
				}
				if err := rows.Err(); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				if len(result) == 0 {
					t.Errorf("%s returned no rows", q)
					continue
				}
				if q.Format == "time_series" {
					for _, r := range result {
						if _, ok := r["time"].(time.Time); !ok {
							t.Errorf("%s: time column is %T", q, r["time"])
							break
						}
					}
				}
				checkPanel(t, q, result, panelExpect{
					proxies: len(proxies), days: days, totalBytes: totalBytes, totalEvents: totalEvents, bytesByTier: bytesByTier,
				})
			}
		})
	}
}

type panelExpect struct {
	proxies, days           int
	totalBytes, totalEvents int64
	bytesByTier             map[string]int64
}

func num(t *testing.T, v any) float64 {
	t.Helper()
	switch x := v.(type) {
	case float64:
		return x
	case float32:
		return float64(x)
	case int64:
		return float64(x)
	case int32:
		return float64(x)
	case int16:
		return float64(x)
	case nil:
		return math.NaN()
	}
	t.Fatalf("value %v is a %T, want a number Grafana can plot", v, v)
	return 0
}

// checkPanel compares a panel's rows with the seeded data.
func checkPanel(t *testing.T, q query, rows []map[string]any, e panelExpect) {
	t.Helper()
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-6*math.Max(1, math.Abs(want)) {
			t.Errorf("%s: %s = %v, want %v", q, what, got, want)
		}
	}
	switch q.Panel {
	case "Totals":
		r := rows[0]
		near("GB transferred", num(t, r["GB transferred"]), float64(e.totalBytes)/1e9)
		near("events", num(t, r["events"]), float64(e.totalEvents))
		near("connections", num(t, r["connections"]), float64(e.proxies*e.days))
		near("active proxies", num(t, r["active proxies"]), float64(e.proxies))
		near("active users", num(t, r["active users"]), 3)
	case "Totals by tier":
		got := map[string]float64{}
		for _, r := range rows {
			got[r["tier"].(string)] = num(t, r["GB"]) * 1e9
		}
		if len(got) != len(e.bytesByTier) {
			t.Errorf("%s: tiers %v, want %v", q, got, e.bytesByTier)
		}
		for tier, want := range e.bytesByTier {
			near("bytes of "+tier, got[tier], float64(want))
		}
	case "Bytes per day by tier":
		sum := map[string]float64{}
		for _, r := range rows {
			sum[r["metric"].(string)] += num(t, r["bytes"])
		}
		for tier, want := range e.bytesByTier {
			near("bytes of "+tier, sum[tier], float64(want))
		}
	case "Top proxies by bytes":
		if len(rows) != e.proxies {
			t.Errorf("%s: %d rows, want %d", q, len(rows), e.proxies)
		}
		if rows[0]["proxy"] != "dash-c1" || rows[0]["archived"] != true {
			t.Errorf("%s: first row %v, want the archived dash-c1 (most bytes)", q, rows[0])
		}
		var sum float64
		for _, r := range rows {
			sum += num(t, r["bytes total"])
		}
		near("bytes total", sum, float64(e.totalBytes))
	case "Connections and peak concurrency":
		if len(rows) != e.days {
			t.Errorf("%s: %d days, want %d", q, len(rows), e.days)
		}
		for _, r := range rows {
			if v, ok := r["highest proxy peak"]; ok {
				near("highest proxy peak", num(t, v), 4)
				near("sum of proxy peaks", num(t, r["sum of proxy peaks"]), 1+2+3+4)
			} else {
				near("connections opened", num(t, r["connections opened"]), float64(e.proxies))
			}
		}
	case "Error rate per day":
		for _, r := range rows {
			near("error rate", num(t, r["error rate"]), 0.5) // 1 error, 1 success per proxy-day
		}
	case "Latency per day":
		for _, r := range rows {
			near("mean latency", num(t, r["mean latency"]), 12)
			near("max latency", num(t, r["max latency"]), 12)
		}
	default:
		t.Errorf("%s: no expectation for this panel; add one", q)
	}
}
