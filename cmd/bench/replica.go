package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"proxyusage/internal/auth"
	"proxyusage/internal/database"
	"proxyusage/internal/localdb"
	"proxyusage/internal/workload"
)

// Phase (14), replica: the same read load under the same batch ingest, once
// with every read on the primary and once with READ_DATABASE_URL naming a
// streaming standby of it; read throughput, p99 and the primary's CPU.
var (
	replicaEvents  = flag.Int("replica-events", 1_000_000, "events of the replica phase's dataset (14)")
	replicaClients = flag.Int("replica-clients", 16, "concurrent read clients, closed loop (14)")
	replicaFor     = flag.Duration("replica-duration", 20*time.Second, "how long each configuration is measured (14)")
)

func (b *bench) replicaSettings() (events int, runFor time.Duration) {
	events, runFor = *replicaEvents, *replicaFor
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if quickSizes && !set["replica-events"] {
		events = 100_000
	}
	if quickSizes && !set["replica-duration"] {
		runFor = 6 * time.Second
	}
	return events, runFor
}

// readRun is one configuration's measurement, summed over its rounds.
type readRun struct {
	latencies          []time.Duration
	secs               float64            // measured wall time
	primaryCPU         float64            // CPU seconds of the primary's postmaster and children
	standbyCPU         float64            // the same on the standby
	standbyReads, fell float64            // read snapshots on the standby, fallbacks
	fallbacks          map[string]float64 // by reason
	ingested           int64
}

func (r *readRun) add(o *readRun) {
	r.latencies = append(r.latencies, o.latencies...)
	r.secs += o.secs
	r.primaryCPU += o.primaryCPU
	r.standbyCPU += o.standbyCPU
	r.standbyReads += o.standbyReads
	r.fell += o.fell
	r.ingested += o.ingested
	for k, v := range o.fallbacks {
		r.fallbacks[k] += v
	}
}

func (r *readRun) throughput() float64 { return float64(len(r.latencies)) / max(r.secs, 1e-9) }

// cores is the CPU seconds cpu spread over the run.
func (r *readRun) cores(cpu float64) float64 { return cpu / max(r.secs, 1e-9) }

func (b *bench) replicaPhase(ctx context.Context) error {
	events, runFor := b.replicaSettings()
	pool, dbURL, err := b.newDatabase(ctx, "bench_replica")
	if err != nil {
		return err
	}
	defer pool.Close()
	now := time.Now().UTC()
	gen := workload.New(workload.Config{Seed: b.opt.seed + 21, Users: b.opt.users, Proxies: b.opt.proxies,
		Start: now.AddDate(0, 0, -14), End: now.Add(-time.Minute), Events: events, Prefix: "r"})
	if err := workload.SeedAccounts(ctx, pool, gen, now); err != nil {
		return err
	}
	step("(14) seeding %s events over 14 days and rolling them up", count(events))
	if _, err := workload.Seed(ctx, pool, gen, 50_000, nil); err != nil {
		return err
	}
	if _, err := b.rollUp(ctx, pool); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		return err
	}

	step("(14) making a streaming standby (pg_basebackup -R)")
	port, err := localdb.FreePort()
	if err != nil {
		return err
	}
	standby, err := b.cluster.NewStandby(ctx, filepath.Join(b.dir, "standby"), port)
	if err != nil {
		return err
	}
	defer func() {
		if err := standby.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: stop standby:", err)
		}
	}()
	name := dbURL[strings.LastIndexByte(dbURL, '/')+1 : strings.IndexByte(dbURL, '?')]

	// Two rounds in opposite orders, half the time each: whatever runs
	// first (caches warming, autovacuum after the seeding) weighs on both.
	runs := map[int]*readRun{0: {fallbacks: map[string]float64{}}, 1: {fallbacks: map[string]float64{}}}
	for _, order := range [][]int{{0, 1}, {1, 0}} {
		for _, standbys := range order {
			var env []string
			if standbys == 1 {
				env = append(env, "READ_DATABASE_URL="+standby.URL(name))
			}
			if _, err := b.startService(ctx, dbURL, fmt.Sprintf("replica-%d", standbys), env...); err != nil {
				return err
			}
			step("(14) %d standby: %d read clients for %s while batch ingest runs at %s events/s", standbys, *replicaClients, runFor/2, rate(float64(*accessIngestRate)))
			r, runErr := b.replicaRun(ctx, gen, runFor/2, standby)
			err := b.svc.stop()
			b.svc = nil
			if err := errors.Join(runErr, err); err != nil {
				return err
			}
			runs[standbys].add(r)
			fmt.Printf("  %.0f reads/s, p99 %s; primary %.2f cores, standby %.2f cores; %.0f reads on the standby, %.0f fallbacks\n",
				r.throughput(), ms(quantile(r.latencies, 0.99)), r.cores(r.primaryCPU), r.cores(r.standbyCPU), r.standbyReads, r.fell)
		}
	}
	zero, one := runs[0], runs[1]
	// Primary CPU per read served: what each read costs the primary.
	perRead := func(r *readRun) float64 { return r.primaryCPU / max(float64(len(r.latencies)), 1) }
	saved := 1 - perRead(one)/max(perRead(zero), 1e-12)
	b.add(result{"14", fmt.Sprintf("reads (report and range metrics) from %d closed-loop clients under batch ingest (%s events/s): 0 vs 1 streaming standby (READ_DATABASE_URL, fence on)", *replicaClients, rate(float64(*accessIngestRate))),
		fmt.Sprintf("0 standbys: %.0f reads/s, p99 %s, primary %.2f cores; **1 standby: %.0f reads/s, p99 %s, primary %.2f cores** (standby %.2f); primary CPU per read %.0f %% lower",
			zero.throughput(), ms(quantile(zero.latencies, 0.99)), zero.cores(zero.primaryCPU),
			one.throughput(), ms(quantile(one.latencies, 0.99)), one.cores(one.primaryCPU), one.cores(one.standbyCPU), 100*saved),
		"reads move off the primary", yes(one.standbyReads > 0 && saved > 0)})
	var fell []string
	for _, reason := range database.FallbackReasons {
		if n := one.fallbacks[reason]; n > 0 {
			fell = append(fell, fmt.Sprintf("%s %.0f", reason, n))
		}
	}
	ev := fmt.Sprintf("Dataset: %s events over 14 days, %s proxies of %d users, rolled up. Each configuration runs the same load for %s in all, in two rounds of opposite order (0, 1, 1, 0 standbys), each against a fresh service: %d clients in a closed loop, each request a random user's 7-day report or a random proxy's 7-day range metrics, while batch ingest posts at a paced %s events/s. "+
		"The standby streams from the primary on the same machine (pg_basebackup -R, no apply delay); the service waits for it to replay each request's fence (READ_FENCE_TIMEOUT 200 ms). "+
		"CPU is read from /proc for each cluster's postmaster and its children. 1 standby: %.0f read snapshots on the standby, %.0f fallbacks to the primary (%s); ingested %s and %s events. "+
		"On one machine the standby competes for the same cores as the primary, the service and the load generator, so throughput here shows the cost of the fence, not the capacity gained: the primary's CPU per read is the number that carries over to a standby on its own host.",
		count(events), count(b.opt.proxies), b.opt.users, runFor, *replicaClients, rate(float64(*accessIngestRate)),
		one.standbyReads, one.fell, cmp.Or(strings.Join(fell, ", "), "none"), count(int(zero.ingested)), count(int(one.ingested)))
	b.addEvidence("(14) reads from a streaming standby", ev)
	return nil
}

