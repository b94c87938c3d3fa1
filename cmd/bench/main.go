// Command bench measures proxyusage against its performance targets
// (BENCHMARKS.md), in one run, on its own throwaway PostgreSQL cluster
// (fsync on) and with the real service built and started as a separate
// process:
//
//  1. raw binary COPY of the generated rows into a table like usage_events
//  2. batch ingest through the API (1,000 events per request)
//  3. single-event ingest at 64 concurrent clients
//  4. read endpoints over a seeded, rolled-up dataset vs. the same answers
//     computed from raw events
//  5. the service's peak RSS during 2 and 3
//  6. rollup catch-up after a burst of late events
//  7. the edge's access question under ingest, and alert → webhook delay
//  8. fairness: a victim tenant's reads and batch ingest while an attacker
//     holds slow uploads or thousands of idle connections (attacks())
//  11. sustained batch ingest with random uuid4 eventIds against a raw COPY
//     of the same rows, per-minute rates, and single-event ingest, on each
//     backend (sustained.go)
//  12. rollup lag and read latency while ingest never stops: paced at half
//     the measured maximum, then at full rate, on each backend (live.go)
//  13. batch ingest with 50 M remembered idempotency keys vs. an empty
//     database, bytes per key and per raw (and compressed) event, on each
//     backend (keys.go)
//  14. reads under ingest with 0 and 1 streaming standby (replica.go); only
//     with -phases replica: its base backup copies the whole cluster, which
//     after the other phases holds tens of GB
//
// It prints progress and a table to the terminal and writes the table, the
// machine, the PostgreSQL settings and profile evidence to BENCHMARKS.md.
// Run it from the repository root (make bench, make bench-quick).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// defaultPhases are the phases of a plain run; one of fewer writes its own
// block of the results file (writeGenerated).
const defaultPhases = "ingest,reads,access,fairness,sustained,live,keys"

type options struct {
	quick   bool
	seed    uint64
	backend string
	out     string
	dir     string
	keep    bool
	profDir string

	users, proxies int

	ingestEvents  int
	batchSize     int
	batchClients  int
	singleClients int
	singleFor     time.Duration

	readEvents   int
	readDays     int
	readRequests int
	rawRequests  int
	rollupBatch  int

	lateEvents int
	lateDays   int

	phases         string
	fairnessEvents int
	fairnessFor    time.Duration
	idleConns      int
	attacks        string

	backends          string
	sustainedFor      time.Duration
	sustainedNoWorker bool
	sustainedSpan     time.Duration
	sustainedFollow   bool
	sustainedClients  int
	sustainedCopyRows int
	liveFor           time.Duration
	liveFullFor       time.Duration
	liveMaxFor        time.Duration
	liveReadEvery     time.Duration
	livePace          float64

	keysSeeded, keysEvents int

	pgSet      pgSetFlag
	serviceEnv serviceEnvFlag
}

