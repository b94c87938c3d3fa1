package proxy_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/database"
	"proxyusage/internal/fixture"
	"proxyusage/internal/pgtest"
	"proxyusage/internal/proxy"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var alice, bob, admin, service = fixture.Alice, fixture.Bob, fixture.Admin, fixture.Service

// newStore returns a Store on a fresh migrated database with alice, bob,
// the admin and the service caller as users.
func newStore(t *testing.T, b database.Backend) *proxy.Store {
	t.Helper()
	db := fixture.New(t, b)
	for _, p := range []auth.Principal{alice, bob, admin, service} {
		db.Own(t, p)
	}
	return db.Proxies
}

func name(s string) proxy.Registration { return proxy.Registration{Name: &s} }

func TestOwnership(t *testing.T) {
	pgtest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		ctx := context.Background()
		s := newStore(t, b)

		p, created, err := s.Register(ctx, alice, "p1", name("first"))
		if err != nil || !created || p.UserID != "alice" || p.Name != "first" || p.Archived() {
			t.Fatalf("register: %+v created %v, %v", p, created, err)
		}
		// Again by its owner: an update; no name keeps the name.
		if p, created, err = s.Register(ctx, alice, "p1", proxy.Registration{}); err != nil || created || p.Name != "first" {
			t.Fatalf("re-register: %+v created %v, %v", p, created, err)
		}
		// Another user's id is a conflict, and changes nothing.
		if _, _, err := s.Register(ctx, bob, "p1", name("mine")); apperr.CodeOf(err) != apperr.Conflict {
			t.Fatalf("register by bob: %v, want %s", err, apperr.Conflict)
		}
		// An admin updates any proxy; the owner stays.
		if p, created, err = s.Register(ctx, admin, "p1", name("renamed")); err != nil || created || p.UserID != "alice" || p.Name != "renamed" {
			t.Fatalf("register by admin: %+v created %v, %v", p, created, err)
		}
		// The service role writes events anywhere but does not own proxies.
		if _, _, err := s.Register(ctx, service, "p1", name("x")); apperr.CodeOf(err) != apperr.Conflict {
			t.Fatalf("register by service: %v, want %s", err, apperr.Conflict)
		}

		// Reading: the owner and the admin see it; anyone else gets not
		// found, the same as for an id nobody has.
		for _, c := range []struct {
			who  auth.Principal
			want apperr.Code
		}{{alice, ""}, {admin, ""}, {bob, apperr.NotFound}, {service, apperr.NotFound}} {
			got, err := s.Get(ctx, c.who, "p1")
			if apperr.CodeOf(err) != c.want && !(c.want == "" && err == nil) {
				t.Errorf("get by %s: %v, want %q", c.who.UserID, err, c.want)
			}
			if err == nil && got.Name != "renamed" {
				t.Errorf("get by %s: %+v", c.who.UserID, got)
			}
		}
		if _, err := s.Get(ctx, alice, "nope"); apperr.CodeOf(err) != apperr.NotFound {
			t.Errorf("get of an unknown id: %v", err)
		}

		// Archiving: someone else's proxy is not found; twice is fine.
		if err := s.Archive(ctx, bob, "p1"); apperr.CodeOf(err) != apperr.NotFound {
			t.Errorf("archive by bob: %v, want %s", err, apperr.NotFound)
		}
		for range 2 {
			if err := s.Archive(ctx, alice, "p1"); err != nil {
				t.Fatalf("archive by alice: %v", err)
			}
		}
		p, _ = s.Get(ctx, alice, "p1")
		if !p.Archived() {
			t.Fatal("not archived")
		}
		// Who may record events into it.
		for _, c := range []struct {
			who  auth.Principal
			p    *proxy.Proxy
			want apperr.Code
		}{
			{alice, &p, apperr.Conflict}, {admin, &p, apperr.Conflict}, {service, &p, apperr.Conflict},
			{bob, &p, apperr.NotFound}, {alice, nil, apperr.NotFound},
		} {
			if err := proxy.CheckWritable(c.who, c.p); apperr.CodeOf(err) != c.want {
				t.Errorf("writable by %s: %v, want %s", c.who.UserID, err, c.want)
			}
		}
		// Registering again un-archives it.
		if p, _, err = s.Register(ctx, alice, "p1", proxy.Registration{}); err != nil || p.Archived() {
			t.Fatalf("re-register archived: %+v %v", p, err)
		}
		for _, who := range []auth.Principal{alice, admin, service} {
			if err := proxy.CheckWritable(who, &p); err != nil {
				t.Errorf("writable by %s: %v", who.UserID, err)
			}
		}
		if err := proxy.CheckWritable(bob, &p); apperr.CodeOf(err) != apperr.NotFound {
			t.Errorf("writable by bob: %v", err)
		}
	})
}

