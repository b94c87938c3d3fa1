package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"proxyusage/internal/auth"
	"proxyusage/internal/database"
	"proxyusage/internal/ingest"
	"proxyusage/internal/workload"
)

// Shared machinery of the long-running phases (11, 12): an endless stream
// of batch bodies with random uuid4 eventIds, batch clients that can be
// paced, and per-window counters. It uses only the service's HTTP API, its
// /metrics and plain SQL, so it keeps working whatever layout the service
// stores events, keys and rollups in.

// Accounts of the long-running phases: 100 proxies of 10 users.
const (
	streamUsers   = 10
	streamProxies = 100
)

// uuidLen is the length of a textual UUID.
const uuidLen = 36

// placeholderID stands for an eventId in a template body until a sender
// writes a fresh random one over it.
const placeholderID = "00000000-0000-4000-8000-000000000000"

// connTag marks connection ids in template bodies; the eight characters
// after it are the round, so that a connection's start, transfers and end
// stay paired while no connection id repeats across rounds.
const connTag = "k"

const roundWidth = 8

// putUUID4 writes a random version-4 UUID into dst (36 bytes).
func putUUID4(dst []byte, rng *rand.ChaCha8) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rng.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rng.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	hex.Encode(dst[0:8], b[0:4])
	dst[8] = '-'
	hex.Encode(dst[9:13], b[4:6])
	dst[13] = '-'
	hex.Encode(dst[14:18], b[6:8])
	dst[18] = '-'
	hex.Encode(dst[19:23], b[8:10])
	dst[23] = '-'
	hex.Encode(dst[24:36], b[10:16])
}

func uuid4(rng *rand.ChaCha8) string {
	var b [uuidLen]byte
	putUUID4(b[:], rng)
	return string(b[:])
}

// putRound writes round as roundWidth hex digits.
func putRound(dst []byte, round int) {
	s := strconv.FormatInt(int64(round), 16)
	for i := range roundWidth {
		dst[i] = '0'
	}
	copy(dst[roundWidth-len(s):], s)
}

// streamGenerator returns the workload of the long-running phases: the
// events of the span before now over 100 proxies of 10 users, with
// connection ids a template can re-tag per round.
func streamGenerator(seed uint64, now time.Time, span time.Duration, events int) *workload.Generator {
	return workload.New(workload.Config{Seed: seed, Users: streamUsers, Proxies: streamProxies,
		Start: now.Add(-span), End: now, Events: events, Prefix: connTag + strings.Repeat("0", roundWidth)})
}

// templates are pre-encoded batch bodies; sending one writes fresh random
// eventIds and the round into a copy, so the load generator spends almost
// no CPU per event (it shares the machine with the service and
// PostgreSQL).
type templates struct {
	bodies [][]byte
	ids    [][]int // offsets of each body's eventIds
	conns  [][]int // offsets of each body's connection-id rounds
	jitter [][]int // with -stream-jitter: offsets of the sub-millisecond digits of each non-connection event's timestamp
	times  [][]int // with follow: offsets of each event's timestamp
	// follow moves every sent event's time on by the whole seconds since
	// created, so the stream keeps the same distance from the clock, as
	// proxies reporting live do, instead of filling the same span again
	// round after round.
	follow  bool
	created time.Time
	events  int // per body, on average
	perBody []int
	// source keeps the template events for the COPY baseline.
	source []ingest.Event
}

// newTemplates encodes n bodies of size events from the span before now.
func newTemplates(seed uint64, now time.Time, span time.Duration, n, size int) *templates {
	gen := streamGenerator(seed, now, span, n*size)
	t := &templates{}
	for {
		evs := gen.Next(nil, size)
		if len(evs) == 0 {
			break
		}
		for i := range evs {
			evs[i].EventID = placeholderID
			if streamJitter && !evs[i].IsConnectionEvent() {
				// Six fractional digits exactly, the last three rewritten
				// by fill: the same millisecond, so the same day.
				evs[i].Time = evs[i].Time.Truncate(time.Millisecond).Add(time.Microsecond)
			}
		}
		body := workload.AppendBatch(nil, evs)
		t.bodies = append(t.bodies, body)
		t.ids = append(t.ids, offsets(body, `"eventId":"`))
		if streamJitter {
			var subMS []int
			for i, o := range offsets(body, `"timestamp":"`) {
				if !evs[i].IsConnectionEvent() {
					subMS = append(subMS, o+len("2006-01-02T15:04:05.000"))
				}
			}
			t.jitter = append(t.jitter, subMS)
		}
		t.conns = append(t.conns, offsets(body, `"connectionId":"`+connTag))
		t.times = append(t.times, offsets(body, `"timestamp":"`))
		t.perBody = append(t.perBody, len(evs))
		t.source = append(t.source, evs...)
	}
	t.events = len(t.source) / max(1, len(t.bodies))
	t.created = time.Now()
	return t
}

