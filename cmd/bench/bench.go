package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"proxyusage/internal/database"
	"proxyusage/internal/localdb"
)

type machine struct {
	nproc     int
	cpu       string
	memory    string
	goVersion string
	pgVersion string
	commit    string
	settings  [][2]string
}

// result is a row of the results table.
type result struct {
	id, measure, value, target, met string
}

type bench struct {
	opt     options
	started time.Time

	dir      string
	ownDir   bool
	cluster  *localdb.Cluster
	backend  database.Backend
	bin      string
	svc      *service
	adminURL string
	// attackerPID is the pid of an attacker running in its own process
	// (8c), 0 when none: its CPU is counted apart.
	attackerPID atomic.Int64
	machine     machine

	results  []result
	evidence []string // markdown sections
	client   *http.Client

	copyRate  float64 // (1), events/s, one stream
	copyRate2 float64 // two concurrent streams
	rssPeak   int64   // (5)
	hwm       int64
}

// phase is a part of the run -phases selects by name.
type phase struct {
	name string
	run  func(context.Context) error
}

func (b *bench) run(ctx context.Context) error {
	phases := []phase{{"ingest", b.ingestPhases}, {"reads", b.readPhases}, {"access", b.accessPhase}, {"fairness", b.fairnessPhase},
		{"sustained", b.onEachBackend("11", b.sustained)}, {"live", b.onEachBackend("12", b.live)}, {"keys", b.onEachBackend("13", b.keys)}, {"replica", b.replicaPhase}}
	for _, name := range strings.Split(b.opt.phases, ",") {
		if !slices.ContainsFunc(phases, func(p phase) bool { return p.name == name }) {
			return fmt.Errorf("-phases: unknown phase %q (ingest, reads, access, fairness, sustained, live, keys, replica)", name)
		}
	}
	b.client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 512, MaxIdleConnsPerHost: 512, DisableCompression: true, IdleConnTimeout: time.Minute,
	}}
	if err := b.startCluster(ctx); err != nil {
		return err
	}
	if err := b.buildService(ctx); err != nil {
		return err
	}
	for _, ph := range phases {
		if !slices.Contains(strings.Split(b.opt.phases, ","), ph.name) {
			continue
		}
		if err := ph.run(ctx); err != nil {
			return err
		}
	}
	b.report()
	return nil
}

func (b *bench) cleanup() {
	if b.svc != nil {
		_ = b.svc.stop()
		b.svc = nil
	}
	if b.cluster != nil {
		if err := b.cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: stop postgres:", err)
		}
	}
	if b.ownDir && b.dir != "" {
		_ = os.RemoveAll(b.dir)
	} else if b.dir != "" {
		fmt.Printf("work directory kept: %s\n", b.dir)
	}
}

func (b *bench) add(r result) {
	b.results = append(b.results, r)
	fmt.Printf("  → %s %s: %s\n", r.id, r.measure, r.value)
}

func (b *bench) addEvidence(title, body string) {
	b.evidence = append(b.evidence, "### "+title+"\n\n"+strings.TrimSpace(body)+"\n")
}

// step prints a phase heading.
func step(format string, args ...any) {
	fmt.Printf("\n▶ "+format+"\n", args...)
}

// progress rewrites one terminal line.
func progress(format string, args ...any) {
	fmt.Printf("\r\033[K  "+format, args...)
}

func endProgress() { fmt.Println() }

// quickSizes is set by -quick: the targets are defined at the full sizes,
// so a quick run that misses one has not failed it.
var quickSizes bool

// notAtQuickSizes marks a target a quick run misses.
const notAtQuickSizes = "n/a at quick sizes"

func yes(ok bool) string {
	switch {
	case ok:
		return "✅ yes"
	case quickSizes:
		return notAtQuickSizes
	}
	return "❌ no"
}

func mark(ok bool) string {
	switch {
	case ok:
		return "✅"
	case quickSizes:
		return notAtQuickSizes
	}
	return "❌"
}

func rate(n float64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", n/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fk", n/1e3)
	}
	return fmt.Sprintf("%.0f", n)
}

func count(n int) string {
	s := fmt.Sprint(n)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	if v < 10 {
		return fmt.Sprintf("%.2f ms", v)
	}
	return fmt.Sprintf("%.1f ms", v)
}

func mb(n int64) string { return fmt.Sprintf("%.0f MB", float64(n)/(1<<20)) }

// quantile returns the nearest-rank q-quantile of ds (sorted in place).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

