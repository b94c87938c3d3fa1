package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"proxyusage/internal/auth"
	"proxyusage/internal/config"
	"proxyusage/internal/exact"
	"proxyusage/internal/ingest"
	"proxyusage/internal/localdb"
	"proxyusage/internal/workload"
)

// apiClient calls a running proxyusage API.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

// commandFlags is the flag set of an API subcommand: its usage line and
// help go to stderr, followed by the flags.
func commandFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

func apiFlags(fs *flag.FlagSet) (*string, *string) {
	// The client commands' own settings, not the service's configuration.
	u := fs.String("url", cmp.Or(os.Getenv("PROXYUSAGE_URL"), "http://localhost:8080"), "API base URL (env PROXYUSAGE_URL)")
	t := fs.String("token", os.Getenv("TOKEN"), "bearer token (env TOKEN; mint one with: bin/proxyusage token)")
	return u, t
}

func (c apiClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.base, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct{ Code, Message string }
		if json.Unmarshal(b, &e) == nil && e.Code != "" {
			return fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, e.Code, e.Message)
		}
		return fmt.Errorf("%s %s: %d", method, path, resp.StatusCode)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func needToken(token string) error {
	if token == "" {
		return errors.New("a token is required: -token or TOKEN (mint one with: bin/proxyusage token)")
	}
	return nil
}

// metricsRow is the subset of the daily metric fields the tables show.
type metricsRow struct {
	Date                      string    `json:"date"`
	ProxyID                   string    `json:"proxyId"`
	EventCount                int64     `json:"eventCount"`
	ConnectionCount           int64     `json:"connectionCount"`
	TotalBytes                exact.Sum `json:"totalBytes"`
	PeakConcurrentConnections int       `json:"peakConcurrentConnections"`
	ErrorCount                int64     `json:"errorCount"`
	ErrorRate                 *float64  `json:"errorRate"`
	P95LatencyMs              *float64  `json:"p95LatencyMs"`
}

// humanBytes shows a byte total in decimal units (1 kB = 1000 B).
func humanBytes(n exact.Sum) string {
	if v, ok := n.Uint64(); ok && v < 1000 {
		return fmt.Sprintf("%d B", v)
	}
	const units = "kMGTPEZYRQ"
	f, i := n.Float64()/1000, 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.2f %cB", f, units[i])
}

func optional(v *float64, format string) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf(format, *v)
}

func reportCmd(args []string, stdout, stderr io.Writer) error {
	fs := commandFlags("report", "Usage: proxyusage report -start YYYY-MM-DD -end YYYY-MM-DD [-group-by day|proxy] [-user ID]\n\nPrints the usage report of the token's user (admins: -user) as a table.", stderr)
	base, token := apiFlags(fs)
	today := time.Now().UTC().Format("2006-01-02")
	start := fs.String("start", time.Now().UTC().AddDate(0, 0, -6).Format("2006-01-02"), "first day")
	end := fs.String("end", today, "last day")
	groupBy := fs.String("group-by", "day", "day or proxy")
	userID := fs.String("user", "", "another user's id (admin only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := needToken(*token); err != nil {
		return err
	}
	q := url.Values{"startDate": {*start}, "endDate": {*end}, "groupBy": {*groupBy}}
	if *userID != "" {
		q.Set("userId", *userID)
	}
	var rep struct {
		UserID string       `json:"userId"`
		Rows   []metricsRow `json:"rows"`
		Totals metricsRow   `json:"totals"`
	}
	c := apiClient{base: *base, token: *token, http: &http.Client{Timeout: 30 * time.Second}}
	if err := c.do(context.Background(), "GET", "/proxy/usage/report?"+q.Encode(), nil, &rep); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Usage of %s, %s to %s, by %s\n\n", rep.UserID, *start, *end, *groupBy)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.ToUpper(*groupBy)+"\tEVENTS\tCONNECTIONS\tBYTES\tPEAK\tERRORS\tERROR RATE\tP95 MS\t")
	row := func(label string, m metricsRow) {
		if m.ErrorRate != nil {
			percent := *m.ErrorRate * 100
			m.ErrorRate = &percent
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%d\t%s\t%s\t\n", label, m.EventCount, m.ConnectionCount, humanBytes(m.TotalBytes),
			m.PeakConcurrentConnections, m.ErrorCount, optional(m.ErrorRate, "%.2f%%"), optional(m.P95LatencyMs, "%.1f"))
	}
	for _, r := range rep.Rows {
		row(r.Date+r.ProxyID, r)
	}
	row("total", rep.Totals)
	return tw.Flush()
}

