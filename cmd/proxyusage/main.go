// Command proxyusage is the proxy usage metering service.
//
//	proxyusage serve     run the API (and, with no DATABASE_URL, a local PostgreSQL under .data/)
//	proxyusage migrate   apply the schema migrations and exit
//	proxyusage token     mint a JWT for development
//	proxyusage report    print a usage report from the API
//	proxyusage bill      print a bill from the API
//	proxyusage limits    print a monthly limit, usage and access decision
//	proxyusage seed      record demo data through the API
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"proxyusage/internal/app"
	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/config"
	"proxyusage/internal/localdb"
	"proxyusage/internal/user"
)

const usage = `proxyusage meters proxy usage for billing and analytics.

Usage:
  proxyusage <command> [flags]

Commands:
  serve     run the API server (migrates first)
  migrate   apply database migrations and exit
  token     print a signed development JWT
  report    print a usage report (calls the API; -url, -token)
  bill      print a billing summary (calls the API)
  limits    print the monthly usage limit, usage and a proxy's access (calls the API)
  seed      register demo proxies and record a generated workload through the API

Configuration comes from the environment (DATABASE_URL, HTTP_ADDR,
JWT_SECRET, JWT_ISSUER, JWT_AUDIENCE, LOG_LEVEL, ...); see README.md.
Run 'proxyusage <command> -h' for the flags of a command.
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "proxyusage:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	switch args[0] {
	case "serve":
		return serve(cfg, args[1:], stdout, stderr)
	case "migrate":
		return migrate(cfg, args[1:], stderr)
	case "token":
		return token(cfg, args[1:], stdout, stderr)
	case "report":
		return reportCmd(args[1:], stdout, stderr)
	case "bill":
		return billCmd(args[1:], stdout, stderr)
	case "limits":
		return limitsCmd(args[1:], stdout, stderr)
	case "seed":
		return seedCmd(cfg, args[1:], stdout, stderr)
	default:
		return fmt.Errorf("unknown command %q\n\n%s", args[0], usage)
	}
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

func commonFlags(fs *flag.FlagSet, cfg *config.Config) {
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "PostgreSQL URL (env DATABASE_URL; empty: local cluster under -data-dir)")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of the local cluster and dev secret (env DATA_DIR)")
	fs.StringVar(&cfg.Backend, "backend", cfg.Backend, "storage backend: auto, postgres or timescaledb (env BACKEND)")
}

func serve(cfg config.Config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs, &cfg)
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "listen address (env HTTP_ADDR)")
	devToken := fs.Bool("print-dev-token", false, "print an admin dev token for the local setup")
	fs.StringVar(&cfg.PprofAddr, "pprof-addr", cfg.PprofAddr, "serve net/http/pprof on this loopback address, e.g. 127.0.0.1:6060 (env PPROF_ADDR; off when empty)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.PprofAddr != "" {
		if err := servePprof(cfg.PprofAddr); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	logger := newLogger(stderr, cfg.LogLevel)
	stopLocal, err := ensureLocal(ctx, &cfg, logger)
	if err != nil {
		return err
	}
	m := &app.Main{Config: cfg, Logger: logger}
	if err := m.Run(ctx); err != nil {
		return errors.Join(err, stopLocal())
	}
	if *devToken {
		tok, err := auth.Mint([]byte(m.Config.JWTSecret), "dev-user", []string{auth.RoleAdmin}, 30*24*time.Hour, m.Config.JWTIssuer, m.Config.JWTAudience)
		if err != nil {
			return errors.Join(err, m.Close(), stopLocal())
		}
		fmt.Fprint(stdout, devHints(m.Server.URL(), tok))
	}
	<-ctx.Done()
	m.Logger.Info("shutting down")
	return errors.Join(m.Close(), stopLocal())
}

// ensureLocal points cfg at the local cluster under its data directory
// when no DATABASE_URL is given, starting the cluster (creating it on
// first use), and provides a persistent dev JWT secret when none is
// configured. It returns what stops the cluster again (nothing to stop
// with a DATABASE_URL).
func ensureLocal(ctx context.Context, cfg *config.Config, logger *slog.Logger) (stop func() error, err error) {
	if cfg.DatabaseURL != "" {
		return func() error { return nil }, nil
	}
	cluster, err := localdb.Start(ctx, cfg.DataDir, logger)
	if err != nil {
		return nil, err
	}
	cfg.DatabaseURL = cluster.URL(localdb.Database)
	if cfg.JWTSecret == "" && cfg.JWTJWKSURL == "" {
		if cfg.JWTSecret, err = localdb.LoadOrCreateSecret(localdb.SecretFile(cfg.DataDir)); err != nil {
			return nil, errors.Join(err, cluster.Stop())
		}
	}
	return cluster.Stop, nil
}

// devHints is what `serve -print-dev-token` prints: the token and requests
// that show something on the first try (the record request carries an
// eventId, so sending it twice shows the duplicate).
func devHints(base, token string) string {
	auth := `-H "Authorization: Bearer $TOKEN"`
	js := `-H 'Content-Type: application/json'`
	status := `-w ' → %{http_code}\n'`
	return fmt.Sprintf(`
