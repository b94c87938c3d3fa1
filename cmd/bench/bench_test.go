package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A run of some phases writes its own block after the main one and leaves
// the main block and the hand-written text alone; running it again
// replaces only its block.
func TestWriteGeneratedKeepsOtherBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := writeGenerated(path, "", "main results\n"); err != nil {
		t.Fatal(err)
	}
	read := func() string {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	if err := os.WriteFile(path, []byte("# hand head\n"+read()+"\nhand analysis\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"live results 1\n", "live results 2\n"} {
		if err := writeGenerated(path, "sustained,live", body); err != nil {
			t.Fatal(err)
		}
	}
	got := read()
	for _, want := range []string{"# hand head", "main results", "live results 2", "hand analysis"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "live results 1") {
		t.Errorf("the phases' old block was kept:\n%s", got)
	}
	_, mainEnd := marks("")
	begin, _ := marks("sustained,live")
	if strings.Index(got, begin) < strings.Index(got, mainEnd) || strings.Index(got, "hand analysis") < strings.Index(got, begin) {
		t.Errorf("the phases' block is not between the main block and the analysis:\n%s", got)
	}
	if err := writeGenerated(path, "", "main results 2\n"); err != nil {
		t.Fatal(err)
	}
	if got := read(); !strings.Contains(got, "main results 2") || strings.Contains(got, "main results\n") || !strings.Contains(got, "live results 2") {
		t.Errorf("rewriting the main block:\n%s", got)
	}
}

// -pg-set and -service-env refuse what they cannot pass on safely: a
// setting name that is not one, and an environment variable that is not.
func TestSettingFlags(t *testing.T) {
	for _, c := range []struct {
		v      string
		pg, sv bool // accepted by -pg-set, by -service-env
	}{
		{"shared_buffers=8GB", true, false},
		{"timescaledb.max_background_workers=0", true, false},
		{"INGEST_MAX_ROLLUP_LAG=1000h", false, true},
		{"INGEST_WRITERS=4", false, true},
		{"=1", false, false},
		{"novalue", false, false},
		{"shared_buffers;DROP=1", false, false},
		{"A B=1", false, false},
	} {
		var p pgSetFlag
		var s serviceEnvFlag
		if got := p.Set(c.v) == nil; got != c.pg {
			t.Errorf("-pg-set %q accepted = %v, want %v", c.v, got, c.pg)
		}
		if got := s.Set(c.v) == nil; got != c.sv {
			t.Errorf("-service-env %q accepted = %v, want %v", c.v, got, c.sv)
		}
		if c.sv && s.String() != c.v {
			t.Errorf("-service-env %q kept as %q", c.v, s.String())
		}
	}
}
