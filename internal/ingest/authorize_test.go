package ingest

import (
	"testing"
	"time"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/proxy"
)

// Authorize is the one write check of every path: own and service-written
// proxies pass, a missing or foreign one is not found, an archived one is a
// conflict, and in a batch the first failing event is named by its index.
func TestAuthorize(t *testing.T) {
	archived := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	found := map[string]proxy.Proxy{
		"a1":  {ID: "a1", UserID: "alice"},
		"b1":  {ID: "b1", UserID: "bob"},
		"old": {ID: "old", UserID: "alice", ArchivedAt: &archived},
	}
	alice := auth.Principal{UserID: "alice"}
	service := auth.Principal{UserID: "svc", Roles: []string{auth.RoleService}}
	evs := func(ids ...string) []Event {
		out := make([]Event, len(ids))
		for i, id := range ids {
			out[i] = Event{ProxyID: id, Type: DataTransfer}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		caller auth.Principal
		events []Event
		batch  bool
		code   apperr.Code
		index  int
	}{
		{"own proxy", alice, evs("a1", "a1"), true, "", -1},
		{"service writes any", service, evs("a1", "b1"), true, "", -1},
		{"foreign proxy", alice, evs("b1"), false, apperr.NotFound, -1},
		{"missing proxy", alice, evs("nope"), false, apperr.NotFound, -1},
		{"archived proxy", alice, evs("old"), false, apperr.Conflict, -1},
		{"first failure in a batch decides", alice, evs("a1", "old", "b1"), true, apperr.Conflict, 1},
		{"foreign before archived", alice, evs("a1", "b1", "old"), true, apperr.NotFound, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Authorize(tc.caller, tc.events, found, tc.batch)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if apperr.CodeOf(err) != tc.code || apperr.IndexOf(err) != tc.index {
				t.Fatalf("got %v (code %s, index %d), want code %s, index %d", err, apperr.CodeOf(err), apperr.IndexOf(err), tc.code, tc.index)
			}
		})
	}
}
