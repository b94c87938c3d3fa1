package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"proxyusage/internal/billing"
)

func TestIntegerSettings(t *testing.T) {
	t.Setenv("INGEST_WRITERS", "4")
	t.Setenv("MAX_INFLIGHT", "256")
	c, err := FromEnv()
	if err != nil || c.IngestWriters != 4 || c.MaxInflight != 256 {
		t.Fatalf("got writers %d, inflight %d, %v", c.IngestWriters, c.MaxInflight, err)
	}
	for _, bad := range []string{"0", "-1", "x"} {
		t.Setenv("INGEST_WRITERS", bad)
		if _, err := FromEnv(); err == nil || !strings.Contains(err.Error(), "INGEST_WRITERS") {
			t.Errorf("INGEST_WRITERS=%q: %v", bad, err)
		}
	}
}

func TestHTTPLimitSettings(t *testing.T) {
	t.Setenv("BODY_TIMEOUT", "5s")
	t.Setenv("READ_TIMEOUT", "2s")
	t.Setenv("IDLE_TIMEOUT", "1m")
	t.Setenv("MAX_CONNS", "100")
	t.Setenv("MAX_INFLIGHT_PER_USER", "4")
	t.Setenv("MAX_INFLIGHT_PER_SERVICE", "64")
	c, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if c.BodyTimeout != 5*time.Second || c.ReadTimeout != 2*time.Second || c.IdleTimeout != time.Minute ||
		c.MaxConns != 100 || c.MaxInflightPerUser != 4 || c.MaxInflightPerService != 64 {
		t.Fatalf("got %+v", c)
	}
	// Unset: zero, which the HTTP server reads as its documented default.
	for _, name := range []string{"BODY_TIMEOUT", "READ_TIMEOUT", "IDLE_TIMEOUT", "MAX_CONNS", "MAX_INFLIGHT_PER_USER", "MAX_INFLIGHT_PER_SERVICE"} {
		t.Setenv(name, "")
	}
	if c, err := FromEnv(); err != nil || c.BodyTimeout != 0 || c.MaxConns != 0 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	// Every bad value is reported, together.
	t.Setenv("BODY_TIMEOUT", "0s")
	t.Setenv("READ_TIMEOUT", "soon")
	t.Setenv("MAX_CONNS", "-1")
	t.Setenv("MAX_INFLIGHT_PER_USER", "0")
	t.Setenv("MAX_INFLIGHT_PER_SERVICE", "many")
	_, err = FromEnv()
	for _, name := range []string{"BODY_TIMEOUT", "READ_TIMEOUT", "MAX_CONNS", "MAX_INFLIGHT_PER_USER", "MAX_INFLIGHT_PER_SERVICE"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s not reported: %v", name, err)
		}
	}
	// Set in code (tests, flags): negative values are refused.
	bad := Config{JWTSecret: strings.Repeat("x", 32), HTTPAddr: ":0", DataDir: "d", MaxConns: -1, ReadTimeout: -time.Second}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "MAX_CONNS") || !strings.Contains(err.Error(), "READ_TIMEOUT") {
		t.Fatalf("Validate: %v", err)
	}
}

// Raw events of a day that late events can still change must be kept.
func TestRetentionCoversLateDataWindow(t *testing.T) {
	base := Config{JWTSecret: strings.Repeat("x", 32), HTTPAddr: ":0", DataDir: "d", LateDataWindow: 35 * 24 * time.Hour}
	for retention, ok := range map[time.Duration]bool{
		0: true, 35 * 24 * time.Hour: true, 400 * 24 * time.Hour: true,
		34 * 24 * time.Hour: false, time.Hour: false,
	} {
		c := base
		c.RawRetention = retention
		err := c.Validate()
		if ok && err != nil || !ok && (err == nil || !strings.Contains(err.Error(), "RAW_RETENTION")) {
			t.Errorf("RAW_RETENTION %s: %v", retention, err)
		}
	}
}

func TestProcessSettings(t *testing.T) {
	c, err := FromEnv()
	if err != nil || c.Backend != DefaultBackend || c.DatabasePoolSize != DefaultDatabasePoolSize ||
		c.PprofAddr != "" {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	t.Setenv("BACKEND", "postgres")
	t.Setenv("DATABASE_POOL_SIZE", "8")
	t.Setenv("PPROF_ADDR", "127.0.0.1:6060")
	c, err = FromEnv()
	if err != nil || c.Backend != "postgres" || c.DatabasePoolSize != 8 || c.PprofAddr != "127.0.0.1:6060" {
		t.Fatalf("got %+v %v", c, err)
	}
	t.Setenv("DATABASE_POOL_SIZE", "0")
	if _, err := FromEnv(); err == nil || !strings.Contains(err.Error(), "DATABASE_POOL_SIZE") {
		t.Errorf("DATABASE_POOL_SIZE=0: %v", err)
	}
	c.JWTSecret = strings.Repeat("s", 32)
	c.Backend = "mysql"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "BACKEND") {
		t.Errorf("BACKEND=mysql: %v", err)
	}
}