func billCmd(args []string, stdout, stderr io.Writer) error {
	fs := commandFlags("bill", "Usage: proxyusage bill -start YYYY-MM-DD -end YYYY-MM-DD [-user ID]\n\nPrints the billing summary of the token's user (admins: -user).", stderr)
	base, token := apiFlags(fs)
	now := time.Now().UTC()
	first := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	start := fs.String("start", first.Format("2006-01-02"), "first day (default: this month)")
	end := fs.String("end", first.AddDate(0, 1, -1).Format("2006-01-02"), "last day")
	userID := fs.String("user", "", "another user's id (admin only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := needToken(*token); err != nil {
		return err
	}
	q := url.Values{"periodStart": {*start}, "periodEnd": {*end}}
	if *userID != "" {
		q.Set("userId", *userID)
	}
	var bill struct {
		UserID, Currency, Tier, Message string
		CustomPricing                   bool
		Tiers                           []struct{ Tier, From, To string }
		LineItems                       []struct{ Description, Quantity, Unit, UnitPrice, Amount string }
		Total                           *string
	}
	c := apiClient{base: *base, token: *token, http: &http.Client{Timeout: 30 * time.Second}}
	if err := c.do(context.Background(), "GET", "/proxy/usage/billing?"+q.Encode(), nil, &bill); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Bill for %s, %s to %s (%s)\n", bill.UserID, *start, *end, bill.Currency)
	for _, t := range bill.Tiers {
		fmt.Fprintf(stdout, "  tier %s from %s to %s\n", t.Tier, t.From, t.To)
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DESCRIPTION\tQUANTITY\tUNIT\tUNIT PRICE\tAMOUNT")
	for _, li := range bill.LineItems {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", li.Description, li.Quantity, li.Unit, li.UnitPrice, li.Amount)
	}
	total := "contact sales"
	if bill.Total != nil {
		total = *bill.Total + " " + bill.Currency
	}
	fmt.Fprintf(tw, "TOTAL\t\t\t\t%s\n", total)
	if err := tw.Flush(); err != nil {
		return err
	}
	if bill.Message != "" {
		fmt.Fprintln(stdout, "\n"+bill.Message)
	}
	return nil
}

// limitsCmd shows a user's monthly limit and usage, and with -proxy the
// edge's access decision for one proxy.
func limitsCmd(args []string, stdout, stderr io.Writer) error {
	fs := commandFlags("limits", "Usage: proxyusage limits [-user ID] [-proxy ID]\n\nPrints the token's user's monthly usage limit and this month's usage (admins: -user),\nand with -proxy whether that proxy may open a new connection now.", stderr)
	base, token := apiFlags(fs)
	userID := fs.String("user", "", "another user's id (admin only)")
	proxyID := fs.String("proxy", "", "also ask the access decision for this proxy")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := needToken(*token); err != nil {
		return err
	}
	q := url.Values{}
	if *userID != "" {
		q.Set("userId", *userID)
	}
	var st struct {
		UserID, Month, UsedGB, ResetsAt string
		LimitGB, Enforcement, Source    *string
		RemainingGB                     *string
		Exceeded                        bool
		AlertPercents                   []int
	}
	c := apiClient{base: *base, token: *token, http: &http.Client{Timeout: 30 * time.Second}}
	if err := c.do(context.Background(), "GET", "/proxy/usage/limits?"+q.Encode(), nil, &st); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "user\t%s\nmonth\t%s (resets %s)\nused\t%s GB\n", st.UserID, st.Month, st.ResetsAt, st.UsedGB)
	if st.LimitGB == nil {
		fmt.Fprintln(tw, "limit\tnone")
	} else {
		fmt.Fprintf(tw, "limit\t%s GB, %s (%s's)\nremaining\t%s GB\nexceeded\t%v\nalerts at\t%v %%\n",
			*st.LimitGB, *st.Enforcement, *st.Source, *st.RemainingGB, st.Exceeded, st.AlertPercents)
	}
	if *proxyID != "" {
		var a struct {
			Allowed bool
			Reason  string
		}
		if err := c.do(context.Background(), "GET", "/proxy/usage/access/"+url.PathEscape(*proxyID), nil, &a); err != nil {
			return err
		}
		fmt.Fprintf(tw, "access %s\tallowed=%v (%s)\n", *proxyID, a.Allowed, a.Reason)
	}
	return tw.Flush()
}