// replicaRun runs the read clients and the ingest against b.svc for runFor.
func (b *bench) replicaRun(ctx context.Context, gen *workload.Generator, runFor time.Duration, standby *localdb.Cluster) (*readRun, error) {
	edge, err := auth.Mint([]byte(secret), "bench-edge", []string{auth.RoleService}, 24*time.Hour, "", "")
	if err != nil {
		return nil, err
	}
	users := gen.Users()
	tokens := make(map[string]string, len(users))
	for _, u := range users {
		if tokens[u], err = auth.Mint([]byte(secret), u, nil, 24*time.Hour, "", ""); err != nil {
			return nil, err
		}
	}
	proxies := gen.Proxies()
	to := time.Now().UTC()
	from := to.AddDate(0, 0, -6)
	period := "startDate=" + from.Format(dateLayout) + "&endDate=" + to.Format(dateLayout)
	get := func(rng *rand.Rand) (string, string) {
		if rng.IntN(2) == 0 {
			u := users[rng.IntN(len(users))]
			return "/proxy/usage/report?" + period, tokens[u]
		}
		p := proxies[rng.IntN(len(proxies))]
		return "/proxy/usage/" + p.ID + "/metrics?" + period, tokens[p.UserID]
	}
	// Warm-up: connections, caches on both servers.
	warm := rand.New(rand.NewPCG(b.opt.seed, 90))
	for range 50 {
		path, tok := get(warm)
		if _, err := b.replicaGet(ctx, path, tok); err != nil {
			return nil, err
		}
	}

	ing, err := (&access{b: b, edge: edge}).startIngest(ctx, gen, runFor)
	if err != nil {
		return nil, err
	}
	m0 := b.scrape()
	p0, s0 := b.cpu(), clusterCPU(standby.Dir)
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	deadline := time.Now().Add(runFor)
	for c := range *replicaClients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(b.opt.seed, uint64(100+c)))
			var mine []time.Duration
			for time.Now().Before(deadline) && ctx.Err() == nil {
				path, tok := get(rng)
				d, err := b.replicaGet(ctx, path, tok)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				mine = append(mine, d)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	p1, s1 := b.cpu(), clusterCPU(standby.Dir)
	m1 := b.scrape()
	ingested, ingErr := ing.wait()
	if err := errors.Join(append(errs, ingErr)...); err != nil {
		return nil, err
	}
	secs := p1.at.Sub(p0.at).Seconds()
	fell := 0.0
	reasons := map[string]float64{}
	for _, reason := range database.FallbackReasons {
		k := `proxyusage_read_fallbacks_total{reason="` + reason + `"}`
		if n := m1[k] - m0[k]; n > 0 {
			fell += n
			reasons[reason] = n
		}
	}
	k := `proxyusage_read_snapshots_total{server="standby"}`
	return &readRun{latencies: lat, secs: secs, primaryCPU: p1.pg - p0.pg, standbyCPU: s1 - s0,
		standbyReads: m1[k] - m0[k], fell: fell, fallbacks: reasons, ingested: ingested}, nil
}

func (b *bench) replicaGet(ctx context.Context, path, token string) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.svc.url+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	t0 := time.Now()
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return time.Since(t0), nil
}

// clusterCPU is the CPU seconds of the cluster in dir: its postmaster and
// the postmaster's children.
func clusterCPU(dir string) float64 {
	pidFile, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	pm, _ := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	entries, _ := os.ReadDir("/proc")
	var total float64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		t, ppid := procCPU(pid)
		if pid == pm || ppid == pm {
			total += t
		}
	}
	return total
}
