package http_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"proxyusage/internal/app"
	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// fastAlerts lets webhooks reach the loopback receivers of these tests and
// shortens the evaluation interval, attempt timeout and backoff.
func fastAlerts(m *app.Main) {
	m.Config.WebhookAllowPrivate = true
	m.Config.AlertInterval = 100 * time.Millisecond
	m.Config.WebhookTimeout = 500 * time.Millisecond
	m.Config.WebhookFirstRetry = 100 * time.Millisecond
	m.Config.WebhookMaxBackoff = 400 * time.Millisecond
}

// received is one request a receiver got.
type received struct {
	ID        string
	Threshold int
	Body      []byte
	Payload   map[string]any
	At        time.Time
}

// receiver is a webhook endpoint on loopback that checks every request's
// signature the way a customer's receiver would, and answers with
// respond(r, n) for the n-th attempt (0-based) of r's alert: a status, or
// 0 to hang until the client gives up.
type receiver struct {
	t       *testing.T
	srv     *httptest.Server
	mu      sync.Mutex
	secret  string
	got     []received
	respond func(r received, n int) int
}

func newReceiver(t *testing.T, respond func(r received, n int) int) *receiver {
	rc := &receiver{t: t, respond: respond}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	secret := rc.secret
	rc.mu.Unlock()
	if err := verifySignature(secret, r.Header.Get("X-ProxyUsage-Signature"), body, time.Now()); err != nil {
		rc.t.Errorf("receiver: %v", err)
		w.WriteHeader(400)
		return
	}
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil || r.Method != "POST" || r.Header.Get("Content-Type") != "application/json" {
		rc.t.Errorf("receiver: %s %s %s", r.Method, r.Header.Get("Content-Type"), body)
	}
	got := received{ID: fmt.Sprint(p["id"]), Threshold: int(p["thresholdPercent"].(float64)), Body: body, Payload: p, At: time.Now()}
	rc.mu.Lock()
	n := 0 // earlier requests of the same alert
	for _, g := range rc.got {
		if g.ID == got.ID {
			n++
		}
	}
	rc.got = append(rc.got, got)
	rc.mu.Unlock()
	status := rc.respond(got, n)
	if status == 0 {
		<-r.Context().Done() // hang until the sender gives up
		return
	}
	w.WriteHeader(status)
}

func (rc *receiver) setSecret(s string) { rc.mu.Lock(); rc.secret = s; rc.mu.Unlock() }

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// verifySignature checks "t=<unix>,v1=<hex HMAC-SHA256(secret, t.body)>",
// written from the documented scheme, not from the service's code.
func verifySignature(secret, header string, body []byte, now time.Time) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || now.Sub(time.Unix(unix, 0)).Abs() > 5*time.Minute {
		return fmt.Errorf("signature timestamp %q", header)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "%s.%s", ts, body)
	want := mac.Sum(nil)
	got, err := hex.DecodeString(sig)
	if err != nil || !hmac.Equal(got, want) {
		return fmt.Errorf("signature %q does not verify", header)
	}
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func setWebhook(t *testing.T, env *apptest.Env, token string, rc *receiver) {
	t.Helper()
	r := env.Do("PUT", "/proxy/usage/webhook", token, map[string]string{"url": rc.srv.URL + "/hooks/usage"})
	m := r.JSON(t)
	secret, _ := m["secret"].(string)
	if r.Status != 200 || len(secret) < 32 || m["url"] != rc.srv.URL+"/hooks/usage" {
		t.Fatalf("set webhook: %d %s", r.Status, r.Body)
	}
	rc.setSecret(secret)
}

