package config

import (
	"strings"
	"testing"
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
