package localdb_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"proxyusage/internal/localdb"
)

// A data directory under a mode-700 directory of another user (a clone
// under /root, the cluster running as postgres) is reported with the
// directory that blocks it, before initdb fails with a bare
// "Permission denied". The check reads mode bits, so it needs no root.
func TestUntraversableParent(t *testing.T) {
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} { // MkdirTemp makes them 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	private := filepath.Join(base, "home")
	data := filepath.Join(private, "clone", ".data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's own parents are usually open to others, but not always
	// (a private TMPDIR): skip rather than assert on what we do not control.
	if blocked, _, err := localdb.Untraversable(base, 12345, []uint32{12345}); err != nil || blocked != "" {
		t.Skipf("the temporary directory itself is not open to others (%s)", blocked)
	}
	owner := uint32(os.Getuid())
	for _, tc := range []struct {
		name   string
		uid    uint32
		groups []uint32
		want   string
	}{
		{"another user", 12345, []uint32{12345}, private},
		{"the owner", owner, nil, ""},
		{"root", 0, nil, ""},
	} {
		blocked, mode, err := localdb.Untraversable(data, tc.uid, tc.groups)
		if err != nil {
			t.Fatal(err)
		}
		if blocked != tc.want {
			t.Errorf("%s: blocked at %q (mode %v), want %q", tc.name, blocked, mode, tc.want)
		}
	}
	// Group search permission is enough for a member of the group.
	if err := os.Chmod(private, 0o710); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(private)
	gid := statGid(t, fi)
	if blocked, _, _ := localdb.Untraversable(data, 12345, []uint32{gid}); blocked != "" && os.Getuid() != 12345 {
		t.Errorf("a member of the directory's group is blocked at %s", blocked)
	}
	if blocked, _, _ := localdb.Untraversable(data, 12345, []uint32{gid + 1}); blocked != private {
		t.Errorf("a non-member passes a mode-710 directory (blocked %q)", blocked)
	}
}

func statGid(t *testing.T, fi os.FileInfo) uint32 {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no Unix file ownership here")
	}
	return st.Gid
}
