package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/database"
	"proxyusage/internal/localdb"
)

// pgSettings are applied to the throwaway cluster (ALTER SYSTEM, then a
// restart) on top of internal/localdb.Cluster's own. Durability is
// left on: fsync, synchronous_commit and full_page_writes keep their
// defaults, so an acknowledged event is on disk. shared_buffers follows
// README.md's rule, a quarter of the machine's memory (2 GB when it
// cannot be read): every key claim touches a random page of the
// idempotency-key index, so a cache smaller than the working set makes
// each claim evict a dirty page (BENCHMARKS.md, "Eleventh round").
func pgSettings() [][2]string {
	sharedBuffers := "2GB"
	if kb := memTotalKB(); kb > 0 {
		sharedBuffers = fmt.Sprintf("%dMB", kb/4/1024)
	}
	return [][2]string{
		{"shared_buffers", sharedBuffers},
		{"effective_cache_size", "8GB"},
		{"work_mem", "32MB"},
		{"maintenance_work_mem", "512MB"},
		{"wal_compression", "lz4"},
		{"random_page_cost", "1.1"},
		{"jit", "off"},
		{"track_io_timing", "on"},
	}
}

// memTotalKB is the machine's memory in kB (/proc/meminfo), 0 when
// unknown.
func memTotalKB() int64 {
	f, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(f), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// reportedSettings are read back from pg_settings into BENCHMARKS.md.
var reportedSettings = []string{"fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers",
	"effective_cache_size", "work_mem", "maintenance_work_mem", "wal_buffers", "wal_compression", "max_wal_size",
	"checkpoint_timeout", "random_page_cost", "jit", "max_connections", "shared_preload_libraries", "autovacuum"}

// pgSetFlag is -pg-set: name=value pairs applied after pgSettings, so
// a later one wins. Names are checked against pg_settings by ALTER
// SYSTEM itself; only the shape is checked here, since the name is
// spliced into the statement.
type pgSetFlag [][2]string

func (f *pgSetFlag) String() string {
	var parts []string
	for _, s := range *f {
		parts = append(parts, s[0]+"="+s[1])
	}
	return strings.Join(parts, ",")
}

func (f *pgSetFlag) Set(v string) error {
	name, value, ok := strings.Cut(v, "=")
	if !ok || name == "" || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz_.") != "" {
		return fmt.Errorf("want name=value with a lower-case setting name, got %q", v)
	}
	*f = append(*f, [2]string{name, value})
	return nil
}

// serviceEnvFlag is -service-env: NAME=value settings of every service
// process the bench starts, over the phase's own (e.g.
// INGEST_MAX_ROLLUP_LAG=1000h to take the rollups' backpressure out of a
// run).
type serviceEnvFlag []string

func (f *serviceEnvFlag) String() string { return strings.Join(*f, ",") }

func (f *serviceEnvFlag) Set(v string) error {
	name, _, ok := strings.Cut(v, "=")
	if !ok || name == "" || strings.Trim(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789") != "" {
		return fmt.Errorf("want NAME=value with an upper-case variable name, got %q", v)
	}
	*f = append(*f, v)
	return nil
}

const secret = "bench-secret-0123456789abcdef0123456789abcdef"