proxyusage is listening on %[1]s

Dev token (sub dev-user, role admin, valid 30 days):

  export TOKEN=%[2]s

Try (send the record request twice: 201, then 200 with "duplicate":true):

  curl -s -X PUT %[1]s/proxies/proxy-1 %[3]s %[4]s -d '{"name":"first"}' %[5]s
  curl -s -X POST %[1]s/proxy/usage/proxy-1/record %[3]s %[4]s -d '{"eventType":"data_transfer","eventId":"e-1","eventData":{"bytesSent":1024}}' %[5]s
  curl -s "%[1]s/proxy/usage/proxy-1/metrics/$(date -u +%%F)" %[3]s %[5]s

More examples: README.md; the API: docs/api.md.

`, base, token, auth, js, status)
}

// servePprof serves the runtime profiles on their own loopback listener,
// apart from the API.
func servePprof(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		return fmt.Errorf("-pprof-addr %q: want a loopback address such as 127.0.0.1:6060", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go http.Serve(ln, mux) //nolint:errcheck // lives as long as the process
	return nil
}

func migrate(cfg config.Config, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx := context.Background()
	logger := newLogger(stderr, cfg.LogLevel)
	stopLocal, err := ensureLocal(ctx, &cfg, logger)
	if err != nil {
		return err
	}
	m := &app.Main{Config: cfg, Logger: logger}
	if err := m.Migrate(ctx); err != nil {
		return errors.Join(err, m.Close(), stopLocal())
	}
	m.Logger.Info("migrations applied", slog.String("backend", string(m.Detected)))
	return errors.Join(m.Close(), stopLocal())
}

func token(cfg config.Config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sub := fs.String("sub", "dev-user", "subject (user id)")
	roles := fs.String("roles", "", "comma-separated roles: service, admin")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory holding the dev secret when JWT_SECRET is unset")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := user.ValidateID(*sub); err != nil {
		return fmt.Errorf("-sub: %s", apperr.MessageOf(err)) // the service would refuse the token
	}
	secret := cfg.JWTSecret
	if secret == "" {
		b, err := os.ReadFile(localdb.SecretFile(cfg.DataDir))
		if err != nil {
			return errors.New("set JWT_SECRET, or run `make run` once to create the local dev secret")
		}
		secret = strings.TrimSpace(string(b))
	}
	var rs []string
	for r := range strings.SplitSeq(*roles, ",") {
		if r = strings.TrimSpace(r); r != "" {
			rs = append(rs, r)
		}
	}
	tok, err := auth.Mint([]byte(secret), *sub, rs, *ttl, cfg.JWTIssuer, cfg.JWTAudience)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
