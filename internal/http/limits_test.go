package http_test

import (
	"context"
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"proxyusage/internal/app"
	"proxyusage/internal/apptest"
	"proxyusage/internal/billing"
	"proxyusage/internal/database"
)

// gbOf is the reference for usedGB: bytes / 10^9 with exactly 9 places.
func gbOf(bytes *big.Int) string {
	r := new(big.Rat).SetFrac(bytes, big.NewInt(1_000_000_000))
	return r.FloatString(9)
}

func monthStart(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// transfer is a data_transfer event of proxy p at at.
func transfer(p string, at time.Time, id string, sent, recv int64) map[string]any {
	return map[string]any{"proxyId": p, "eventType": "data_transfer", "timestamp": at.Format(time.RFC3339Nano),
		"eventId": id, "eventData": map[string]any{"bytesSent": sent, "bytesReceived": recv}}
}

func ingest(t *testing.T, env *apptest.Env, token string, events []map[string]any) {
	t.Helper()
	if r := env.Do("POST", "/proxy/usage/events", token, map[string]any{"events": events}); r.Status != 201 {
		t.Fatalf("ingest: %d %s", r.Status, r.Body)
	}
}

type limitsJSON struct {
	UserID, Month, UsedGB, ResetsAt string
	LimitGB, Enforcement, Source    *string
	RemainingGB                     *string
	Exceeded                        bool
	AlertPercents                   []int
}

type accessJSON struct {
	ProxyID, UserID, Reason, UsedGB string
	Allowed                         bool
	LimitGB                         *string
}

func TestLimitsAndAccess(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		// No rollup worker: every read below must see the events it was
		// not given time to roll up (read-your-writes), then again after.
		env := apptest.Start(t, b, apptest.NoWorker, apptest.NoAlertEvaluator)
		admin := apptest.Token(t, "root", "admin")
		svc := apptest.Token(t, "edge", "service")
		alice := apptest.Token(t, "alice")
		bob := apptest.Token(t, "bob")
		env.MustRegister(alice, "a1")
		env.MustRegister(alice, "a2")
		env.MustRegister(bob, "b1")

		now := time.Now().UTC()
		month := monthStart(now)
		r := env.Do("PUT", "/admin/users/alice", admin, map[string]any{"limits": map[string]any{"monthlyGB": "10", "enforcement": "hard", "alertPercents": []int{100, 50}}})
		if r.Status != 200 {
			t.Fatalf("set limits: %d %s", r.Status, r.Body)
		}
		if got := r.JSON(t)["limits"]; fmt.Sprint(got) != "map[alertPercents:[50 100] enforcement:hard monthlyGB:10]" {
			t.Fatalf("account limits %v", got)
		}

		// Events this month (reference) and last month (not counted).
		rng := rand.New(rand.NewPCG(3, 5))
		used := new(big.Int)
		var events []map[string]any
		for i := range 200 {
			at := month.Add(time.Duration(rng.Int64N(int64(now.Sub(month)) + 1)))
			p := []string{"a1", "a2", "b1"}[i%3]
			sent, recv := rng.Int64N(30_000_000), rng.Int64N(20_000_000)
			events = append(events, transfer(p, at, fmt.Sprintf("m%d", i), sent, recv))
			if p != "b1" {
				used.Add(used, big.NewInt(sent+recv))
			}
		}
		events = append(events, transfer("a1", month.Add(-time.Hour), "last-month", 7_000_000_000, 0))
		ingest(t, env, svc, events)
		ingest(t, env, svc, events[:30]) // retries count once

		check := func(wantAllowed bool, wantReason string) {
			t.Helper()
			var l limitsJSON
			env.Do("GET", "/proxy/usage/limits", alice, nil).Decode(t, &l)
			remaining := new(big.Int).Sub(big.NewInt(10_000_000_000), used)
			if remaining.Sign() < 0 {
				remaining.SetInt64(0)
			}
			if l.UserID != "alice" || l.Month != month.Format("2006-01") || l.UsedGB != gbOf(used) || *l.LimitGB != "10" ||
				*l.Enforcement != "hard" || *l.Source != "user" || *l.RemainingGB != gbOf(remaining) ||
				l.Exceeded != (used.Cmp(big.NewInt(10_000_000_000)) >= 0) || l.ResetsAt != month.AddDate(0, 1, 0).Format(time.RFC3339) {
				t.Fatalf("limits %+v, want used %s", l, gbOf(used))
			}
			var a accessJSON
			env.Do("GET", "/proxy/usage/access/a1", svc, nil).Decode(t, &a)
			if a.ProxyID != "a1" || a.UserID != "alice" || a.Allowed != wantAllowed || a.Reason != wantReason || a.UsedGB != gbOf(used) || *a.LimitGB != "10" {
				t.Fatalf("access %+v, want allowed %v (%s) used %s", a, wantAllowed, wantReason, gbOf(used))
			}
			// Limits, report and bill agree about the month.
			rep := env.Do("GET", fmt.Sprintf("/proxy/usage/report?startDate=%s&endDate=%s", month.Format("2006-01-02"),
				month.AddDate(0, 1, -1).Format("2006-01-02")), alice, nil).JSON(t)
			if got := fmt.Sprint(rep["totals"].(map[string]any)["totalBytes"]); got != fmt.Sprint(float64(used.Int64())) {
				t.Fatalf("report totalBytes %s, limits used %s", got, used)
			}
		}
		check(true, "ok")
		if _, err := env.Main.Rollup.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		check(true, "ok")

		// Cross the limit exactly: used == limit is reached.
		rest := new(big.Int).Sub(big.NewInt(10_000_000_000), used).Int64()
		ingest(t, env, alice, []map[string]any{transfer("a2", now, "cross", rest, 0)})
		used.Add(used, big.NewInt(rest))
		check(false, "limit_exceeded")
		// The owner may ask too; bob may not (404, like a missing proxy).
		if r := env.Do("GET", "/proxy/usage/access/a2", alice, nil); r.Status != 200 || r.JSON(t)["allowed"] != false {
			t.Fatalf("owner access: %d %s", r.Status, r.Body)
		}
		env.Do("GET", "/proxy/usage/access/a1", bob, nil).ExpectError(t, 404, "PROXY_USAGE_006")
		env.Do("GET", "/proxy/usage/access/nope", svc, nil).ExpectError(t, 404, "PROXY_USAGE_006")
		env.Do("GET", "/proxy/usage/access/bad%20id", svc, nil).ExpectError(t, 404, "PROXY_USAGE_006")
		// A soft limit never blocks; archiving does.
		env.Do("PUT", "/admin/users/alice", admin, map[string]any{"limits": map[string]any{"monthlyGB": "10", "enforcement": "soft"}})
		var a accessJSON
		env.Do("GET", "/proxy/usage/access/a1", svc, nil).Decode(t, &a)
		if !a.Allowed || a.Reason != "ok" {
			t.Fatalf("soft limit blocked: %+v", a)
		}
		if r := env.Do("DELETE", "/proxies/a2", alice, nil); r.Status != 204 {
			t.Fatalf("archive %d", r.Status)
		}
		env.Do("GET", "/proxy/usage/access/a2", svc, nil).Decode(t, &a)
		if a.Allowed || a.Reason != "archived" {
			t.Fatalf("archived proxy allowed: %+v", a)
		}
		// Bob has no limit: nulls, never blocked; he may not read alice's.
		var l limitsJSON
		env.Do("GET", "/proxy/usage/limits", bob, nil).Decode(t, &l)
		if l.LimitGB != nil || l.RemainingGB != nil || l.Exceeded || l.Enforcement != nil {
			t.Fatalf("bob limits %+v", l)
		}
		env.Do("GET", "/proxy/usage/limits?userId=alice", bob, nil).ExpectError(t, 403, "PROXY_USAGE_005")
		if r := env.Do("GET", "/proxy/usage/limits?userId=alice", admin, nil); r.Status != 200 || r.JSON(t)["usedGB"] != gbOf(used) {
			t.Fatalf("admin limits: %d %s", r.Status, r.Body)
		}
		env.Do("GET", "/proxy/usage/limits?userId=nobody", admin, nil).ExpectError(t, 404, "PROXY_USAGE_006")

		// A limits-only update keeps tier and contract; null removes the limit.
		env.Do("PUT", "/admin/users/alice", admin, map[string]any{"tier": "enterprise", "effectiveFrom": "2020-01-01",
			"contract": map[string]string{"baseMonthly": "100", "perGB": "1"}})
		r = env.Do("PUT", "/admin/users/alice", admin, map[string]any{"limits": nil})
		acc := r.JSON(t)
		if r.Status != 200 || acc["limits"] != nil || acc["tier"] != "enterprise" || acc["contract"] == nil {
			t.Fatalf("limits removed: %d %s", r.Status, r.Body)
		}
		env.Do("GET", "/proxy/usage/access/a1", svc, nil).Decode(t, &a)
		if !a.Allowed || a.LimitGB != nil {
			t.Fatalf("no limit: %+v", a)
		}
	})
}