func (b *bench) startCluster(ctx context.Context) error {
	if b.opt.dir == "" {
		dir, err := os.MkdirTemp("", "proxyusage-bench-")
		if err != nil {
			return err
		}
		b.dir, b.ownDir = dir, !b.opt.keep
	} else {
		b.dir = b.opt.dir
		if err := os.MkdirAll(b.dir, 0o755); err != nil {
			return err
		}
	}
	// The server runs as the postgres user when we are root.
	if err := os.Chmod(b.dir, 0o755); err != nil {
		return err
	}
	port, err := localdb.FreePort()
	if err != nil {
		return err
	}
	b.cluster = &localdb.Cluster{Dir: filepath.Join(b.dir, "pg"), Port: port, Timescale: b.opt.backend != "postgres"}
	step("starting PostgreSQL in %s (port %d, fsync on)", b.cluster.Dir, port)
	if err := b.cluster.Start(ctx); err != nil {
		return err
	}
	b.adminURL = b.cluster.URL("postgres")
	conn, err := pgx.Connect(ctx, b.adminURL)
	if err != nil {
		return err
	}
	var preload string
	if err := conn.QueryRow(ctx, `SELECT current_setting('shared_preload_libraries')`).Scan(&preload); err != nil {
		conn.Close(ctx)
		return err
	}
	// A list setting: each library quoted on its own.
	libs := "'pg_stat_statements'"
	if strings.Contains(preload, "timescaledb") {
		libs = "'timescaledb', 'pg_stat_statements'"
	}
	settings := [][2]string{{"shared_preload_libraries", libs}}
	for _, s := range append(pgSettings(), b.opt.pgSet...) {
		settings = append(settings, [2]string{s[0], "'" + strings.ReplaceAll(s[1], "'", "''") + "'"})
	}
	for _, s := range settings {
		if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER SYSTEM SET %s = %s", s[0], s[1])); err != nil {
			conn.Close(ctx)
			return fmt.Errorf("ALTER SYSTEM SET %s: %w", s[0], err)
		}
	}
	conn.Close(ctx)
	if err := b.cluster.Stop(); err != nil {
		return err
	}
	if err := b.cluster.Start(ctx); err != nil {
		return err
	}
	return b.readMachine(ctx)
}

// newDatabase creates and migrates a database on the -backend backend,
// returning a pool on it.
func (b *bench) newDatabase(ctx context.Context, name string) (*pgxpool.Pool, string, error) {
	pool, url, backend, err := b.newDatabaseOn(ctx, name, b.opt.backend)
	if err != nil {
		return nil, "", err
	}
	b.backend = backend
	return pool, url, nil
}

// newDatabaseOn creates and migrates a database on the backend want
// (auto, postgres or timescaledb), returning a pool on it and the backend
// chosen.
func (b *bench) newDatabaseOn(ctx context.Context, name, want string) (*pgxpool.Pool, string, database.Backend, error) {
	if err := localdb.CreateDatabase(ctx, b.adminURL, name); err != nil {
		return nil, "", "", err
	}
	url := b.cluster.URL(name)
	backend, err := database.Migrate(ctx, url, want, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, "", "", err
	}
	pool, err := database.Connect(ctx, url, 8)
	if err != nil {
		return nil, "", "", err
	}
	if _, err := pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		pool.Close()
		return nil, "", "", err
	}
	return pool, url, backend, nil
}

func (b *bench) readMachine(ctx context.Context) error {
	m := &b.machine
	m.nproc = runtime.NumCPU()
	if out, err := exec.Command("nproc").Output(); err == nil {
		m.nproc, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	}
	if f, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(f), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if kb := memTotalKB(); kb > 0 {
		m.memory = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	m.goVersion = runtime.Version()
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.commit = strings.TrimSpace(string(out))
		if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
			m.commit += " (+ uncommitted changes)"
		}
	}
	conn, err := pgx.Connect(ctx, b.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version')`).Scan(&m.pgVersion); err != nil {
		return err
	}
	var ts string
	if err := conn.QueryRow(ctx, `SELECT coalesce((SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'), '')`).Scan(&ts); err == nil && ts != "" {
		m.pgVersion += ", TimescaleDB " + ts + " available"
	}
	reported := slices.Clone(reportedSettings)
	for _, s := range b.opt.pgSet {
		if !slices.Contains(reported, s[0]) {
			reported = append(reported, s[0])
		}
	}
	rows, err := conn.Query(ctx, `SELECT name, setting, coalesce(unit, '') FROM pg_settings WHERE name = ANY($1)`, reported)
	if err != nil {
		return err
	}
	got := map[string]string{}
	var name, setting, unit string
	if _, err := pgx.ForEachRow(rows, []any{&name, &setting, &unit}, func() error {
		got[name] = humanSetting(setting, unit)
		return nil
	}); err != nil {
		return err
	}
	for _, n := range reported {
		m.settings = append(m.settings, [2]string{n, got[n]})
	}
	return nil
}

