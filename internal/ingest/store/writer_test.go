package store

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/database"
	"proxyusage/internal/ingest"
	"proxyusage/internal/pgtest"
	"proxyusage/internal/rollup"
	"proxyusage/internal/telemetry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func startWriter(t *testing.T, b database.Backend) (*Writer, *pgxpool.Pool) {
	t.Helper()
	url := pgtest.NewDB(t, b)
	ctx := context.Background()
	pool, err := database.Connect(ctx, url, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	for _, q := range []string{
		`INSERT INTO users (id) VALUES ('alice'), ('bob')`,
		`INSERT INTO proxies (id, user_id) VALUES ('a1', 'alice'), ('a2', 'alice'), ('b1', 'bob')`,
		`INSERT INTO proxies (id, user_id, archived_at) VALUES ('old', 'alice', now())`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// Several flushes at once, as several replicas would run them: the
	// database must arbitrate keys between them.
	w, err := NewWriter(ctx, WriterConfig{PoolConfig: pool.Config(), Metrics: telemetry.New(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Writers: 3})
	if err != nil {
		t.Fatal(err)
	}
	w.Start(ctx)
	t.Cleanup(w.Stop)
	return w, pool
}

func count(t *testing.T, pool *pgxpool.Pool, q string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func events(proxyID, prefix string, n int) []ingest.Event {
	now := time.Now().UTC().Truncate(time.Microsecond)
	out := make([]ingest.Event, n)
	for i := range out {
		out[i] = ingest.Event{ProxyID: proxyID, Type: ingest.DataTransfer, Time: now.Add(-time.Duration(i) * time.Second), BytesSent: 1}
		if prefix != "" {
			out[i].EventID = fmt.Sprintf("%s-%d", prefix, i)
		}
		if i%3 == 0 {
			out[i].Type, out[i].ConnectionID = ingest.ConnectionStart, fmt.Sprintf("c-%s-%d", prefix, i)
		}
	}
	return out
}

// Small and large flushes take different paths (one statement, or key
// claim + COPY + logs with a savepoint fallback for repeats); both must
// store each key once, count repeats, and log what they store.
func TestWriterDeduplicates(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			alice := auth.Principal{UserID: "alice"}
			for _, n := range []int{10, smallFlush + 200} {
				t.Run(fmt.Sprint(n), func(t *testing.T) {
					w, pool := startWriter(t, b)
					ctx := context.Background()
					first := events("a1", "k", n)
					acc, denied, err := w.WriteAs(ctx, alice, first, true)
					if err != nil || denied || acc != n {
						t.Fatalf("first write: %d %v %v", acc, denied, err)
					}
					// Repeats of stored keys, repeats inside the request, new keys
					// and keyless events, together.
					again := append(events("a1", "k", n/2), events("a1", "new", n/2)...)
					again = append(again, again[len(again)-1], events("a1", "", 5)[0])
					acc, _, err = w.WriteAs(ctx, alice, again, true)
					if err != nil || acc != n/2+1 {
						t.Fatalf("second write accepted %d (%v), want %d", acc, err, n/2+1)
					}
					if got := count(t, pool, `SELECT count(*) FROM usage_events`); got != n+n/2+1 {
						t.Fatalf("%d events stored, want %d", got, n+n/2+1)
					}
					if got := count(t, pool, `SELECT count(DISTINCT event_id) FROM usage_events`); got != n+n/2 {
						t.Fatalf("%d distinct keys stored, want %d", got, n+n/2)
					}
					if got := count(t, pool, `SELECT count(*) FROM usage_event_keys`); got != n+n/2 {
						t.Fatalf("%d keys claimed, want %d", got, n+n/2)
					}
					if got := count(t, pool, `SELECT coalesce(sum(n), 0) FROM usage_rollup_deltas, unnest(event_counts) AS n`); got != n+n/2+1 {
						t.Fatalf("rollup deltas count %d events, want %d", got, n+n/2+1)
					}
					starts := count(t, pool, `SELECT count(DISTINCT connection_id) FROM usage_events WHERE event_type = 'connection_start'`)
					if got := count(t, pool, `SELECT count(DISTINCT c) FROM usage_connection_invalidations, unnest(connection_ids) AS c`); got != starts {
						t.Fatalf("%d connections logged, want %d", got, starts)
					}
					// Each log row holds one flush's distinct entries.
					if got := count(t, pool, `SELECT count(*) FROM usage_rollup_deltas
						WHERE cardinality(proxy_ids) <> (SELECT count(DISTINCT (p, d)) FROM unnest(proxy_ids, days) AS u(p, d))`); got != 0 {
						t.Fatalf("%d delta rows repeat a proxy-day", got)
					}
					logRows := count(t, pool, `SELECT count(*) FROM usage_rollup_deltas`) + count(t, pool, `SELECT count(*) FROM usage_connection_invalidations`)
					// Only duplicates: nothing stored, nothing logged, nothing fails.
					acc, _, err = w.WriteAs(ctx, alice, first[:3], false)
					if err != nil || acc != 0 {
						t.Fatalf("duplicates: %d %v", acc, err)
					}
					if got := count(t, pool, `SELECT count(*) FROM usage_rollup_deltas`) + count(t, pool, `SELECT count(*) FROM usage_connection_invalidations`); got != logRows {
						t.Fatalf("a flush storing nothing logged %d rows", got-logRows)
					}
				})
			}
		})
	}
}

