// Package workload generates seeded, realistic proxy-usage workloads for
// benchmarks: users owning proxies, and events over a time span made of
// connection lifecycles (start, data transfers, end with its duration),
// failed connects and mid-connection errors, latency samples, client
// addresses and idempotency keys. The same events can be sent through the
// API (AppendJSON, AppendBatch) or copied straight into usage_events with
// the invalidation logs the rollup worker consumes (see seed.go).
//
// A Generator is deterministic for a Config: the same seed gives the same
// events, in time order (up to the events of one connection that straddle
// a window, which are still emitted in order).
package workload

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"proxyusage/internal/ingest"
)

// Config describes a workload.
type Config struct {
	Seed    uint64
	Users   int       // distinct owners (default 100)
	Proxies int       // proxies, spread round-robin over the users (default 1000)
	Start   time.Time // first event at or after Start
	End     time.Time // every event strictly before End
	Events  int       // events to generate (the generator stops there)
	// NoEventIDs leaves out idempotency keys (they are on by default, as
	// proxy infrastructure that retries should send them).
	NoEventIDs bool
	// Prefix makes event and connection ids unique across generators
	// writing into the same database (default "w").
	Prefix string
	// Window is the time step the generator advances by (default 1h).
	Window time.Duration
}

// Proxy is a generated proxy and its owner.
type Proxy struct {
	ID     string
	UserID string
}

// ProxyID and UserID name the i-th proxy and user of any workload, so that
// several workloads (ingest, late data) can share one set of accounts.
func ProxyID(i int) string { return fmt.Sprintf("px-%04d", i) }

// UserID names the i-th user.
func UserID(i int) string { return fmt.Sprintf("user-%03d", i) }

// Generator produces the events of a workload in time order.
type Generator struct {
	cfg     Config
	rng     *rand.Rand
	proxies []Proxy
	cum     []float64 // cumulative proxy weights
	ips     [][]netip.Addr

	window    time.Duration
	windows   int
	w         int // next window to generate
	generated int // events generated (some may be dropped past End)
	emitted   int
	pending   eventHeap
	nextEvent uint64
	nextConn  uint64
}

// Connection-level shape of the workload.
const (
	pFailedConnect = 0.03  // attempt that never opens: one error event
	pMidError      = 0.02  // open connection that reports an error
	pLostEnd       = 0.005 // connection whose end never arrives
	pTotalsAtEnd   = 0.3   // bytes reported once as totals on connection_end
	pTransferLat   = 0.3   // data_transfer carrying a first-byte latency
)

var errorMessages = []string{
	"upstream connect timeout", "connection reset by peer", "TLS handshake failed",
	"DNS resolution failed", "upstream returned 502", "client closed connection",
}

// New returns a generator for cfg.
func New(cfg Config) *Generator {
	if cfg.Users <= 0 {
		cfg.Users = 100
	}
	if cfg.Proxies <= 0 {
		cfg.Proxies = 1000
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "w"
	}
	if cfg.Window <= 0 {
		cfg.Window = time.Hour
	}
	cfg.Start = cfg.Start.UTC().Truncate(time.Microsecond)
	cfg.End = cfg.End.UTC().Truncate(time.Microsecond)
	g := &Generator{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x70726f7879))}
	g.proxies = make([]Proxy, cfg.Proxies)
	g.cum = make([]float64, cfg.Proxies)
	g.ips = make([][]netip.Addr, cfg.Proxies)
	total := 0.0
	for i := range g.proxies {
		g.proxies[i] = Proxy{ID: ProxyID(i), UserID: UserID(i % cfg.Users)}
		// Log-normal traffic per proxy: a few busy ones, a long quiet tail.
		total += math.Exp(0.7 * g.rng.NormFloat64())
		g.cum[i] = total
		ips := make([]netip.Addr, 8)
		for j := range ips {
			if g.rng.IntN(10) == 0 {
				var b [16]byte
				b[0], b[1] = 0x20, 0x01
				for k := 2; k < 16; k++ {
					b[k] = byte(g.rng.UintN(256))
				}
				ips[j] = netip.AddrFrom16(b)
			} else {
				ips[j] = netip.AddrFrom4([4]byte{byte(1 + g.rng.UintN(223)), byte(g.rng.UintN(256)), byte(g.rng.UintN(256)), byte(1 + g.rng.UintN(254))})
			}
		}
		g.ips[i] = ips
	}
	span := cfg.End.Sub(cfg.Start)
	g.window = cfg.Window
	g.windows = int((span + g.window - 1) / g.window)
	return g
}

// Users lists the user ids, in order.
func (g *Generator) Users() []string {
	out := make([]string, g.cfg.Users)
	for i := range out {
		out[i] = UserID(i)
	}
	return out
}

// Proxies lists the proxies, in order.
func (g *Generator) Proxies() []Proxy { return g.proxies }

// Next appends up to max events to dst, in time order, and returns it. An
// empty result means the workload is exhausted.
func (g *Generator) Next(dst []ingest.Event, max int) []ingest.Event {
	n := 0
	for n < max && g.emitted < g.cfg.Events {
		if g.pending.Len() > 0 && (g.w >= g.windows || g.pending[0].Time.Before(g.windowStart(g.w))) {
			e := heap.Pop(&g.pending).(ingest.Event)
			if !e.Time.Before(g.cfg.End) {
				continue // past the end of the workload: never sent
			}
			dst = append(dst, e)
			n++
			g.emitted++
			continue
		}
		if g.w >= g.windows {
			break
		}
		g.generateWindow()
	}
	return dst
}

