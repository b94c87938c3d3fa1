package localdb

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Cluster is a PostgreSQL cluster in a directory of ours, used when no
// DATABASE_URL is given (make run) and by the tests. Server binaries come
// from the machine; when we run as root they run as the postgres user,
// because initdb and postgres refuse to run as root.
type Cluster struct {
	Dir  string // data directory; created by initdb on first start
	Port int    // TCP port on 127.0.0.1
	// Ephemeral clusters run with fsync off: for tests, never for make run.
	Ephemeral bool
	// Timescale preloads the TimescaleDB library when it is installed.
	Timescale bool

	binDir  string
	cred    *syscall.Credential
	started bool
}

// ErrNoServer says what to install when no PostgreSQL server is found.
var ErrNoServer = errors.New("no PostgreSQL server binaries found (looked for initdb on PATH and in /usr/lib/postgresql/*/bin); install them, e.g. `apt-get install postgresql`, or set DATABASE_URL")

// FindBinDir locates the directory holding initdb, pg_ctl and postgres.
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		// Often a symlink into the versioned directory with the other tools.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoServer
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// TimescaleInstalled reports whether the TimescaleDB extension files are
// installed for the server in binDir.
func TimescaleInstalled(binDir string) bool {
	out, err := exec.Command(filepath.Join(binDir, "pg_config"), "--sharedir").Output()
	if err != nil {
		return false
	}
	_, err = os.Stat(filepath.Join(strings.TrimSpace(string(out)), "extension", "timescaledb.control"))
	return err == nil
}

// URL is the connection string of database name on this cluster.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, name)
}

// Start initialises the cluster if needed and starts it unless it is
// already running. Stop stops it only if Start started it.
func (c *Cluster) Start(ctx context.Context) error {
	bin, err := FindBinDir()
	if err != nil {
		return err
	}
	c.binDir = bin
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return errors.New("running as root and no postgres user exists: create one (useradd postgres) or run as an ordinary user")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	abs, err := filepath.Abs(c.Dir)
	if err != nil {
		return err
	}
	c.Dir = abs
	if _, err := os.Stat(filepath.Join(c.Dir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return err
		}
	}
	if c.running(ctx) {
		return c.waitReady(ctx)
	}
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k ''", c.Port)
	logFile := filepath.Join(c.Dir, "server.log")
	if out, err := c.run(ctx, "pg_ctl", "-D", c.Dir, "-l", logFile, "-o", opts, "-w", "-t", "60", "start"); err != nil {
		tail, _ := os.ReadFile(logFile)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return fmt.Errorf("start postgres in %s: %v: %s\n%s", c.Dir, err, out, tail)
	}
	c.started = true
	return c.waitReady(ctx)
}