// Concurrent requests carrying the same keys store each exactly once.
func TestWriterConcurrentRepeats(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			w, pool := startWriter(t, b)
			svc := auth.Principal{UserID: "svc", Roles: []string{auth.RoleService}}
			var wg sync.WaitGroup
			var mu sync.Mutex
			total := 0
			for c := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n := 40
					if c%2 == 0 {
						n = smallFlush + 50 // some flushes take the large path
					}
					acc, _, err := w.WriteAs(context.Background(), svc, events("b1", "same", n), true)
					if err != nil {
						t.Error(err)
					}
					mu.Lock()
					total += acc
					mu.Unlock()
				}()
			}
			wg.Wait()
			want := smallFlush + 50
			if total != want {
				t.Fatalf("accepted %d in total, want %d", total, want)
			}
			if got := count(t, pool, `SELECT count(*) FROM usage_events`); got != want {
				t.Fatalf("%d stored, want %d", got, want)
			}
		})
	}
}

// Authorisation runs in the flush: a request for a proxy the caller may
// not write fails alone, with the index of its first such event.
func TestWriterAuthorizes(t *testing.T) {
	w, pool := startWriter(t, database.Postgres)
	ctx := context.Background()
	alice := auth.Principal{UserID: "alice"}
	mixed := append(events("a1", "m", 3), events("b1", "m", 2)...)
	for _, c := range []struct {
		name   string
		events []ingest.Event
		batch  bool
		status int
		index  int
	}{
		{"someone else's proxy", mixed, true, http.StatusNotFound, 3},
		{"unknown proxy", events("nope", "u", 2), false, http.StatusNotFound, -1},
		{"archived proxy", append(events("a2", "x", 1), events("old", "x", 1)...), true, http.StatusConflict, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var wg sync.WaitGroup
			var okAcc int
			var okErr error
			wg.Add(1)
			go func() { // a neighbour in the same flush is unaffected
				defer wg.Done()
				okAcc, _, okErr = w.WriteAs(ctx, alice, events("a1", "ok-"+c.name, 4), true)
			}()
			_, denied, err := w.WriteAs(ctx, alice, c.events, c.batch)
			wg.Wait()
			if !denied || err == nil {
				t.Fatalf("not denied: %v", err)
			}
			e := err.(*apperr.Error)
			want := map[int]apperr.Code{http.StatusNotFound: apperr.NotFound, http.StatusConflict: apperr.Conflict}[c.status]
			if e.Code != want || e.Index != c.index {
				t.Fatalf("error %+v, want %s at %d", e, want, c.index)
			}
			if okErr != nil || okAcc != 4 {
				t.Fatalf("neighbour: %d %v", okAcc, okErr)
			}
		})
	}
	if got := count(t, pool, `SELECT count(*) FROM usage_events WHERE event_id LIKE 'm-%' OR event_id LIKE 'u-%' OR event_id LIKE 'x-%'`); got != 0 {
		t.Fatalf("%d events of denied requests stored", got)
	}
	// Every claimed key belongs to a stored event: denied requests claim none.
	if got, stored := count(t, pool, `SELECT count(*) FROM usage_event_keys`), count(t, pool, `SELECT count(*) FROM usage_events WHERE event_id IS NOT NULL`); got != stored {
		t.Fatalf("%d keys claimed for %d stored keyed events", got, stored)
	}
	// An admin (or the service role) writes anyone's proxy, never an archived one.
	admin := auth.Principal{UserID: "root", Roles: []string{auth.RoleAdmin}}
	if acc, denied, err := w.WriteAs(ctx, admin, events("b1", "adm", 2), true); err != nil || denied || acc != 2 {
		t.Fatalf("admin: %d %v %v", acc, denied, err)
	}
}