func TestWebhookAlerts(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, fastAlerts)
		admin := apptest.Token(t, "root", "admin")
		alice := apptest.Token(t, "alice")
		env.MustRegister(alice, "a1")
		// The 50 % alert's first attempt gets 500, its second no answer
		// (past the 500 ms attempt timeout), its third 200; the rest 200.
		rc := newReceiver(t, func(r received, n int) int {
			switch {
			case r.Threshold == 50 && n == 0:
				return 500
			case r.Threshold == 50 && n == 1:
				return 0
			}
			return 200
		})
		setWebhook(t, env, alice, rc)
		if g := env.Do("GET", "/proxy/usage/webhook", alice, nil); g.Status != 200 || strings.Contains(string(g.Body), "secret") {
			t.Fatalf("GET webhook shows the secret or fails: %d %s", g.Status, g.Body)
		}
		env.Do("PUT", "/admin/users/alice", admin, map[string]any{"limits": map[string]any{"monthlyGB": "10", "alertPercents": []int{50, 80, 100}}})

		now := time.Now().UTC()
		ingest(t, env, alice, []map[string]any{transfer("a1", now, "e1", 6_000_000_000, 0)})
		acked := time.Now()
		waitFor(t, "the 50 % alert", func() bool {
			for _, r := range rc.requests() {
				if r.Threshold == 50 {
					return true
				}
			}
			return false
		})
		t.Logf("acknowledgement to first webhook arrival: %s", rc.requests()[0].At.Sub(acked))
		// 80 % and 100 % are crossed by one event: each is alerted.
		ingest(t, env, alice, []map[string]any{transfer("a1", now, "e2", 5_000_000_000, 0)})
		waitFor(t, "three alerts delivered", func() bool {
			return env.Count(`SELECT count(*) FROM usage_alerts WHERE state = 'delivered'`) == 3
		})
		// Evaluations keep running: nothing is alerted twice.
		time.Sleep(500 * time.Millisecond)
		if n := env.Count(`SELECT count(*) FROM usage_alerts`); n != 3 {
			t.Fatalf("%d alerts, want 3", n)
		}
		byID := map[string][]received{}
		for _, r := range rc.requests() {
			byID[r.ID] = append(byID[r.ID], r)
		}
		if len(byID) != 3 {
			t.Fatalf("%d distinct alert ids, want 3", len(byID))
		}
		first := rc.requests()[0]
		if tries := byID[first.ID]; len(tries) != 3 || string(tries[0].Body) != string(tries[2].Body) {
			t.Fatalf("first alert: %d tries (want 3: 500, timeout, 200) or body changed across retries", len(tries))
		}
		p := first.Payload
		if p["type"] != "usage.threshold_reached" || p["userId"] != "alice" || p["month"] != now.Format("2006-01") ||
			p["thresholdPercent"] != float64(50) || p["limitGB"] != "10" || p["usedGB"] != "6.000000000" || p["createdAt"] == nil {
			t.Fatalf("payload %s", first.Body)
		}
		for id, tries := range byID {
			if id != first.ID && (len(tries) != 1 || tries[0].Payload["usedGB"] != "11.000000000") {
				t.Fatalf("alert %s: %d tries, payload %s", id, len(tries), tries[0].Body)
			}
		}
		// The delivery log, newest first.
		var log struct {
			Deliveries []struct {
				AlertID string
				Attempt int
				Status  *int
				Result  string
			}
			Count int
		}
		env.Do("GET", "/proxy/usage/webhook/deliveries", alice, nil).Decode(t, &log)
		var firstLog []string
		for _, d := range log.Deliveries {
			if d.AlertID == first.ID {
				firstLog = append(firstLog, fmt.Sprintf("%d:%v:%s", d.Attempt, statusOf(d.Status), d.Result))
			}
		}
		if log.Count != 5 || strings.Join(firstLog, " ") != "3:200:delivered 2:none:timeout 1:500:http_error" {
			t.Fatalf("delivery log %+v (first alert: %v)", log, firstLog)
		}
		env.Do("GET", "/proxy/usage/webhook/deliveries?limit=0", alice, nil).ExpectError(t, 400, "PROXY_USAGE_001")
		env.Do("GET", "/proxy/usage/webhook/deliveries?userId=bob", alice, nil).ExpectError(t, 403, "PROXY_USAGE_005")
		if r := env.Do("DELETE", "/proxy/usage/webhook", alice, nil); r.Status != 204 {
			t.Fatalf("delete %d", r.Status)
		}
		env.Do("GET", "/proxy/usage/webhook", alice, nil).ExpectError(t, 404, "PROXY_USAGE_006")
		m := env.Main.Metrics
		if counterValue(t, m.AlertsRecorded) != 3 || counterValue(t, m.WebhookDeliveries.WithLabelValues("delivered")) != 3 ||
			counterValue(t, m.WebhookDeliveries.WithLabelValues("http_error")) != 1 || counterValue(t, m.WebhookDeliveries.WithLabelValues("timeout")) != 1 {
			t.Fatal("alert and delivery counters disagree with what happened")
		}
	})
}