func (c *Cluster) initdb(ctx context.Context) error {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return err
	}
	if c.cred != nil {
		if err := c.checkReachable(); err != nil {
			return err
		}
		if err := os.Chown(c.Dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return err
		}
	}
	if out, err := c.run(ctx, "initdb", "-D", c.Dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return fmt.Errorf("initdb %s: %v: %s", c.Dir, err, out)
	}
	conf := []string{
		"timezone = 'UTC'",
		"max_connections = 200",
		"wal_buffers = 16MB",
		"max_wal_size = 4GB",
		"checkpoint_timeout = 15min",
		"log_min_messages = warning",
		// Streaming standbys (READ_DATABASE_URL, NewStandby) replicate
		// it; these are PostgreSQL's defaults, stated because they matter.
		"wal_level = replica",
		"max_wal_senders = 10",
	}
	if c.Ephemeral {
		conf = append(conf, "fsync = off", "full_page_writes = off", "shared_buffers = 128MB")
	} else {
		conf = append(conf, "shared_buffers = 256MB")
	}
	if c.Timescale && TimescaleInstalled(c.binDir) {
		conf = append(conf, "shared_preload_libraries = 'timescaledb'", "timescaledb.telemetry_level = off")
	}
	f, err := os.OpenFile(filepath.Join(c.Dir, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString("\n" + strings.Join(conf, "\n") + "\n")
	return err
}

// NewStandby makes a streaming hot standby of the running cluster c in
// dir (pg_basebackup -R: a base backup plus primary_conninfo), listening
// on port, with settings (postgresql.conf lines, e.g.
// "recovery_min_apply_delay = '1s'") added, and starts it.
func (c *Cluster) NewStandby(ctx context.Context, dir string, port int, settings ...string) (*Cluster, error) {
	if c.binDir == "" {
		return nil, errors.New("standby: the primary is not started")
	}
	s := &Cluster{Dir: dir, Port: port, Ephemeral: c.Ephemeral, Timescale: c.Timescale, binDir: c.binDir, cred: c.cred}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if c.cred != nil {
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, err
		}
	}
	if out, err := c.run(ctx, "pg_basebackup", "-D", dir, "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "postgres",
		"-R", "-X", "stream", "-c", "fast", "--no-sync"); err != nil {
		return nil, fmt.Errorf("pg_basebackup: %v: %s", err, out)
	}
	f, err := os.OpenFile(filepath.Join(dir, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString("\nhot_standby = on\n" + strings.Join(settings, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return s, s.Start(ctx)
}

// checkReachable says what to do when the postgres user the cluster runs
// as cannot reach its data directory (initdb would only say "Permission
// denied"): typically a clone under /root, which is mode 700.
func (c *Cluster) checkReachable() error {
	groups := []uint32{c.cred.Gid}
	if u, err := user.LookupId(strconv.Itoa(int(c.cred.Uid))); err == nil {
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if g, err := strconv.Atoi(id); err == nil {
					groups = append(groups, uint32(g))
				}
			}
		}
	}
	blocked, mode, err := untraversable(filepath.Dir(c.Dir), c.cred.Uid, groups)
	if err != nil || blocked == "" {
		return err
	}
	return fmt.Errorf("the local cluster runs as the postgres user (PostgreSQL refuses to run as root), "+
		"and postgres cannot reach %s: %s is mode %04o. Do one of: "+
		"clone the repository outside it (e.g. under /srv or /opt); "+
		"let others enter the directories on the way (chmod o+x %s); "+
		"set DATA_DIR to a directory postgres can reach (e.g. DATA_DIR=/var/tmp/proxyusage make run); "+
		"or set DATABASE_URL to an existing server",
		c.Dir, blocked, mode.Perm(), blocked)
}

// untraversable returns the first directory from / down to dir (included)
// that a process with uid and groups may not enter (no search permission
// in the bits that apply to it), or "" when every one may be entered.
func untraversable(dir string, uid uint32, groups []uint32) (string, os.FileMode, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", 0, err
	}
	var chain []string
	for d := dir; ; d = filepath.Dir(d) {
		chain = append(chain, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		fi, err := os.Stat(chain[i])
		if err != nil {
			return "", 0, err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || uid == 0 {
			return "", 0, nil
		}
		mode := fi.Mode()
		var bit os.FileMode = 0o001 // others
		switch {
		case st.Uid == uid:
			bit = 0o100
		case slices.Contains(groups, st.Gid):
			bit = 0o010
		}
		if mode&bit == 0 {
			return chain[i], mode, nil
		}
	}
	return "", 0, nil
}

func (c *Cluster) running(ctx context.Context) bool {
	_, err := c.run(ctx, "pg_ctl", "-D", c.Dir, "status")
	return err == nil
}

func (c *Cluster) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.Port), time.Second)
		if err == nil {
			conn.Close()
			if _, err := c.run(ctx, "pg_isready", "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "postgres"); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres in %s not ready on port %d", c.Dir, c.Port)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops the cluster if this process started it.
func (c *Cluster) Stop() error {
	if !c.started {
		return nil
	}
	c.started = false
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := c.run(ctx, "pg_ctl", "-D", c.Dir, "-m", "fast", "-w", "stop"); err != nil {
		return fmt.Errorf("stop postgres: %v: %s", err, out)
	}
	return nil
}

// Kill stops the cluster immediately (tests of database outages).
func (c *Cluster) Kill() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := c.run(ctx, "pg_ctl", "-D", c.Dir, "-m", "immediate", "-w", "stop")
	if err != nil {
		return fmt.Errorf("kill postgres: %v: %s", err, out)
	}
	return nil
}

// Restart starts a cluster stopped by Kill.
func (c *Cluster) Restart(ctx context.Context) error {
	return c.Start(ctx)
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Dir = os.TempDir()
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	// The server must outlive a Ctrl-C sent to our process group.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// Output goes to a file, not a pipe: the server forked by pg_ctl start
	// inherits it, and a pipe would keep Run waiting for it to close.
	out, err := os.CreateTemp("", "pgctl-*.out")
	if err != nil {
		return nil, err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	runErr := cmd.Run()
	b, _ := os.ReadFile(out.Name())
	return b, runErr
}

// FreePort asks the kernel for an unused TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