func TestReadReplicaSettings(t *testing.T) {
	t.Setenv("READ_DATABASE_URL", "postgres://a:5432,b:5432/proxyusage?target_session_attrs=standby")
	c, err := FromEnv()
	if err != nil || c.ReadFenceTimeout != DefaultReadFenceTimeout || c.ReadDatabaseURL == "" {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	t.Setenv("READ_FENCE_TIMEOUT", "50ms")
	if c, err := FromEnv(); err != nil || c.ReadFenceTimeout != 50*time.Millisecond {
		t.Fatalf("READ_FENCE_TIMEOUT=50ms: %v %v", c.ReadFenceTimeout, err)
	}
	for _, bad := range []string{"0s", "-1s", "soon"} {
		t.Setenv("READ_FENCE_TIMEOUT", bad)
		if _, err := FromEnv(); err == nil || !strings.Contains(err.Error(), "READ_FENCE_TIMEOUT") {
			t.Errorf("READ_FENCE_TIMEOUT=%q: %v", bad, err)
		}
	}
	base := Config{JWTSecret: strings.Repeat("x", 32), HTTPAddr: ":0", DataDir: "d", ReadDatabaseURL: "postgres://standby/db"}
	base.ReadFenceTimeout = time.Minute
	if err := base.Validate(); err == nil || !strings.Contains(err.Error(), "READ_FENCE_TIMEOUT") {
		t.Errorf("READ_FENCE_TIMEOUT of a minute: %v", err)
	}
	base.ReadFenceTimeout, base.ReadTimeout = time.Second, time.Second
	if err := base.Validate(); err == nil || !strings.Contains(err.Error(), "shorter than READ_TIMEOUT") {
		t.Errorf("READ_FENCE_TIMEOUT as long as READ_TIMEOUT: %v", err)
	}
	base.ReadFenceTimeout = DefaultReadFenceTimeout
	if err := base.Validate(); err != nil {
		t.Errorf("valid: %v", err)
	}
}

// PLANS_FILE is read with the rest of the configuration: unset gives the
// built-in plans, a file its plans, and a bad one is reported together with
// the other bad settings.
func TestPlansFile(t *testing.T) {
	c, err := FromEnv()
	if err != nil || c.Plans.Currency != "USD" || !c.Plans.Tiers["premium"].PerGB.Equal(billing.DefaultPlans().Tiers["premium"].PerGB) {
		t.Fatalf("unset: %+v %v", c.Plans, err)
	}
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	t.Setenv("PLANS_FILE", write("eur.json", `{"currency":"EUR","plans":{"free":{"baseMonthly":"0","perGB":"0"},
		"premium":{"baseMonthly":"12","perGB":"0.02"},"enterprise":{"custom":true}}}`))
	if c, err = FromEnv(); err != nil || c.Plans.Currency != "EUR" || c.Plans.Tiers["premium"].PerGB.String() != "0.02" {
		t.Fatalf("file: %+v %v", c.Plans, err)
	}
	for name, body := range map[string]string{
		"negative.json": `{"currency":"EUR","plans":{"free":{"baseMonthly":"-1","perGB":"0"},"premium":{},"enterprise":{"custom":true}}}`,
		"unknown.json":  `{"currency":"EUR","plans":{},"extra":1}`,
	} {
		t.Setenv("PLANS_FILE", write(name, body))
		t.Setenv("DEDUP_WINDOW", "soon")
		_, err := FromEnv()
		if err == nil || !strings.Contains(err.Error(), "PLANS_FILE") || !strings.Contains(err.Error(), "DEDUP_WINDOW") {
			t.Errorf("%s: want both PLANS_FILE and DEDUP_WINDOW reported, got %v", name, err)
		}
	}
	t.Setenv("DEDUP_WINDOW", "")
	t.Setenv("PLANS_FILE", filepath.Join(dir, "missing.json"))
	if _, err := FromEnv(); err == nil || !strings.Contains(err.Error(), "PLANS_FILE") {
		t.Errorf("missing file: %v", err)
	}
	// Set in code: Validate checks them too.
	bad := Config{JWTSecret: strings.Repeat("x", 32), HTTPAddr: ":0", DataDir: "d", Plans: billing.Plans{Currency: "usd", Tiers: map[string]billing.Plan{}}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "PLANS_FILE") {
		t.Errorf("Validate: %v", err)
	}
}

func TestHeavyReadSettings(t *testing.T) {
	c, err := FromEnv()
	if err != nil || c.HeavyReadSlots != 0 || c.HeavyReadThreshold != 0 {
		t.Fatalf("defaults (0: the gate's own): %+v %v", c, err)
	}
	t.Setenv("HEAVY_READ_SLOTS", "3")
	t.Setenv("HEAVY_READ_THRESHOLD", "10000")
	if c, err = FromEnv(); err != nil || c.HeavyReadSlots != 3 || c.HeavyReadThreshold != 10000 {
		t.Fatalf("got %+v %v", c, err)
	}
	t.Setenv("HEAVY_READ_SLOTS", "0")
	t.Setenv("HEAVY_READ_THRESHOLD", "-1")
	_, err = FromEnv()
	for _, name := range []string{"HEAVY_READ_SLOTS", "HEAVY_READ_THRESHOLD"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