func (g *Generator) windowStart(w int) time.Time {
	t := g.cfg.Start.Add(time.Duration(w) * g.window)
	if t.After(g.cfg.End) {
		return g.cfg.End
	}
	return t
}

// generateWindow creates the connections starting in the next window. Its
// event quota follows a daily cycle (quiet nights, busy afternoons) around
// an even share of what remains.
func (g *Generator) generateWindow() {
	ws, we := g.windowStart(g.w), g.windowStart(g.w+1)
	remaining := g.cfg.Events - g.generated
	left := g.windows - g.w
	g.w++
	if remaining <= 0 || !ws.Before(we) {
		return
	}
	mid := ws.Add(we.Sub(ws) / 2)
	hour := float64(mid.Hour()) + float64(mid.Minute())/60
	quota := float64(remaining) / float64(left) * (1 + 0.5*math.Sin(2*math.Pi*(hour-9)/24))
	target := g.generated + max(1, int(math.Round(quota)))
	span := we.Sub(ws)
	for g.generated < target {
		at := ws.Add(time.Duration(g.rng.Int64N(int64(span)))).Truncate(time.Microsecond)
		g.connection(at)
	}
}

func (g *Generator) pickProxy() int {
	x := g.rng.Float64() * g.cum[len(g.cum)-1]
	return sort.SearchFloat64s(g.cum, x)
}

func (g *Generator) lognormal(median, sigma float64) float64 {
	return median * math.Exp(sigma*g.rng.NormFloat64())
}

func (g *Generator) push(e ingest.Event) {
	if !g.cfg.NoEventIDs {
		g.nextEvent++
		e.EventID = g.cfg.Prefix + "-" + strconv.FormatUint(g.nextEvent, 36)
	}
	heap.Push(&g.pending, e)
	g.generated++
}

func (g *Generator) latencyUS(medianMs float64) int64 {
	return int64(min(g.lognormal(medianMs, 0.8), 60_000) * 1000)
}

// connection generates one connection attempt starting at at.
func (g *Generator) connection(at time.Time) {
	p := g.pickProxy()
	proxyID := g.proxies[p].ID
	ip := g.ips[p][g.rng.IntN(len(g.ips[p]))]
	if g.rng.Float64() < pFailedConnect {
		g.push(ingest.Event{ProxyID: proxyID, Type: ingest.ErrorEvent, Time: at, IP: ip,
			ErrorMessage: errorMessages[g.rng.IntN(len(errorMessages))],
			LatencyUS:    g.latencyUS(900), HasLatency: true})
		return
	}
	g.nextConn++
	conn := g.cfg.Prefix + "c" + strconv.FormatUint(g.nextConn, 36)
	g.push(ingest.Event{ProxyID: proxyID, Type: ingest.ConnectionStart, Time: at, ConnectionID: conn, IP: ip,
		LatencyUS: g.latencyUS(35), HasLatency: true})
	// Durations: median 20 s with a long tail, capped at 6 hours.
	dur := time.Duration(min(g.lognormal(20, 1.5), 6*3600) * float64(time.Second)).Truncate(time.Microsecond)
	end := at.Add(dur)
	var sent, received int64
	totals := g.rng.Float64() < pTotalsAtEnd
	transfers := g.rng.IntN(5) // 0..4, two on average
	if totals {
		transfers = 0
	}
	for range transfers {
		t := at.Add(time.Duration(g.rng.Int64N(int64(dur) + 1))).Truncate(time.Microsecond)
		e := ingest.Event{ProxyID: proxyID, Type: ingest.DataTransfer, Time: t, ConnectionID: conn,
			BytesSent: int64(g.lognormal(200_000, 1.2)), BytesReceived: int64(g.lognormal(8_000, 1.0))}
		if g.rng.Float64() < pTransferLat {
			e.LatencyUS, e.HasLatency = g.latencyUS(120), true
		}
		g.push(e)
	}
	if totals {
		sent, received = int64(g.lognormal(600_000, 1.3)), int64(g.lognormal(20_000, 1.0))
	}
	if g.rng.Float64() < pMidError {
		t := at.Add(time.Duration(g.rng.Int64N(int64(dur) + 1))).Truncate(time.Microsecond)
		g.push(ingest.Event{ProxyID: proxyID, Type: ingest.ErrorEvent, Time: t, ConnectionID: conn,
			ErrorMessage: errorMessages[g.rng.IntN(len(errorMessages))]})
	}
	if g.rng.Float64() < pLostEnd {
		return
	}
	g.push(ingest.Event{ProxyID: proxyID, Type: ingest.ConnectionEnd, Time: end, ConnectionID: conn,
		BytesSent: sent, BytesReceived: received, DurationUS: dur.Microseconds(), HasDuration: true})
}

// eventHeap orders pending events by time.
type eventHeap []ingest.Event

func (h eventHeap) Len() int           { return len(h) }
func (h eventHeap) Less(i, j int) bool { return h[i].Time.Before(h[j].Time) }
func (h eventHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)        { *h = append(*h, x.(ingest.Event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = ingest.Event{}
	*h = old[:len(old)-1]
	return e
}