func statusOf(s *int) string {
	if s == nil {
		return "none"
	}
	return strconv.Itoa(*s)
}

// Two replicas evaluate and deliver on one database: every threshold is
// alerted and delivered once, even with their evaluations forced to race.
func TestAlertsTwoReplicas(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, fastAlerts)
		other := env.Replica(fastAlerts)
		admin := apptest.Token(t, "root", "admin")
		alice := apptest.Token(t, "alice")
		rc := newReceiver(t, func(received, int) int { return 200 })
		env.MustRegister(alice, "a1")
		setWebhook(t, other, alice, rc)
		percents := []int{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
		env.Do("PUT", "/admin/users/alice", admin, map[string]any{"limits": map[string]any{"monthlyGB": "1", "alertPercents": percents}})
		now := time.Now().UTC()
		for i := range 5 {
			ingest(t, []*apptest.Env{env, other}[i%2], alice, []map[string]any{transfer("a1", now, fmt.Sprint(i), 230_000_000, 0)})
			var wg sync.WaitGroup
			for _, e := range []*apptest.Env{env, other, env, other} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := e.Main.Alerts.RunOnce(context.Background()); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
		}
		waitFor(t, "ten alerts delivered", func() bool {
			return env.Count(`SELECT count(*) FROM usage_alerts WHERE state = 'delivered'`) == len(percents)
		})
		time.Sleep(time.Second) // give a duplicate time to show up
		seen := map[int]string{}
		for _, r := range rc.requests() {
			if id, dup := seen[r.Threshold]; dup {
				t.Fatalf("threshold %d delivered twice (%s, %s)", r.Threshold, id, r.ID)
			}
			seen[r.Threshold] = r.ID
		}
		if len(seen) != len(percents) || env.Count(`SELECT count(*) FROM usage_alerts`) != len(percents) {
			t.Fatalf("alerts %v", seen)
		}
		recorded := counterValue(t, env.Main.Metrics.AlertsRecorded) + counterValue(t, other.Main.Metrics.AlertsRecorded)
		if recorded != float64(len(percents)) {
			t.Fatalf("replicas counted %v alerts recorded, want %d", recorded, len(percents))
		}
	})
}

// A replica dies after an alert is committed and while its delivery is in
// flight; another replica delivers it, with the same id.
func TestAlertSurvivesCrashBeforeDelivery(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		first := apptest.Start(t, b, fastAlerts)
		admin := apptest.Token(t, "root", "admin")
		alice := apptest.Token(t, "alice")
		// The first request hangs (the first replica's attempt); later ones succeed.
		rc := newReceiver(t, func(_ received, n int) int {
			if n == 0 {
				return 0
			}
			return 200
		})
		first.MustRegister(alice, "a1")
		setWebhook(t, first, alice, rc)
		first.Do("PUT", "/admin/users/alice", admin, map[string]any{"limits": map[string]any{"monthlyGB": "1", "alertPercents": []int{100}}})
		ingest(t, first, alice, []map[string]any{transfer("a1", time.Now().UTC(), "big", 1_000_000_000, 0)})
		waitFor(t, "the first attempt to be in flight", func() bool { return len(rc.requests()) == 1 })
		// The row is committed and claimed; the replica goes away without
		// recording an outcome.
		if err := first.Main.Close(); err != nil {
			t.Fatal(err)
		}
		if n := first.Count(`SELECT count(*) FROM usage_alerts WHERE state = 'pending'`); n != 1 {
			t.Fatalf("%d pending alerts after the crash, want 1", n)
		}
		second := first.Replica(fastAlerts)
		waitFor(t, "the second replica to deliver", func() bool {
			return second.Count(`SELECT count(*) FROM usage_alerts WHERE state = 'delivered'`) == 1
		})
		got := rc.requests()
		if len(got) != 2 || got[0].ID != got[1].ID || string(got[0].Body) != string(got[1].Body) {
			t.Fatalf("deliveries %d, ids %v", len(got), got)
		}
	})
}