func humanSetting(v, unit string) string {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return v
	}
	mult := map[string]int64{"8kB": 8 << 10, "kB": 1 << 10, "MB": 1 << 20}[unit]
	if mult == 0 {
		if unit == "s" {
			return (time.Duration(n) * time.Second).String()
		}
		return v + unit
	}
	bytes := n * mult
	switch {
	case bytes >= 1<<30 && bytes%(1<<30) == 0:
		return fmt.Sprintf("%dGB", bytes>>30)
	case bytes >= 1<<20:
		return fmt.Sprintf("%dMB", bytes>>20)
	}
	return fmt.Sprintf("%dkB", bytes>>10)
}

// service is the real proxyusage binary running as a child process.
type service struct {
	cmd      *exec.Cmd
	url      string
	pprofURL string
	log      string
	waitErr  chan error
}

func (b *bench) buildService(ctx context.Context) error {
	b.bin = filepath.Join(b.dir, "proxyusage")
	step("building ./cmd/proxyusage")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", b.bin, "./cmd/proxyusage")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

// startService starts the service on dbURL; env adds settings (KEY=value)
// of a phase.
func (b *bench) startService(ctx context.Context, dbURL, name string, env ...string) (*service, error) {
	port, err := localdb.FreePort()
	if err != nil {
		return nil, err
	}
	pport, err := localdb.FreePort()
	if err != nil {
		return nil, err
	}
	s := &service{
		url:      fmt.Sprintf("http://127.0.0.1:%d", port),
		pprofURL: fmt.Sprintf("http://127.0.0.1:%d", pport),
		log:      filepath.Join(b.dir, "service-"+name+".log"),
		waitErr:  make(chan error, 1),
	}
	logf, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(b.bin, "serve")
	s.cmd.Env = append(os.Environ(),
		"DATABASE_URL="+dbURL,
		fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", port),
		fmt.Sprintf("PPROF_ADDR=127.0.0.1:%d", pport),
		"JWT_SECRET="+secret,
		"BACKEND="+b.opt.backend,
		"LOG_LEVEL=warn",
	)
	s.cmd.Env = append(s.cmd.Env, env...)
	s.cmd.Env = append(s.cmd.Env, b.opt.serviceEnv...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	b.svc = s
	go func() {
		s.waitErr <- s.cmd.Wait()
		logf.Close()
	}()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(s.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case err := <-s.waitErr:
			tail, _ := os.ReadFile(s.log)
			return nil, fmt.Errorf("service exited: %v\n%s", err, tail)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, errors.New("service not ready after 90s")
		}
	}
}

// stop sends SIGTERM (the service drains) and waits, killing after 30s.
func (s *service) stop() error {
	if s == nil || s.cmd.Process == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.waitErr:
		s.waitErr <- err
		return nil
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		return errors.New("service did not stop within 30s")
	}
}

func (s *service) pid() int { return s.cmd.Process.Pid }

// memory reads VmRSS and VmHWM (bytes) of a process.
func memory(pid int) (rss, hwm int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		for _, k := range []struct {
			prefix string
			dst    *int64
		}{{"VmRSS:", &rss}, {"VmHWM:", &hwm}} {
			if v, ok := strings.CutPrefix(line, k.prefix); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				*k.dst = kb << 10
			}
		}
	}
	return rss, hwm
}

// rssSampler records the highest VmRSS of a process, every 50 ms.
type rssSampler struct {
	pid  int
	mu   sync.Mutex
	max  int64
	last int64
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			rss, _ := memory(pid)
			s.mu.Lock()
			s.last = rss
			s.max = max(s.max, rss)
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) current() (last, peak int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.max
}

func (s *rssSampler) end() int64 {
	close(s.stop)
	<-s.done
	return s.max
}

// cpuTimes is cumulative CPU seconds of the service, the PostgreSQL server
// (postmaster and its children) and this load generator.
type cpuTimes struct {
	at                 time.Time
	service, pg, bench float64
	attacker           float64 // an attacker's own process (8c), when one runs
	steal              float64 // all CPUs, taken by the hypervisor (/proc/stat)
	busy               float64 // all CPUs, everything (/proc/stat)
}