func TestValidation(t *testing.T) {
	pgtest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		ctx := context.Background()
		s := newStore(t, b)
		for _, id := range []string{"", ".", "..", "a/b", "a b", strings.Repeat("x", 129), "é"} {
			if _, _, err := s.Register(ctx, alice, id, proxy.Registration{}); apperr.CodeOf(err) != apperr.Invalid {
				t.Errorf("register %q: %v, want %s", id, err, apperr.Invalid)
			}
			// Reads and archives of an id that cannot exist are not found.
			if _, err := s.Get(ctx, alice, id); apperr.CodeOf(err) != apperr.NotFound {
				t.Errorf("get %q: %v, want %s", id, err, apperr.NotFound)
			}
			if err := s.Archive(ctx, alice, id); apperr.CodeOf(err) != apperr.NotFound {
				t.Errorf("archive %q: %v, want %s", id, err, apperr.NotFound)
			}
		}
		for _, n := range []string{strings.Repeat("n", proxy.MaxNameLength+1), "a\x00b", "\xff"} {
			reg := name(n)
			if err := reg.Validate(); apperr.CodeOf(err) != apperr.Invalid {
				t.Errorf("name %q: %v, want %s", n, err, apperr.Invalid)
			}
		}
		if reg := name(strings.Repeat("é", proxy.MaxNameLength)); reg.Validate() != nil {
			t.Error("a name of MaxNameLength characters refused")
		}
		for _, r := range []proxy.PageRequest{{Limit: 0}, {Limit: proxy.MaxPageSize + 1}, {Limit: 1, After: ".."}} {
			if err := r.Validate(); apperr.CodeOf(err) != apperr.Invalid {
				t.Errorf("page %+v: %v, want %s", r, err, apperr.Invalid)
			}
		}
		// Nothing was stored.
		if list, err := s.IDs(ctx, alice.UserID); err != nil || len(list) != 0 {
			t.Fatalf("after refusals: %v %v", list, err)
		}
	})
}

func TestListAndPages(t *testing.T) {
	pgtest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		ctx := context.Background()
		s := newStore(t, b)
		// Ids whose byte order differs from a linguistic one.
		ids := []string{"b", "B", "a-2", "a_1", "a.3", "Z:9", "10", "9", "alpha"}
		for _, id := range ids {
			if _, _, err := s.Register(ctx, alice, id, proxy.Registration{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := s.Register(ctx, bob, "bobs", proxy.Registration{}); err != nil {
			t.Fatal(err)
		}
		if err := s.Archive(ctx, alice, "b"); err != nil {
			t.Fatal(err)
		}
		want := slices.Clone(ids)
		slices.Sort(want) // Go compares strings bytewise

		got, err := s.IDs(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("ids %v, want %v (archived included, byte order, alice's only)", got, want)
		}
		var paged []string
		req := proxy.PageRequest{Limit: 4}
		for pages := 0; ; pages++ {
			if pages > len(want) {
				t.Fatal("pages do not end")
			}
			page, more, err := s.Page(ctx, "alice", req)
			if err != nil {
				t.Fatal(err)
			}
			paged = append(paged, idsOf(page)...)
			if !more {
				break
			}
			req.After = page[len(page)-1].ID
		}
		if !slices.Equal(paged, want) {
			t.Errorf("pages %v, want %v", paged, want)
		}

		owners, err := s.Owners(ctx)
		if err != nil || len(owners) != len(ids)+1 || owners["bobs"] != "bob" || owners["a_1"] != "alice" {
			t.Errorf("owners %v %v", owners, err)
		}
		found, err := s.Lookup(ctx, []string{"a_1", "bobs", "missing"})
		if err != nil || len(found) != 2 || found["bobs"].UserID != "bob" {
			t.Errorf("lookup %v %v", found, err)
		}
	})
}

func idsOf(list []proxy.Proxy) []string {
	out := make([]string, len(list))
	for i, p := range list {
		out[i] = p.ID
	}
	return out
}