// Active tells the rollup worker to yield: false until a flush, true just
// after one, false again once the window has passed.
func TestWriterActive(t *testing.T) {
	w, _ := startWriter(t, database.Postgres)
	if w.Active(time.Hour) {
		t.Fatal("active before any write")
	}
	if _, _, err := w.WriteAs(context.Background(), auth.Principal{UserID: "alice"}, events("a1", "", 3), true); err != nil {
		t.Fatal(err)
	}
	if !w.Active(time.Hour) {
		t.Fatal("not active right after a write")
	}
	time.Sleep(20 * time.Millisecond)
	if w.Active(10 * time.Millisecond) {
		t.Fatal("still active after the window")
	}
}

// A Writer stops when the context it was started with is done, like the
// other background services: what it accepted is written, later writes
// are refused as unavailable.
func TestWriterStopsWhenContextDone(t *testing.T) {
	_, pool := startWriter(t, database.Postgres)
	w, err := NewWriter(context.Background(), WriterConfig{PoolConfig: pool.Config(), Metrics: telemetry.New(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.Start(ctx)
	t.Cleanup(w.Stop)
	alice := auth.Principal{UserID: "alice"}
	if n, _, err := w.WriteAs(context.Background(), alice, events("a1", "before-", 2), true); err != nil || n != 2 {
		t.Fatalf("write before cancel: %d, %v", n, err)
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, err := w.WriteAs(context.Background(), alice, events("a1", "", 1), true)
		if apperr.CodeOf(err) == apperr.Unavailable {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer still accepts writes after its context is done")
		}
		time.Sleep(time.Millisecond)
	}
}

// The writer's key is the schema's: usage_event_key in SQL (which the
// migration to compact keys uses to carry old keys over) gives the same
// 128 bits for any ids, multi-byte ones included.
func TestEventKeyMatchesSQL(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			pool, err := database.Connect(context.Background(), pgtest.NewDB(t, b), 1)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			for _, c := range [][2]string{{"p1", "e1"}, {"p1", "e2"}, {"p1e", "1"}, {"p", "1e1"}, {"proxy:x.y-z_9", "Ünïcødé ✓ 日本"}, {"p", strings.Repeat("x", 128)}} {
				var got [16]byte
				if err := pool.QueryRow(context.Background(), `SELECT usage_event_key($1, $2)`, c[0], c[1]).Scan(&got); err != nil {
					t.Fatal(err)
				}
				if want := EventKey(c[0], c[1]); got != want {
					t.Fatalf("%q: SQL %x, Go %x", c, got, want)
				}
			}
			if EventKey("p1e", "1") == EventKey("p1", "e1") {
				t.Fatal("the separator does not separate")
			}
		})
	}
}