func TestLimitsBadInput(t *testing.T) {
	env := apptest.Start(t, database.Postgres, apptest.NoAlertEvaluator)
	admin := apptest.Token(t, "root", "admin")
	alice := apptest.Token(t, "alice")
	for name, body := range map[string]string{
		"negative":             `{"limits":{"monthlyGB":"-1"}}`,
		"zero":                 `{"limits":{"monthlyGB":"0"}}`,
		"not a number":         `{"limits":{"monthlyGB":"lots"}}`,
		"exponent":             `{"limits":{"monthlyGB":"1e3"}}`,
		"JSON number":          `{"limits":{"monthlyGB":50}}`,
		"too many places":      `{"limits":{"monthlyGB":"1.0000000001"}}`,
		"too large":            `{"limits":{"monthlyGB":"1000000001"}}`,
		"missing monthlyGB":    `{"limits":{"enforcement":"hard"}}`,
		"bad enforcement":      `{"limits":{"monthlyGB":"5","enforcement":"strict"}}`,
		"percent 0":            `{"limits":{"monthlyGB":"5","alertPercents":[0]}}`,
		"percent 1001":         `{"limits":{"monthlyGB":"5","alertPercents":[1001]}}`,
		"fractional percent":   `{"limits":{"monthlyGB":"5","alertPercents":[50.5]}}`,
		"duplicate percent":    `{"limits":{"monthlyGB":"5","alertPercents":[80,80]}}`,
		"eleven percents":      `{"limits":{"monthlyGB":"5","alertPercents":[1,2,3,4,5,6,7,8,9,10,11]}}`,
		"unknown limits field": `{"limits":{"monthlyGB":"5","hard":true}}`,
		"limits not an object": `{"limits":"5"}`,
		"effectiveFrom alone":  `{"effectiveFrom":"2026-01-01"}`,
		"member name case":     `{"limits":{"MonthlyGB":"5"}}`,
		"duplicate member":     `{"limits":{"monthlyGB":"5","monthlyGB":"6"}}`,
		"trailing data":        `{"limits":{"monthlyGB":"5"}} {}`,
	} {
		t.Run(name, func(t *testing.T) {
			env.Do("PUT", "/admin/users/carol", admin, body).ExpectError(t, 400, "PROXY_USAGE_001")
		})
	}
	if n := env.Count(`SELECT count(*) FROM users WHERE id = 'carol'`) + env.Count(`SELECT count(*) FROM user_limits`); n != 0 {
		t.Fatal("a refused update stored something")
	}
	// Ten thresholds up to 1000 % are fine; an empty list means no alerts.
	r := env.Do("PUT", "/admin/users/carol", admin, `{"limits":{"monthlyGB":"0.000000001","alertPercents":[1,2,3,4,5,6,7,8,9,1000]}}`)
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	r = env.Do("PUT", "/admin/users/dave", admin, `{"limits":{"monthlyGB":"1000000000","alertPercents":[]}}`)
	if r.Status != 200 || fmt.Sprint(r.JSON(t)["limits"]) != "map[alertPercents:[] enforcement:hard monthlyGB:1000000000]" {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	// Only admins set limits.
	env.Do("PUT", "/admin/users/alice", alice, `{"limits":{"monthlyGB":"5"}}`).ExpectError(t, 403, "PROXY_USAGE_005")
}

func TestPlanLimit(t *testing.T) {
	plans := filepath.Join(t.TempDir(), "plans.json")
	if err := os.WriteFile(plans, []byte(`{"currency":"USD","plans":{"free":{"monthlyLimitGB":"1","limitEnforcement":"hard"},
		"premium":{"baseMonthly":"10","perGB":"0.01","monthlyLimitGB":"100","limitEnforcement":"soft","alertPercents":[90]},
		"enterprise":{"custom":true}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := billing.LoadPlans(plans)
	if err != nil {
		t.Fatal(err)
	}
	env := apptest.Start(t, database.Postgres, apptest.NoAlertEvaluator, func(m *app.Main) { m.Config.Plans = p })
	admin := apptest.Token(t, "root", "admin")
	alice := apptest.Token(t, "alice")
	env.MustRegister(alice, "a1")
	ingest(t, env, alice, []map[string]any{transfer("a1", time.Now().UTC(), "x", 1_000_000_000, 0)})
	var a accessJSON
	env.Do("GET", "/proxy/usage/access/a1", alice, nil).Decode(t, &a)
	if a.Allowed || a.Reason != "limit_exceeded" || *a.LimitGB != "1" {
		t.Fatalf("free plan limit: %+v", a)
	}
	env.Do("PUT", "/admin/users/alice", admin, map[string]any{"tier": "premium"})
	var l limitsJSON
	env.Do("GET", "/proxy/usage/limits", alice, nil).Decode(t, &l)
	if *l.LimitGB != "100" || *l.Enforcement != "soft" || *l.Source != "plan" || fmt.Sprint(l.AlertPercents) != "[90]" || l.UsedGB != "1.000000000" {
		t.Fatalf("premium plan limit: %+v", l)
	}
	// The user's own limit overrides the plan's.
	env.Do("PUT", "/admin/users/alice", admin, map[string]any{"limits": map[string]any{"monthlyGB": "2"}})
	env.Do("GET", "/proxy/usage/limits", alice, nil).Decode(t, &l)
	if *l.LimitGB != "2" || *l.Source != "user" || *l.Enforcement != "hard" || fmt.Sprint(l.AlertPercents) != "[80 100]" {
		t.Fatalf("own limit: %+v", l)
	}
}
