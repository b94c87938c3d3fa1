package http_test

import (
	"net/http"
	"testing"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

func TestProxies(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		alice := apptest.Token(t, "alice")
		bob := apptest.Token(t, "bob")
		admin := apptest.Token(t, "root", "admin")

		r := env.Do("PUT", "/proxies/p1", alice, map[string]any{"name": "first"})
		if r.Status != 201 || r.JSON(t)["name"] != "first" || r.JSON(t)["userId"] != "alice" {
			t.Fatalf("register: %d %s", r.Status, r.Body)
		}
		// Owner's repeat is an upsert (200); no body keeps the name.
		if r := env.Do("PUT", "/proxies/p1", alice, nil); r.Status != 200 || r.JSON(t)["name"] != "first" {
			t.Fatalf("re-register: %d %s", r.Status, r.Body)
		}
		// Someone else's id: 409, archived or not.
		env.Do("PUT", "/proxies/p1", bob, map[string]any{"name": "mine"}).ExpectError(t, 409, "PROXY_USAGE_007")
		// Invalid ids and names.
		env.Do("PUT", "/proxies/"+string(make([]byte, 0))+"bad$id", alice, nil).ExpectError(t, 400, "PROXY_USAGE_001")
		long := make([]byte, 129)
		for i := range long {
			long[i] = 'x'
		}
		env.Do("PUT", "/proxies/"+string(long), alice, nil).ExpectError(t, 400, "PROXY_USAGE_001")
		env.Do("PUT", "/proxies/p2", alice, `{"name": 5}`).ExpectError(t, 400, "PROXY_USAGE_001")

		// Non-owners see 404 on archive and cannot record.
		env.Do("DELETE", "/proxies/p1", bob, nil).ExpectError(t, 404, "PROXY_USAGE_006")
		env.Do("DELETE", "/proxies/nope", alice, nil).ExpectError(t, 404, "PROXY_USAGE_006")
		env.Do("POST", "/proxy/usage/p1/record", bob, map[string]any{"eventType": "error"}).ExpectError(t, 404, "PROXY_USAGE_006")

		// Listing is per user.
		env.MustRegister(bob, "b1")
		var list struct {
			Proxies []struct {
				ProxyID  string `json:"proxyId"`
				Archived bool   `json:"archived"`
			} `json:"proxies"`
			Count int `json:"count"`
		}
		env.Do("GET", "/proxies", alice, nil).Decode(t, &list)
		if list.Count != 1 || list.Proxies[0].ProxyID != "p1" {
			t.Fatalf("alice's list: %+v", list)
		}

		// Archive: 204, recording is 409, listing shows it archived, and
		// the id stays taken.
		if r := env.Do("DELETE", "/proxies/p1", alice, nil); r.Status != http.StatusNoContent {
			t.Fatalf("archive: %d %s", r.Status, r.Body)
		}
		env.Do("POST", "/proxy/usage/p1/record", alice, map[string]any{"eventType": "error"}).ExpectError(t, 409, "PROXY_USAGE_007")
		env.Do("GET", "/proxies", alice, nil).Decode(t, &list)
		if !list.Proxies[0].Archived {
			t.Fatalf("archived proxy listed as %+v", list)
		}
		env.Do("PUT", "/proxies/p1", bob, nil).ExpectError(t, 409, "PROXY_USAGE_007")
		// The owner's PUT un-archives.
		if r := env.Do("PUT", "/proxies/p1", alice, nil); r.Status != 200 || r.JSON(t)["archived"] != false {
			t.Fatalf("unarchive: %d %s", r.Status, r.Body)
		}
		if r := env.Do("POST", "/proxy/usage/p1/record", alice, map[string]any{"eventType": "error"}); r.Status != 201 {
			t.Fatalf("record after unarchive: %d %s", r.Status, r.Body)
		}
		// Admin may archive anyone's proxy.
		if r := env.Do("DELETE", "/proxies/b1", admin, nil); r.Status != 204 {
			t.Fatalf("admin archive: %d %s", r.Status, r.Body)
		}
		if n := env.Count(`SELECT count(*) FROM proxies`); n != 2 {
			t.Fatalf("%d proxies stored, want 2 (invalid ones stored nothing)", n)
		}
	})
}