// offsets lists where the value after each occurrence of key starts.
func offsets(body []byte, key string) []int {
	var out []int
	for i := 0; ; {
		j := bytes.Index(body[i:], []byte(key))
		if j < 0 {
			return out
		}
		i += j + len(key)
		out = append(out, i)
	}
}

// fill writes the k-th body of the stream into dst and returns it with its
// event count: template k mod n, in round k / n.
func (t *templates) fill(dst []byte, k int, rng *rand.ChaCha8) ([]byte, int) {
	i, round := k%len(t.bodies), k/len(t.bodies)
	dst = append(dst[:0], t.bodies[i]...)
	for _, o := range t.ids[i] {
		putUUID4(dst[o:o+uuidLen], rng)
	}
	for _, o := range t.conns[i] {
		putRound(dst[o:o+roundWidth], round)
	}
	if shift := time.Since(t.created).Truncate(time.Second); t.follow && shift > 0 {
		for _, o := range t.times[i] {
			shiftTime(dst[o:], shift)
		}
	}
	if t.jitter != nil {
		for _, o := range t.jitter[i] {
			us := rng.Uint64() % 1000
			dst[o], dst[o+1], dst[o+2] = '0'+byte(us/100), '0'+byte(us/10%10), '0'+byte(us%10)
		}
	}
	return dst, t.perBody[i]
}

// shiftTime moves the RFC 3339 time at the start of b (up to its closing
// quote) on by shift, a whole number of seconds, written back with as
// many fractional digits as it had: the same width, the same sub-second
// part, so a connection's start and end keep their order.
func shiftTime(b []byte, shift time.Duration) {
	n := bytes.IndexByte(b, '"')
	if n < 0 {
		return
	}
	ts, err := time.Parse(time.RFC3339Nano, string(b[:n]))
	if err != nil {
		return
	}
	layout := "2006-01-02T15:04:05Z"
	if dot := bytes.IndexByte(b[:n], '.'); dot >= 0 {
		layout = "2006-01-02T15:04:05." + strings.Repeat("0", n-dot-2) + "Z"
	}
	var buf [40]byte
	if out := ts.Add(shift).AppendFormat(buf[:0], layout); len(out) == n {
		copy(b, out)
	}
}

// streamJitter is -stream-jitter: templates resent round after round
// otherwise repeat every event's time, so the events' (proxy_id, time)
// index takes the same keys again each round, which live ingest does
// not. Connection events keep their times: a start and its end may
// share a millisecond, and their order is what pairs them.
var streamJitter bool

// copyRows returns rows [from, from+n) of the stream as events for a COPY:
// the template events in rounds, with fresh random eventIds and re-tagged
// connection ids, as fill would send them.
func (t *templates) copyRows(from, n int, rng *rand.ChaCha8) []ingest.Event {
	out := make([]ingest.Event, n)
	tagAt := len(connTag)
	for j := range out {
		k := from + j
		e := t.source[k%len(t.source)]
		e.EventID = uuid4(rng)
		if e.ConnectionID != "" {
			c := []byte(e.ConnectionID)
			putRound(c[tagAt:tagAt+roundWidth], k/len(t.source))
			e.ConnectionID = string(c)
		}
		out[j] = e
	}
	return out
}

// streamRun is batch clients posting the template stream, paced to a rate
// or as fast as the service takes them.
type streamRun struct {
	accepted   atomic.Int64
	duplicates atomic.Int64 // none expected: every eventId is new
	retries    atomic.Int64
	next       atomic.Int64 // next body of the stream, shared by successive runs
	runs       uint64       // runs started, so each draws its own eventIds
	errOnce    sync.Once
	err        error
}