// Without WEBHOOK_ALLOW_PRIVATE, private, loopback and link-local
// addresses are refused when configured, and again when delivering (a
// name that resolves somewhere else by then: DNS rebinding).
func TestWebhookSSRF(t *testing.T) {
	env := apptest.Start(t, database.Postgres, func(m *app.Main) {
		fastAlerts(m)
		m.Config.WebhookAllowPrivate = false
	})
	alice := apptest.Token(t, "alice")
	admin := apptest.Token(t, "root", "admin")
	for _, u := range []string{
		"http://127.0.0.1:8080/x", "http://localhost/x", "http://10.1.2.3/", "http://192.168.0.1/", "http://172.16.0.1/",
		"http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[fe80::1]/", "http://[fd00::1]/",
		"http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://100.64.0.1/", "http://2130706433/",
		"ftp://example.com/", "file:///etc/passwd", "https://user:pw@example.com/", "//example.com/", "example.com",
		"https://example.com/#frag", "", "http:// example.com/", "https://example.com:99999/",
	} {
		t.Run(u, func(t *testing.T) {
			env.Do("PUT", "/proxy/usage/webhook", alice, map[string]string{"url": u}).ExpectError(t, 400, "PROXY_USAGE_001")
		})
	}
	for _, body := range []string{`{"url":"https://example.com/","secret":"x"}`, `{"URL":"https://example.com/"}`, `[]`, `{"url":1}`} {
		env.Do("PUT", "/proxy/usage/webhook", alice, body).ExpectError(t, 400, "PROXY_USAGE_001")
	}
	if n := env.Count(`SELECT count(*) FROM user_webhooks`); n != 0 {
		t.Fatal("a refused webhook was stored")
	}
	// A stored URL that now points at loopback is refused at delivery.
	rc := newReceiver(t, func(received, int) int { return 200 })
	env.MustRegister(alice, "a1")
	if _, err := env.DB.Exec(context.Background(), `INSERT INTO user_webhooks (user_id, url, secret) VALUES ('alice', $1, 'whsec_x')`, rc.srv.URL); err != nil {
		t.Fatal(err)
	}
	env.Do("PUT", "/admin/users/alice", admin, map[string]any{"limits": map[string]any{"monthlyGB": "1", "alertPercents": []int{100}}})
	ingest(t, env, alice, []map[string]any{transfer("a1", time.Now().UTC(), "big", 1_000_000_000, 0)})
	waitFor(t, "a refused delivery", func() bool {
		return env.Count(`SELECT count(*) FROM webhook_deliveries WHERE result = 'refused' AND http_status IS NULL`) > 0
	})
	if len(rc.requests()) != 0 {
		t.Fatal("the receiver on loopback was called")
	}
	if counterValue(t, env.Main.Metrics.WebhookDeliveries.WithLabelValues("refused")) == 0 {
		t.Fatal("refused delivery not counted")
	}
}