// seedCmd registers demo users' proxies and sends a generated workload
// through the API, showing progress.
func seedCmd(cfg config.Config, args []string, stdout, stderr io.Writer) error {
	fs := commandFlags("seed", "Usage: proxyusage seed [-users N] [-proxies N] [-days N] [-events N]\n\nGives the demo users user-000, user-001, ... the tiers free, premium and\nenterprise (with a contract) in turn, registers their proxies and records a\nrealistic workload through the API. Tokens are minted with JWT_SECRET (or\nthe local dev secret).", stderr)
	base, _ := apiFlags(fs)
	users := fs.Int("users", 5, "users")
	proxies := fs.Int("proxies", 20, "proxies, spread over the users")
	days := fs.Int("days", 7, "days of history (at most 34, the late-data window)")
	events := fs.Int("events", 50_000, "events")
	seed := fs.Uint64("seed", 1, "random seed")
	clients := fs.Int("clients", 4, "concurrent requests")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory holding the dev secret when JWT_SECRET is unset")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *days < 1 || *days > 34 {
		return errors.New("-days must be 1 to 34")
	}
	secret := cfg.JWTSecret
	if secret == "" {
		s, err := os.ReadFile(localdb.SecretFile(cfg.DataDir))
		if err != nil {
			return errors.New("set JWT_SECRET, or run `make run` once to create the local dev secret")
		}
		secret = strings.TrimSpace(string(s))
	}
	mint := func(sub string, roles ...string) (string, error) {
		return auth.Mint([]byte(secret), sub, roles, time.Hour, cfg.JWTIssuer, cfg.JWTAudience)
	}
	now := time.Now().UTC()
	g := workload.New(workload.Config{Seed: *seed, Users: *users, Proxies: *proxies,
		Start: now.AddDate(0, 0, -*days), End: now.Add(-time.Minute), Events: *events, Prefix: fmt.Sprintf("seed%d", *seed)})
	ctx := context.Background()
	client := &http.Client{Timeout: 60 * time.Second}
	for _, p := range g.Proxies() {
		tok, err := mint(p.UserID)
		if err != nil {
			return err
		}
		c := apiClient{base: *base, token: tok, http: client}
		if err := c.do(ctx, "PUT", "/proxies/"+p.ID, []byte(`{"name":"demo `+p.ID+`"}`), nil); err != nil {
			return err
		}
	}
	admin, err := mint("seed", auth.RoleAdmin)
	if err != nil {
		return err
	}
	// Tiers from the first seeded month on, so the seeded days and this
	// month's bill are priced by them.
	first := now.AddDate(0, 0, -*days)
	tierFrom := time.Date(first.Year(), first.Month(), 1, 0, 0, 0, 0, time.UTC)
	for i := range *users {
		body := fmt.Sprintf(`{"tier":%q,"effectiveFrom":%q}`, seedTier(i), tierFrom.Format("2006-01-02"))
		if seedTier(i) == "enterprise" {
			body = fmt.Sprintf(`{"tier":"enterprise","effectiveFrom":%q,"contract":%s}`, tierFrom.Format("2006-01-02"), seedContract)
		}
		if err := (apiClient{base: *base, token: admin, http: client}).do(ctx, "PUT", "/admin/users/"+url.PathEscape(workload.UserID(i)), []byte(body), nil); err != nil {
			return err
		}
	}
	svc, err := mint("seed", auth.RoleService)
	if err != nil {
		return err
	}
	c := apiClient{base: *base, token: svc, http: client}
	batches := make(chan []ingest.Event, *clients)
	var sent atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				if err := c.do(ctx, "POST", "/proxy/usage/events", workload.AppendBatch(nil, b), nil); err != nil {
					once.Do(func() { firstErr = err })
					continue
				}
				sent.Add(int64(len(b)))
			}
		}()
	}
	bar := newProgress(stderr, *events)
	done, drawn := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(drawn)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				bar.show(int(sent.Load()))
			}
		}
	}()
	for {
		b := g.Next(nil, 1000)
		if len(b) == 0 {
			break
		}
		batches <- b
	}
	close(batches)
	wg.Wait()
	close(done)
	<-drawn // the drawing goroutine has stopped writing
	if firstErr == nil {
		// Done: the workload drops the few events it would date after
		// now, so the bar ends at what was sent, at 100 %.
		bar.total = max(int(sent.Load()), 1)
	}
	bar.show(int(sent.Load()))
	bar.finish()
	if firstErr != nil {
		return firstErr
	}
	fmt.Fprintf(stdout, "seeded %d events for %d proxies of %d users over %d days\n", sent.Load(), *proxies, *users, *days)
	fmt.Fprintf(stdout, "tiers from %s:", tierFrom.Format("2006-01-02"))
	for i := range *users {
		fmt.Fprintf(stdout, " %s %s", workload.UserID(i), seedTier(i))
		if i < *users-1 {
			fmt.Fprint(stdout, ",")
		}
	}
	fmt.Fprintf(stdout, " (enterprise contract: %s)\n", seedContract)
	paid := workload.UserID(min(1, *users-1))
	fmt.Fprintf(stdout, "try:\n  bin/proxyusage report -token $(bin/proxyusage token -sub %s) -start %s -group-by proxy\n  bin/proxyusage bill -token $(bin/proxyusage token -sub %s)\n",
		workload.UserID(0), now.AddDate(0, 0, -*days).Format("2006-01-02"), paid)
	return nil
}

// seedTier is the tier seed gives user i: free, premium and enterprise in
// turn, so bills show each plan.
func seedTier(i int) string {
	return [...]string{"free", "premium", "enterprise"}[i%3]
}

// seedContract is the enterprise contract seed sets.
const seedContract = `{"baseMonthly":"500.00","perGB":"0.005","currency":"USD"}`

// progress draws a one-line progress bar with the rate.
type progress struct {
	w     io.Writer
	total int
	start time.Time
}

func newProgress(w io.Writer, total int) *progress {
	return &progress{w: w, total: max(total, 1), start: time.Now()}
}

func (p *progress) show(done int) {
	const width = 30
	frac := min(float64(done)/float64(p.total), 1)
	filled := int(frac * width)
	rate := float64(done) / max(time.Since(p.start).Seconds(), 0.001)
	fmt.Fprintf(p.w, "\r[%s%s] %3.0f%% %d/%d events  %.0f events/s ", strings.Repeat("=", filled),
		strings.Repeat(" ", width-filled), frac*100, done, p.total, rate)
}

func (p *progress) finish() { fmt.Fprintln(p.w) }
