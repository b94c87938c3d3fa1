package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// shiftTime moves a timestamp inside a JSON body by whole seconds,
// keeping its width (and so every offset after it) and its sub-second
// digits, across a midnight too.
func TestShiftTime(t *testing.T) {
	for _, ts := range []string{"2026-12-02T23:59:30Z", "2026-12-02T23:59:30.5Z", "2026-12-02T23:59:30.120Z", "2026-12-02T23:59:59.123456789Z"} {
		body := []byte(`{"timestamp":"` + ts + `","x":1}`)
		at := len(`{"timestamp":"`)
		shiftTime(body[at:], 45*time.Second)
		want, _ := time.Parse(time.RFC3339Nano, ts)
		want = want.Add(45 * time.Second)
		got := string(body[at : at+len(ts)])
		parsed, err := time.Parse(time.RFC3339Nano, got)
		if err != nil || !parsed.Equal(want) {
			t.Errorf("%s + 45 s = %s, want %s", ts, got, want.Format(time.RFC3339Nano))
		}
		if string(body[at+len(ts):]) != `","x":1}` {
			t.Errorf("%s: the rest of the body changed: %s", ts, body)
		}
	}
}
