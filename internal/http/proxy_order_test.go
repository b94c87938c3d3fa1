package http_test

import (
	"context"
	"slices"
	"testing"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// GET /proxies lists ids in byte order even when the database sorts text
// by a linguistic collation (en_US databases: case and punctuation are
// second-level differences there). The column is given an ICU collation
// here, as such a database would have; the pages must still walk the ids
// in byte order, as report rows are sorted.
func TestListProxiesByteOrder(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		ctx := context.Background()
		var icu bool
		if err := env.DB.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'en-x-icu')`).Scan(&icu); err != nil || !icu {
			t.Skipf("no ICU collation en-x-icu on this server (%v)", err)
		}
		alice := apptest.Token(t, "alice")
		ids := []string{"ab", "a-c", "aB", "A1", "a.b", "B", "a_b", "b-1", "a:z", "Ab"}
		for _, id := range ids {
			env.MustRegister(alice, id)
		}
		if _, err := env.DB.Exec(ctx, `ALTER TABLE proxies ALTER COLUMN id TYPE text COLLATE "en-x-icu"`); err != nil {
			t.Fatal(err)
		}
		// The linguistic order differs from byte order for these ids, or
		// the test would prove nothing.
		var linguistic []string
		rows, _ := env.DB.Query(ctx, `SELECT id FROM proxies ORDER BY id`)
		for rows.Next() {
			var id string
			_ = rows.Scan(&id)
			linguistic = append(linguistic, id)
		}
		rows.Close()
		want := slices.Clone(ids)
		slices.Sort(want)
		if slices.Equal(linguistic, want) {
			t.Fatalf("the ICU order %v is byte order: nothing to test", linguistic)
		}
		var got []string
		after := ""
		for range len(ids) {
			path := "/proxies?limit=3"
			if after != "" {
				path += "&after=" + after
			}
			var page struct {
				Proxies []struct {
					ProxyID string `json:"proxyId"`
				} `json:"proxies"`
				NextAfter *string `json:"nextAfter"`
			}
			r := env.Do("GET", path, alice, nil)
			if r.Status != 200 {
				t.Fatalf("%s: %d %s", path, r.Status, r.Body)
			}
			r.Decode(t, &page)
			for _, p := range page.Proxies {
				got = append(got, p.ProxyID)
			}
			if page.NextAfter == nil {
				break
			}
			after = *page.NextAfter
		}
		if !slices.Equal(got, want) {
			t.Errorf("pages walked %v, want byte order %v", got, want)
		}
		// The unpaged list (GET /proxies without limit) too.
		var all struct {
			Proxies []struct {
				ProxyID string `json:"proxyId"`
			} `json:"proxies"`
		}
		env.Do("GET", "/proxies", alice, nil).Decode(t, &all)
		var listed []string
		for _, p := range all.Proxies {
			listed = append(listed, p.ProxyID)
		}
		if !slices.Equal(listed, want) {
			t.Errorf("list %v, want byte order %v", listed, want)
		}
	})
}
