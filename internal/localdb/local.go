// Package localdb is development tooling, not part of the service: a
// PostgreSQL cluster in a directory of ours (`make run` without
// DATABASE_URL, the test harnesses, the benchmark) and the local setup's
// dev JWT secret. The service itself only ever gets a DATABASE_URL.
package localdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
)

// DefaultPort is the preferred port of the local cluster (another free one
// is used, and remembered, if it is taken).
const DefaultPort = 54329

// Database is the name of the service's database in the local cluster.
const Database = "proxyusage"

// SecretFile holds the generated JWT secret of a local setup.
func SecretFile(dataDir string) string { return filepath.Join(dataDir, "jwt-secret") }

// Start starts (creating on first use) the local cluster under dataDir,
// with TimescaleDB when installed, and creates the service's database in
// it. The caller stops the cluster when done.
func Start(ctx context.Context, dataDir string, logger *slog.Logger) (*Cluster, error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	port, err := localPort(dataDir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: filepath.Join(dataDir, "postgres"), Port: port, Timescale: true}
	logger.Info("starting local postgres", slog.String("dir", c.Dir), slog.Int("port", port))
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	if err := CreateDatabase(ctx, c.URL("postgres"), Database); err != nil {
		return nil, err
	}
	return c, nil
}

// localPort returns the local cluster's port, chosen on first use
// (DefaultPort unless it is taken) and remembered under the data directory.
func localPort(dataDir string) (int, error) {
	file := filepath.Join(dataDir, "postgres.port")
	if b, err := os.ReadFile(file); err == nil {
		var p int
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &p); err == nil && p > 0 {
			return p, nil
		}
	}
	port := DefaultPort
	if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		l.Close()
	} else if port, err = FreePort(); err != nil {
		return 0, err
	}
	return port, os.WriteFile(file, []byte(fmt.Sprintf("%d\n", port)), 0o644)
}

// CreateDatabase creates database name unless it exists.
func CreateDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return err
}

// LoadOrCreateSecret reads a secret file, creating a random one first.
func LoadOrCreateSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	secret := hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", err
	}
	return secret, nil
}