// run posts bodies from clients until ctx ends or d passes. perSecond > 0
// paces the batches on one open-loop schedule (a client that falls behind
// sends at once); 0 sends back to back.
func (s *streamRun) run(ctx context.Context, url, tok string, t *templates, clients int, d time.Duration, perSecond float64, seed uint64) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t0 := time.Now()
	first := s.next.Load()
	s.runs++
	run := s.runs
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := newLeanConn(url)
			if err != nil {
				s.fail(err, cancel)
				return
			}
			defer l.close()
			rng := rand.NewChaCha8(seedBytes(seed, run<<32|uint64(c)))
			var buf []byte
			for ctx.Err() == nil {
				k := s.next.Add(1) - 1
				if perSecond > 0 {
					at := t0.Add(time.Duration(float64(k-first) * float64(t.events) / perSecond * float64(time.Second)))
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Until(at)):
					}
				}
				var n int
				buf, n = t.fill(buf, int(k), rng)
				a, err := post(l, "/proxy/usage/events", tok, buf, http.StatusCreated, &s.retries)
				if err != nil {
					s.fail(err, cancel)
					return
				}
				if a.Accepted+a.Duplicates != n {
					s.fail(fmt.Errorf("batch of %d events: %d accepted, %d duplicates", n, a.Accepted, a.Duplicates), cancel)
					return
				}
				s.accepted.Add(int64(a.Accepted))
				s.duplicates.Add(int64(a.Duplicates))
			}
		}()
	}
	wg.Wait()
	return s.err
}

func (s *streamRun) fail(err error, cancel func()) {
	s.errOnce.Do(func() { s.err = err; cancel() })
}

func seedBytes(seed, stream uint64) [32]byte {
	var b [32]byte
	binary.LittleEndian.PutUint64(b[:8], seed)
	binary.LittleEndian.PutUint64(b[8:16], stream)
	return b
}

// serviceToken is the ingest credential of the long-running phases.
func serviceToken() (string, error) {
	return auth.Mint([]byte(secret), "bench-stream", []string{auth.RoleService}, 24*time.Hour, "", "")
}

// phaseBackends are the backends the long-running phases run on: those
// of -backends the cluster can serve (TimescaleDB only when its library is
// preloaded).
// onEachBackend makes phase number a run of run on each backend of
// -backends, in turn.
func (b *bench) onEachBackend(number string, run func(context.Context, database.Backend) error) func(context.Context) error {
	return func(ctx context.Context) error {
		backends, err := b.phaseBackends(ctx)
		if err != nil {
			return err
		}
		for _, be := range backends {
			if err := run(ctx, be); err != nil {
				return fmt.Errorf("(%s) on %s: %w", number, be, err)
			}
		}
		return nil
	}
}

func (b *bench) phaseBackends(ctx context.Context) ([]database.Backend, error) {
	var preload string
	if err := b.adminQueryRow(ctx, `SELECT current_setting('shared_preload_libraries')`, &preload); err != nil {
		return nil, err
	}
	var out []database.Backend
	for name := range strings.SplitSeq(b.opt.backends, ",") {
		switch be := database.Backend(strings.TrimSpace(name)); be {
		case database.Postgres:
			out = append(out, be)
		case database.TimescaleDB:
			if strings.Contains(preload, "timescaledb") {
				out = append(out, be)
			} else {
				fmt.Println("  TimescaleDB is not available on this cluster: skipped")
			}
		default:
			return nil, fmt.Errorf("-backends: unknown backend %q (postgres, timescaledb)", name)
		}
	}
	return out, nil
}

// short names a backend in result ids.
func short(be database.Backend) string {
	if be == database.TimescaleDB {
		return "ts"
	}
	return "pg"
}

// orDash formats a measure, or a dash when the service does not export it.
func orDash(v float64, ok bool, format string) string {
	if !ok {
		return "–"
	}
	return fmt.Sprintf(format, v)
}

// adminQueryRow runs one query on the cluster's postgres database.
func (b *bench) adminQueryRow(ctx context.Context, sql string, dst ...any) error {
	conn, err := pgx.Connect(ctx, b.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql).Scan(dst...)
}
