package store

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"proxyusage/internal/auth"
	"proxyusage/internal/ingest"
	"proxyusage/internal/pgtest"
)

// varied returns n keyed events of proxyID from t0 on, covering every
// optional field both set and unset.
func varied(proxyID string, t0 time.Time, n int) []ingest.Event {
	out := make([]ingest.Event, n)
	for i := range out {
		e := ingest.Event{ProxyID: proxyID, EventID: fmt.Sprintf("e-%d", i), Time: t0.Add(time.Duration(i) * time.Millisecond),
			Type: ingest.DataTransfer, BytesSent: int64(i), BytesReceived: int64(2 * i)}
		switch i % 4 {
		case 0:
			e.Type, e.ConnectionID, e.LatencyUS, e.HasLatency = ingest.ConnectionStart, fmt.Sprintf("c-%d", i), int64(1000*i), true
			e.IP = netip.AddrFrom4([4]byte{10, 0, byte(i), 1})
		case 1:
			e.Type, e.ConnectionID, e.DurationUS, e.HasDuration = ingest.ConnectionEnd, fmt.Sprintf("c-%d", i-1), int64(i), true
		case 2:
			e.Type, e.ErrorMessage = ingest.ErrorEvent, "refused"
			e.IP = netip.MustParseAddr("2001:db8::1")
		}
		out[i] = e
	}
	return out
}

// Every path that stores events stores the same row for the same event:
// the writer's single statement (small flushes), its COPY (large ones) and
// the bulk COPY source seeding uses.
func TestEveryPathStoresTheSameRow(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			w, pool := startWriter(t, b)
			ctx := context.Background()
			alice := auth.Principal{UserID: "alice"}
			const n = 12
			t0 := time.Now().UTC().Truncate(time.Microsecond).Add(-time.Hour)
			if acc, _, err := w.WriteAs(ctx, alice, varied("a1", t0, n), true); err != nil || acc != n {
				t.Fatalf("small flush: %d %v", acc, err)
			}
			if acc, _, err := w.WriteAs(ctx, alice, varied("a2", t0, smallFlush+n), true); err != nil || acc != smallFlush+n {
				t.Fatalf("large flush: %d %v", acc, err)
			}
			seed := varied("b1", t0, n)
			ptrs := make([]*ingest.Event, n)
			for i := range seed {
				ptrs[i] = &seed[i]
			}
			if _, err := pool.CopyFrom(ctx, pgx.Identifier{"usage_events"}, append(EventColumns, "received_at"), CopySource(ptrs, time.Now())); err != nil {
				t.Fatal(err)
			}
			rows := func(p string) string {
				return fmt.Sprintf(`SELECT time, event_type, event_id, connection_id, bytes_sent, bytes_received, duration_us,
					latency_us, latency_bucket, error_message, ip_address FROM usage_events
					WHERE proxy_id = '%s' AND event_id = ANY(ARRAY(SELECT 'e-' || g FROM generate_series(0, %d) g))`, p, n-1)
			}
			for _, pair := range [][2]string{{"a1", "a2"}, {"a1", "b1"}} {
				a, c := rows(pair[0]), rows(pair[1])
				if got := count(t, pool, fmt.Sprintf(`SELECT count(*) FROM ((%[1]s EXCEPT ALL %[2]s) UNION ALL (%[2]s EXCEPT ALL %[1]s)) d`, a, c)); got != 0 {
					t.Errorf("%d rows differ between %s and %s", got, pair[0], pair[1])
				}
			}
			// The optional fields are NULL exactly when the event lacks them.
			for q, want := range map[string]int{
				`count(*) FILTER (WHERE ip_address IS NOT NULL)`:                                n / 2,
				`count(*) FILTER (WHERE latency_us IS NOT NULL AND latency_bucket IS NOT NULL)`: n / 4,
				`count(*) FILTER (WHERE latency_us IS NULL AND latency_bucket IS NULL)`:         n - n/4,
				`count(*) FILTER (WHERE duration_us IS NOT NULL)`:                               n / 4,
				`count(*) FILTER (WHERE connection_id IS NOT NULL)`:                             n / 2,
				`count(*) FILTER (WHERE error_message IS NOT NULL)`:                             n / 4,
				`count(*) FILTER (WHERE ip_address = '2001:db8::1' AND event_type = 'error')`:   n / 4,
			} {
				if got := count(t, pool, `SELECT `+q+` FROM usage_events WHERE proxy_id = 'a1'`); got != want {
					t.Errorf("%s = %d, want %d", q, got, want)
				}
			}
		})
	}
}