// On TimescaleDB the columnstore policy compresses raw-event chunks after
// 2 days, inside the 35-day late-data window: late events still land in a
// compressed chunk, through both flush paths, repeats of its keys are
// still duplicates, and the rollups folded from their deltas count exactly.
func TestLateEventsIntoCompressedChunks(t *testing.T) {
	if !slices.Contains(pgtest.Backends(t), database.TimescaleDB) {
		t.Skip("TimescaleDB is not installed")
	}
	w, pool := startWriter(t, database.TimescaleDB)
	ctx := context.Background()
	alice := auth.Principal{UserID: "alice"}
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -10)
	at := func(evs []ingest.Event) []ingest.Event {
		for i := range evs {
			evs[i].Time = day.Add(time.Hour + time.Duration(i)*time.Second)
		}
		return evs
	}
	if acc, _, err := w.WriteAs(ctx, alice, at(events("a1", "early", 20)), true); err != nil || acc != 20 {
		t.Fatalf("early: %d %v", acc, err)
	}
	var job int
	if err := pool.QueryRow(ctx, `SELECT job_id FROM timescaledb_information.jobs
		WHERE hypertable_name = 'usage_events' AND proc_name IN ('policy_compression', 'policy_columnstore')`).Scan(&job); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CALL run_job($1)`, job); err != nil {
		t.Fatal(err)
	}
	compressed := `SELECT count(*) FROM timescaledb_information.chunks
		WHERE hypertable_name = 'usage_events' AND is_compressed AND range_start <= $1 AND range_end > $1`
	if n := count(t, pool, compressed, day); n != 1 {
		t.Fatalf("the policy left the chunk of 10 days ago uncompressed (%d compressed)", n)
	}
	for _, n := range []int{10, smallFlush + 50} { // one statement, and claim + COPY
		late := at(events("a1", fmt.Sprint("late", n), n))
		if acc, _, err := w.WriteAs(ctx, alice, late, true); err != nil || acc != n {
			t.Fatalf("late %d: %d %v", n, acc, err)
		}
		repeat := append(at(events("a1", "early", 20)), late...)
		if acc, _, err := w.WriteAs(ctx, alice, repeat, true); err != nil || acc != 0 {
			t.Fatalf("repeats into a compressed chunk stored %d (%v)", acc, err)
		}
	}
	want := 20 + 10 + smallFlush + 50
	if got := count(t, pool, `SELECT count(*) FROM usage_events WHERE time >= $1 AND time < $1 + interval '1 day'`, day); got != want {
		t.Fatalf("%d events on the day, want %d", got, want)
	}
	worker, err := rollup.NewWorker(rollup.WorkerConfig{Pool: pool, Backend: database.TimescaleDB, Metrics: telemetry.New(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxConnectionAge: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for {
		s, err := worker.RunOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !s.Full {
			break
		}
	}
	if got := count(t, pool, `SELECT coalesce(sum(event_count), 0)::int FROM usage_daily WHERE bucket = $1`, day); got != want {
		t.Fatalf("usage_daily counts %d, want %d", got, want)
	}
}

// An eventId in canonical uuid form is stored in 16 bytes (event_uuid),
// any other in event_id, through both flush paths; either way the id
// reads back exactly as sent, and repeats are duplicates.
func TestEventIDStoredCompactly(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			w, pool := startWriter(t, b)
			ctx := context.Background()
			alice := auth.Principal{UserID: "alice"}
			ids := []string{"0b6f3a7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "0B6F3A7E-1C2D-4E5F-8A9B-0C1D2E3F4A5B",
				"{0b6f3a7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b}", "0b6f3a7e1c2d4e5f8a9b0c1d2e3f4a5b", "0b6f3a7e-1c2d-4e5f-8a9b-0c1d2e3f4a5g", "e-1"}
			for _, n := range []int{len(ids), smallFlush + 1} { // one statement; claim + COPY
				proxyID := map[int]string{len(ids): "a1", smallFlush + 1: "a2"}[n]
				evs := events(proxyID, "pad", n)
				for i, id := range ids {
					evs[i].EventID = id
				}
				for _, want := range []int{len(evs), 0} {
					if acc, _, err := w.WriteAs(ctx, alice, evs, true); err != nil || acc != want {
						t.Fatalf("%d events: accepted %d (%v), want %d", len(evs), acc, err, want)
					}
				}
				for i, id := range ids {
					var text *string
					var compact bool
					if err := pool.QueryRow(ctx, `SELECT coalesce(event_id, event_uuid::text), event_uuid IS NOT NULL FROM usage_events
						WHERE proxy_id = $1 AND time = $2`, proxyID, evs[i].Time).Scan(&text, &compact); err != nil {
						t.Fatalf("%q: %v", id, err)
					}
					if text == nil || *text != id || compact != (i == 0) {
						t.Fatalf("%q read back as %v (compact %v)", id, text, compact)
					}
				}
			}
		})
	}
}

// While the rollups lag past LagBound, flushes wait before writing
// (backpressure) and still write everything; once the lag is back within
// the bound they do not wait. The lag is rollup.Backlog's, as served.
func TestWriterHoldsBackWhileRollupsLag(t *testing.T) {
	_, pool := startWriter(t, database.Postgres)
	ctx := context.Background()
	m := telemetry.New()
	w, err := NewWriter(ctx, WriterConfig{PoolConfig: pool.Config(), Metrics: m,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), LagBound: 5 * time.Second,
		RollupLag: func(ctx context.Context) (time.Duration, error) {
			lag, _, err := rollup.Backlog(ctx, pool)
			return lag, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	// A connection log row a minute old: the worker is a minute behind.
	if _, err := pool.Exec(ctx, `INSERT INTO usage_connection_invalidations (user_id, proxy_ids, connection_ids, times, is_starts, logged_at)
		VALUES ('alice', '{a1}', '{c1}', ARRAY[now()], '{true}', now() - interval '1 minute')`); err != nil {
		t.Fatal(err)
	}
	w.Start(ctx)
	t.Cleanup(w.Stop)
	heldBack := func() float64 {
		var d dto.Metric
		if err := m.IngestHeldBack.Write(&d); err != nil {
			t.Fatal(err)
		}
		return d.GetCounter().GetValue()
	}
	alice := auth.Principal{UserID: "alice"}
	time.Sleep(2 * lagPoll) // the lag is read
	if n, _, err := w.WriteAs(ctx, alice, events("a1", "late-", 5), true); err != nil || n != 5 {
		t.Fatalf("write while lagging: %d, %v", n, err)
	}
	if got, want := heldBack(), backpressureDelay(time.Minute, 5*time.Second).Seconds(); got < want {
		t.Fatalf("held back %.2f s while the rollups lagged a minute, want %.2f", got, want)
	}
	// The worker catches up.
	if _, err := pool.Exec(ctx, `DELETE FROM usage_connection_invalidations; DELETE FROM usage_rollup_deltas`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * lagPoll)
	before := heldBack()
	if n, _, err := w.WriteAs(ctx, alice, events("a1", "fresh-", 5), true); err != nil || n != 5 {
		t.Fatalf("write within the bound: %d, %v", n, err)
	}
	if got := heldBack(); got != before {
		t.Fatalf("held back %.2f s more with no lag", got-before)
	}
	if n := count(t, pool, `SELECT count(*) FROM usage_events WHERE event_id LIKE 'late-%' OR event_id LIKE 'fresh-%'`); n != 10 {
		t.Fatalf("%d events stored, want 10", n)
	}
}

// No wait up to the bound; then a second a flush for each bound of
// excess, at most 2 s.
func TestBackpressureDelay(t *testing.T) {
	for _, c := range []struct{ lag, bound, want time.Duration }{
		{0, 5 * time.Second, 0},
		{5 * time.Second, 5 * time.Second, 0},
		{6 * time.Second, 5 * time.Second, 200 * time.Millisecond},
		{10 * time.Second, 5 * time.Second, time.Second},
		{time.Hour, 5 * time.Second, 2 * time.Second},
		{time.Hour, 0, 0},
	} {
		if got := backpressureDelay(c.lag, c.bound); got != c.want {
			t.Errorf("backpressureDelay(%s, %s) = %s, want %s", c.lag, c.bound, got, c.want)
		}
	}
}