var clockTick = 100.0 // USER_HZ on Linux

func procCPU(pid int) (float64, int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0
	}
	f := strings.Fields(s[i+2:])
	// Fields after the command: state(0) ppid(1) ... utime(11) stime(12).
	if len(f) < 13 {
		return 0, 0
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTick, ppid
}

func (b *bench) cpu() cpuTimes {
	c := cpuTimes{at: time.Now()}
	if b.svc != nil {
		c.service, _ = procCPU(b.svc.pid())
	}
	if pid := b.attackerPID.Load(); pid != 0 {
		c.attacker, _ = procCPU(int(pid))
	}
	if f, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(f), "\n")
		fields := strings.Fields(line)
		for i, v := range fields[1:] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			x, _ := strconv.ParseFloat(v, 64)
			if i == 7 { // steal: time the hypervisor gave other guests
				c.steal += x / clockTick
				continue
			}
			c.busy += x / clockTick
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.bench = float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
	}
	pidFile, err := os.ReadFile(filepath.Join(b.cluster.Dir, "postmaster.pid"))
	if err != nil {
		return c
	}
	pm, _ := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		t, ppid := procCPU(pid)
		if pid == pm || ppid == pm {
			c.pg += t
		}
	}
	return c
}

// cpuSplit describes where CPU went between two snapshots, in cores.
func cpuSplit(a, z cpuTimes) string {
	secs := z.at.Sub(a.at).Seconds()
	if secs <= 0 {
		return ""
	}
	svc, pg, gen := (z.service-a.service)/secs, (z.pg-a.pg)/secs, (z.bench-a.bench)/secs
	var attacker string
	att := 0.0
	if z.attacker > 0 && a.attacker > 0 {
		att = (z.attacker - a.attacker) / secs
		attacker = fmt.Sprintf(", attacker process %.2f", att)
	}
	other := max(0, (z.busy-a.busy)/secs-svc-pg-gen-att)
	return fmt.Sprintf("service %.2f, PostgreSQL %.2f, load generator %.2f%s, other processes on the machine %.2f, stolen by the hypervisor %.2f cores (of %d)",
		svc, pg, gen, attacker, other, (z.steal-a.steal)/secs, runtime.NumCPU())
}

// profile captures a CPU profile of the service for secs seconds in the
// background; wait returns the `go tool pprof -top` summary.
type profile struct {
	done chan struct{}
	top  string
	err  error
}

func (b *bench) profileService(name string, secs int) *profile {
	p := &profile{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		if err := os.MkdirAll(b.opt.profDir, 0o755); err != nil {
			p.err = err
			return
		}
		file := filepath.Join(b.opt.profDir, name+".cpu.pprof")
		resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", b.svc.pprofURL, secs))
		if err != nil {
			p.err = err
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			p.err = fmt.Errorf("pprof: %d %v", resp.StatusCode, err)
			return
		}
		if err := os.WriteFile(file, data, 0o644); err != nil {
			p.err = err
			return
		}
		// Keep a copy of the binary next to it so the profile stays readable.
		bin := filepath.Join(b.opt.profDir, "proxyusage.bin")
		if data, err := os.ReadFile(b.bin); err == nil {
			_ = os.WriteFile(bin, data, 0o755)
		}
		out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=22", bin, file).Output()
		if err != nil {
			p.err = err
			return
		}
		p.top = trimPprof(string(out))
	}()
	return p
}

func (p *profile) wait() (string, error) {
	<-p.done
	return p.top, p.err
}

// trimPprof keeps the summary lines and the table of a pprof -top output.
func trimPprof(s string) string {
	var keep []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.HasPrefix(line, "File:") || strings.HasPrefix(line, "Build ID:") || strings.HasPrefix(line, "Type:") || strings.HasPrefix(line, "Time:") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.TrimSpace(strings.Join(keep, "\n"))
}