func (b *bench) report() {
	var sb strings.Builder
	mode := "full"
	if b.opt.quick {
		mode = "quick (reduced sizes)"
	}
	m := b.machine
	fmt.Fprintf(&sb, "Run: %s, %s, took %s.\n\n", b.started.UTC().Format("2006-01-02 15:04 MST"), mode, time.Since(b.started).Round(time.Second))
	sb.WriteString("| machine | |\n|---|---|\n")
	fmt.Fprintf(&sb, "| nproc | %d |\n| CPU | %s |\n| memory | %s |\n| Go | %s |\n| PostgreSQL | %s |\n| backend | %s |\n| commit | %s |\n",
		m.nproc, m.cpu, m.memory, m.goVersion, m.pgVersion, b.backendNote(), m.commit)
	if len(b.opt.serviceEnv) > 0 {
		fmt.Fprintf(&sb, "| service settings (-service-env) | %s |\n", strings.Join(b.opt.serviceEnv, ", "))
	}
	sb.WriteString("\n")
	sort.SliceStable(b.results, func(i, j int) bool { return b.results[i].id < b.results[j].id })
	sb.WriteString("| # | measure | result | target | met |\n|---|---|---|---|---|\n")
	for _, r := range b.results {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s |\n", r.id, r.measure, r.value, r.target, r.met)
	}
	table := sb.String()
	fmt.Println("\n" + table)

	if b.opt.out == "" {
		return
	}
	var doc strings.Builder
	doc.WriteString(table)
	doc.WriteString("\nPostgreSQL settings of the benchmark cluster (read back from `pg_settings`; the cluster is created by `internal/localdb.Cluster`, then `cmd/bench` applies `ALTER SYSTEM` and restarts it):\n\n")
	doc.WriteString("| setting | value |\n|---|---|\n")
	for _, s := range m.settings {
		fmt.Fprintf(&doc, "| `%s` | `%s` |\n", s[0], s[1])
	}
	doc.WriteString("\nThe service, PostgreSQL and the load generator share the machine's cores; the CPU split of each phase is in the evidence below.\n\n")
	if key := b.phasesKey(); key != "" {
		doc.WriteString("## Evidence (generated, -phases " + key + ")\n\n")
	} else {
		doc.WriteString("## Evidence (generated)\n\n")
	}
	for _, e := range b.evidence {
		doc.WriteString(e + "\n")
	}
	if err := writeGenerated(b.opt.out, b.phasesKey(), doc.String()); err != nil {
		fmt.Fprintln(os.Stderr, "bench: write results:", err)
		return
	}
	fmt.Printf("results written to %s\n", b.opt.out)
}

// phasesKey names the block of the results file this run writes: "" for
// the default phases.
func (b *bench) phasesKey() string {
	if b.opt.phases == defaultPhases {
		return ""
	}
	return b.opt.phases
}

// backendNote names the backend of the run's results: phases 11, 12 and
// 13 run on several and name theirs in each row.
func (b *bench) backendNote() string {
	note := string(b.backend)
	if strings.Contains(b.opt.phases, "sustained") || strings.Contains(b.opt.phases, "live") || strings.Contains(b.opt.phases, "keys") {
		note = strings.TrimPrefix(note+"; 11, 12 and 13: each result names its own", "; ")
	}
	return note
}

// marks delimit the generated block of a run. A run of the default phases
// owns the main block; a run of some phases (-phases) writes a block of its
// own, marked with them, so running a long phase alone keeps the results
// of the others.
func marks(phases string) (begin, end string) {
	if phases == "" {
		return "<!-- bench:begin (generated by cmd/bench; edits between these marks are overwritten) -->", "<!-- bench:end -->"
	}
	return "<!-- bench:begin phases=" + phases + " (generated by cmd/bench -phases " + phases + "; edits between these marks are overwritten) -->",
		"<!-- bench:end phases=" + phases + " -->"
}

// writeGenerated replaces the generated block of phases ("" for the
// default run) in path, keeping what is written by hand around it. A new
// block of some phases goes after the main block.
func writeGenerated(path, phases, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	begin, end := marks(phases)
	_, mainEnd := marks("")
	head := "# Benchmarks\n\nProduced by `make bench` (`go run ./cmd/bench`); see README.md, \"Benchmarks\".\n\n"
	tail := ""
	if s := string(old); s != "" {
		i := strings.Index(s, begin)
		j := strings.Index(s, end)
		k := strings.Index(s, mainEnd)
		switch {
		case i >= 0:
			head = s[:i]
			if j > i {
				tail = s[j+len(end):]
			}
		case phases != "" && k >= 0:
			head, tail = s[:k+len(mainEnd)]+"\n\n", s[k+len(mainEnd):]
		default:
			tail = "\n" + s
		}
	}
	if dir := dirOf(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(path, []byte(head+begin+"\n\n"+body+"\n"+end+tail), 0o644)
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		return path[:i]
	}
	return ""
}