// Re-billing last month after a backdated price change prices each day
// with the contract in effect that day.
func TestContractHistoryRebilling(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, apptest.NoAlertEvaluator, func(m *app.Main) {
			m.Config.LateDataWindow = 70 * 24 * time.Hour // all of last month
		})
		admin := apptest.Token(t, "root", "admin")
		ent := apptest.Token(t, "ent")
		env.MustRegister(ent, "e1")
		last := monthStart(time.Now().UTC()).AddDate(0, -1, 0)
		lastEnd := last.AddDate(0, 1, -1)
		dim := int64(lastEnd.Day())
		change := last.AddDate(0, 0, 10) // day 11
		var events []map[string]any
		bytesBefore, bytesAfter := int64(0), int64(0)
		for d := last; !d.After(lastEnd); d = d.AddDate(0, 0, 1) {
			n := int64(1_000_000_000 + d.Day()*7_654_321)
			events = append(events, transfer("e1", d.Add(12*time.Hour), d.Format("2006-01-02"), n, 0))
			if d.Before(change) {
				bytesBefore += n
			} else {
				bytesAfter += n
			}
		}
		ingest(t, env, ent, events)
		env.Do("PUT", "/admin/users/ent", admin, map[string]any{"tier": "enterprise", "effectiveFrom": "2020-01-01",
			"contract": map[string]string{"baseMonthly": "500", "perGB": "0.005"}})
		env.Do("PUT", "/admin/users/ent", admin, map[string]any{"effectiveFrom": "2020-01-01",
			"contract": map[string]string{"baseMonthly": "500", "perGB": "0.005"}})
		path := fmt.Sprintf("/proxy/usage/billing?periodStart=%s&periodEnd=%s", last.Format("2006-01-02"), lastEnd.Format("2006-01-02"))
		cents := func(num, den *big.Int) string { // half-up
			r := new(big.Rat).SetFrac(num, den)
			r.Mul(r, big.NewRat(100, 1)).Add(r, big.NewRat(1, 2))
			q := new(big.Int).Quo(r.Num(), r.Denom())
			return new(big.Rat).SetFrac(q, big.NewInt(100)).FloatString(2)
		}
		amounts := func() []string {
			var bill struct {
				LineItems []struct{ Amount, UnitPrice string }
			}
			env.Do("GET", path, ent, nil).Decode(t, &bill)
			var out []string
			for _, li := range bill.LineItems {
				out = append(out, li.UnitPrice+"="+li.Amount)
			}
			return out
		}
		total := bytesBefore + bytesAfter
		want := []string{"500.00=500.00", "0.005=" + cents(big.NewInt(total*5), big.NewInt(1_000_000_000_000))}
		if got := amounts(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("bill before the change %v, want %v", got, want)
		}
		// The price changed on day 11 of last month, entered today.
		r := env.Do("PUT", "/admin/users/ent", admin, map[string]any{"effectiveFrom": change.Format("2006-01-02"),
			"contract": map[string]string{"baseMonthly": "620", "perGB": "0.004"}})
		var acc struct {
			Contract        struct{ BaseMonthly string }
			ContractHistory []struct{ EffectiveFrom, BaseMonthly, PerGB, Currency string }
		}
		r.Decode(t, &acc)
		if r.Status != 200 || acc.Contract.BaseMonthly != "620.00" || len(acc.ContractHistory) != 2 ||
			acc.ContractHistory[1].EffectiveFrom != change.Format("2006-01-02") || acc.ContractHistory[0].PerGB != "0.005" || acc.ContractHistory[1].Currency != "USD" {
			t.Fatalf("account %d %s", r.Status, r.Body)
		}
		want = []string{
			"500.00=" + cents(big.NewInt(500*10), big.NewInt(dim)),
			"0.005=" + cents(big.NewInt(bytesBefore*5), big.NewInt(1_000_000_000_000)),
			"620.00=" + cents(big.NewInt(620*(dim-10)), big.NewInt(dim)),
			"0.004=" + cents(big.NewInt(bytesAfter*4), big.NewInt(1_000_000_000_000)),
		}
		if got := amounts(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("re-billed %v, want %v", got, want)
		}
	})
}