// topStatements lists the statements that used the most server time since
// the last reset.
func topStatements(ctx context.Context, pool *pgxpool.Pool, n int) string {
	rows, err := pool.Query(ctx, `
		SELECT calls, total_exec_time, mean_exec_time, rows, regexp_replace(query, '\s+', ' ', 'g')
		  FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		 ORDER BY total_exec_time DESC`)
	if err != nil {
		return "pg_stat_statements: " + err.Error()
	}
	var sb strings.Builder
	sb.WriteString("| calls | total ms | mean ms | rows | statement |\n|---:|---:|---:|---:|---|\n")
	var calls, nrows int64
	var total, mean float64
	var q string
	byPart := map[string]float64{}
	var all float64
	i := 0
	_, err = pgx.ForEachRow(rows, []any{&calls, &total, &mean, &nrows, &q}, func() error {
		byPart[partOf(q)] += total
		all += total
		if i++; i <= n {
			fmt.Fprintf(&sb, "| %d | %.0f | %.3f | %d | `%s` |\n", calls, total, mean, nrows, strings.ReplaceAll(truncate(q, 160), "|", "\\|"))
		}
		return nil
	})
	if err != nil {
		return "pg_stat_statements: " + err.Error()
	}
	if all > 0 {
		var parts []string
		for _, p := range []string{"ingest", "rollup worker", "reads", "benchmark's checks", "other"} {
			if byPart[p] > 0 {
				parts = append(parts, fmt.Sprintf("%s %.1f s (%.0f %%)", p, byPart[p]/1000, 100*byPart[p]/all))
			}
		}
		sb.WriteString("\nStatement time by part of the service: " + strings.Join(parts, ", ") +
			". (Execution time as PostgreSQL measures it: on a saturated machine it includes waiting for a CPU.)\n")
	}
	return sb.String()
}

// partOf says which part of the service issued a statement.
func partOf(q string) string {
	l := strings.ToLower(q)
	switch {
	case strings.Contains(l, "with logged as materialized"): // the reads' pending connections (rollup.pendingIntervals)
		return "reads"
	case strings.Contains(l, "with ev as ("): // cmd/bench's own plain-SQL check (12e)
		return "benchmark's checks"
	case strings.Contains(l, "refresh_continuous_aggregate"), strings.Contains(l, "usage_connections"),
		strings.Contains(l, "usage_daily_peak (proxy_id, day, peak)"), strings.Contains(l, "delete from usage_"),
		strings.Contains(l, "insert into usage_daily"), strings.Contains(l, "insert into usage_latency_daily"),
		strings.Contains(l, "from usage_rollup_deltas order by id"), strings.Contains(l, "insert into usage_daily as r"), strings.Contains(l, "from usage_connection_invalidations order by id"),
		strings.Contains(l, "min(logged_at)"), strings.Contains(l, "advisory_lock"), strings.Contains(l, "event_type = 'connection_start' from unnest"),
		strings.Contains(l, "e.event_type = $3 from unnest"), strings.Contains(l, "retention_policy"):
		return "rollup worker"
	case strings.Contains(l, "usage_event_keys"), strings.Contains(l, "copy \"usage_events\""),
		strings.Contains(l, "insert into usage_rollup_deltas"), strings.Contains(l, "copy \"usage_rollup_deltas\""),
		strings.Contains(l, "insert into usage_connection_invalidations"), strings.Contains(l, "from proxies where id = any"),
		l == "begin", l == "commit", l == "savepoint claim", strings.Contains(l, "rollback"):
		return "ingest"
	case strings.Contains(l, "_materialized_hypertable"), strings.Contains(l, "from usage_daily"), strings.Contains(l, "usage_latency_daily"),
		strings.Contains(l, "usage_daily_peak where"), strings.Contains(l, "from proxies where user_id"), strings.Contains(l, "user_tiers"),
		strings.Contains(l, "user_contracts"), strings.Contains(l, "begin isolation level repeatable read"), strings.Contains(l, "from usage_rollup_deltas l,"), strings.Contains(l, "not exists (select 1 from usage_connection_invalidations"):
		return "reads"
	}
	return "other"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func resetStatements(ctx context.Context, pool *pgxpool.Pool) {
	_, _ = pool.Exec(ctx, `SELECT pg_stat_statements_reset()`)
}