func main() {
	var o options
	flag.BoolVar(&o.quick, "quick", false, "reduced sizes (same code paths), 2-3 minutes; targets missed at these sizes read \"n/a at quick sizes\"")
	flag.Uint64Var(&o.seed, "seed", 42, "workload seed")
	flag.StringVar(&o.backend, "backend", "auto", "storage backend: auto, postgres or timescaledb")
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "results file (empty: none)")
	flag.StringVar(&o.dir, "dir", "", "work directory for the cluster and binaries (default: a temporary one, removed at exit)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory and leave nothing running")
	flag.StringVar(&o.profDir, "profiles", ".bench", "directory for CPU profiles of the service")
	flag.IntVar(&o.users, "users", 100, "users")
	flag.IntVar(&o.proxies, "proxies", 1000, "proxies")
	flag.IntVar(&o.ingestEvents, "ingest-events", 2_000_000, "events for raw COPY and batch ingest (1, 2)")
	flag.IntVar(&o.batchSize, "batch-size", 1000, "events per batch request (2)")
	flag.IntVar(&o.batchClients, "batch-clients", 4, "concurrent batch clients (2)")
	flag.IntVar(&o.singleClients, "single-clients", 64, "concurrent single-event clients (3)")
	flag.DurationVar(&o.singleFor, "single-duration", 20*time.Second, "single-event ingest run time (3)")
	flag.IntVar(&o.readEvents, "read-events", 10_000_000, "events of the read dataset (4)")
	flag.IntVar(&o.readDays, "read-days", 90, "days the read dataset spans (4)")
	flag.IntVar(&o.readRequests, "read-requests", 300, "requests per read endpoint (4)")
	flag.IntVar(&o.rawRequests, "raw-requests", 15, "raw-SQL runs per read endpoint (4)")
	flag.IntVar(&o.rollupBatch, "seed-rollup-batch", 100_000, "invalidation entries per rollup run while seeding (4)")
	flag.IntVar(&o.lateEvents, "late-events", 1_000_000, "late events for the rollup catch-up (6)")
	flag.IntVar(&o.lateDays, "late-days", 30, "days the late events spread over (6)")
	flag.StringVar(&o.phases, "phases", defaultPhases, "phases to run: ingest (1-3, 5), reads (4, 6), access (7), fairness (8), sustained (11), live (12), keys (13), replica (14)")
	flag.IntVar(&o.fairnessEvents, "fairness-events", 500_000, "events of the victim tenant's dataset (8)")
	flag.DurationVar(&o.fairnessFor, "fairness-duration", 30*time.Second, "how long the victim is measured under each attack (8)")
	flag.IntVar(&o.idleConns, "idle-conns", 10_000, "idle connections the attacker holds (8c)")
	flag.StringVar(&o.attacks, "attacks", "", "fairness runs to make, e.g. 8,8b (default: all)")
	flag.StringVar(&o.backends, "backends", "postgres,timescaledb", "backends phases 11, 12 and 13 run on, each in its own database and service (timescaledb only when installed)")
	flag.DurationVar(&o.sustainedSpan, "sustained-span", 24*time.Hour, "(11)'s events are spread over this span before the start")
	flag.BoolVar(&o.sustainedFollow, "sustained-follow", false, "(11)'s event times move on with the clock (whole seconds), staying within -sustained-span of now as live proxies' do, instead of refilling the same span every round")
	flag.BoolVar(&o.sustainedNoWorker, "sustained-no-worker", false, "(11)'s batch ingest runs with no rollup worker (the bench holds the leader lock) and no backpressure: ingest's own cost as the data grows")
	flag.DurationVar(&o.sustainedFor, "sustained-duration", 10*time.Minute, "sustained batch ingest run time per backend (11)")
	flag.IntVar(&o.sustainedClients, "sustained-clients", 8, "concurrent batch clients (11, 12)")
	flag.IntVar(&o.sustainedCopyRows, "sustained-copy-rows", 2_000_000, "rows of the raw COPY baseline (11)")
	flag.DurationVar(&o.liveFor, "live-duration", 10*time.Minute, "ingest paced at half the maximum, per backend (12)")
	flag.DurationVar(&o.liveFullFor, "live-full-duration", 3*time.Minute, "ingest at full rate, per backend (12)")
	flag.DurationVar(&o.liveMaxFor, "live-max-duration", 30*time.Second, "measurement of the maximum batch ingest rate, per backend (12)")
	flag.DurationVar(&o.liveReadEvery, "live-read-interval", 250*time.Millisecond, "interval between requests of each reader (12)")
	flag.Float64Var(&o.livePace, "live-pace", 0, "events/s of the paced run (12) instead of half the measured maximum: compares runs of code whose maximum differs")
	flag.IntVar(&o.keysSeeded, "keys-seeded", 50_000_000, "remembered idempotency keys seeded before the second run, per backend (13)")
	flag.IntVar(&o.keysEvents, "keys-events", 1_000_000, "events of each batch-ingest run, and of the columnstore measurement (13)")
	flag.BoolVar(&streamJitter, "stream-jitter", false, "give each resent non-connection event of (11) and (12) a fresh sub-millisecond part of its time, so template rounds do not repeat the events' (proxy_id, time) keys")
	flag.Var(&o.serviceEnv, "service-env", "NAME=value: a setting of every service process the bench starts, over the phase's own (repeatable), e.g. INGEST_MAX_ROLLUP_LAG=1000h; shown in the results")
	flag.Var(&o.pgSet, "pg-set", "name=value: a PostgreSQL setting of the benchmark cluster over cmd/bench's own (repeatable), e.g. shared_buffers=8GB; read back into the results")
	idleAttacker := flag.String("idle-attacker", "", "internal: run as the attacker process of (8c) against this host:port")
	flag.Parse()
	if *idleAttacker != "" {
		runIdleAttacker(*idleAttacker, o.idleConns)
		return
	}
	quickSizes = o.quick
	if o.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := func(name string, p *int, v int) {
			if !set[name] {
				*p = v
			}
		}
		quick("ingest-events", &o.ingestEvents, 200_000)
		quick("read-events", &o.readEvents, 200_000)
		quick("read-requests", &o.readRequests, 60)
		quick("raw-requests", &o.rawRequests, 5)
		quick("late-events", &o.lateEvents, 50_000)
		quick("fairness-events", &o.fairnessEvents, 50_000)
		quick("keys-seeded", &o.keysSeeded, 500_000)
		quick("keys-events", &o.keysEvents, 50_000)
		if !set["single-duration"] {
			o.singleFor = 5 * time.Second
		}
		if !set["fairness-duration"] {
			o.fairnessFor = 8 * time.Second
		}
		quickFor := func(name string, p *time.Duration, v time.Duration) {
			if !set[name] {
				*p = v
			}
		}
		quickFor("sustained-duration", &o.sustainedFor, time.Minute)
		quick("sustained-copy-rows", &o.sustainedCopyRows, 200_000)
		quickFor("live-duration", &o.liveFor, time.Minute)
		quickFor("live-full-duration", &o.liveFullFor, 30*time.Second)
		quickFor("live-max-duration", &o.liveMaxFor, 10*time.Second)
	}

	raiseOpenFileLimit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{opt: o, started: time.Now()}
	err := b.run(ctx)
	b.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "\nbench:", err)
		os.Exit(1)
	}
}
