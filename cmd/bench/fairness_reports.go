package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// (8b) A tenant with many proxies keeps connections waiting for the rollup
// worker (a round of connection_starts every few seconds) and runs
// concurrent year-long reports back to back: the read path recomputes the
// peaks of every day those connections cover, which must cost the days
// they cover, not pending connections × days.
const (
	reportAttackClients = 4
	reportAttackUser    = "mallory-reports"
)

// reportAttackProxies is the attacker's proxy count: 20,000 (2,000 at
// quick sizes).
func reportAttackProxies(f *fairness) int {
	if f.b.opt.quick {
		return 2_000
	}
	return 20_000
}

// prepareYearReports registers the attacker's proxies straight in the
// database, before the service starts.
func prepareYearReports(ctx context.Context, f *fairness) error {
	if _, err := f.pool.Exec(ctx, `INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING`, reportAttackUser); err != nil {
		return err
	}
	_, err := f.pool.Exec(ctx, `
		INSERT INTO proxies (id, user_id) SELECT 'mr-' || i, $1 FROM generate_series(1, $2) i
		ON CONFLICT DO NOTHING`, reportAttackUser, reportAttackProxies(f))
	return err
}

// yearReports starts the attack: one goroutine opening a new connection on
// half of the attacker's proxies every 3 s, and reportAttackClients
// clients asking for the 365 days to today, grouped by day, back to back.
func yearReports(ctx context.Context, f *fairness) (func() string, error) {
	tok, err := f.token(reportAttackUser)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	client := &http.Client{Timeout: 60 * time.Second}
	post := func(round int) error {
		var body strings.Builder
		ts := time.Now().UTC().Add(-4 * time.Hour).Format(time.RFC3339)
		body.WriteString(`{"events":[`)
		for i := range reportAttackProxies(f) / 2 {
			if i > 0 {
				body.WriteByte(',')
			}
			p := 1 + i*2 + round%2
			fmt.Fprintf(&body, `{"proxyId":"mr-%d","eventId":"s%d","timestamp":%q,"eventType":"connection_start","eventData":{"connectionId":"c%d"}}`, p, round, ts, round)
		}
		body.WriteString(`]}`)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/proxy/usage/events", strings.NewReader(body.String()))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			return fmt.Errorf("attacker batch: %d", resp.StatusCode)
		}
		return nil
	}
	// The first round is in place before the reports start.
	if err := post(0); err != nil {
		cancel()
		return nil, err
	}

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		took     []time.Duration
		statuses = map[string]int{}
		rounds   = 1
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for round := 1; ; round++ {
			sleep(ctx, 3*time.Second)
			if ctx.Err() != nil || post(round) != nil {
				return
			}
			mu.Lock()
			rounds++
			mu.Unlock()
		}
	}()
	path := fmt.Sprintf("/proxy/usage/report?startDate=%s&endDate=%s&groupBy=day",
		f.today.AddDate(0, 0, -364).Format("2006-01-02"), f.today.Format("2006-01-02"))
	for range reportAttackClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url+path, nil)
				if err != nil {
					return
				}
				req.Header.Set("Authorization", "Bearer "+tok)
				began := time.Now()
				resp, err := client.Do(req)
				status := "error"
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = fmt.Sprint(resp.StatusCode)
				}
				if ctx.Err() != nil {
					return // cut by the end of the attack, not answered
				}
				mu.Lock()
				took = append(took, time.Since(began))
				statuses[status]++
				mu.Unlock()
			}
		}()
	}
	return func() string {
		cancel()
		wg.Wait()
		var answered []string
		for s, n := range statuses {
			answered = append(answered, fmt.Sprintf("%s × %d", s, n))
		}
		if len(answered) == 0 {
			answered = []string{"none"}
		}
		return fmt.Sprintf("a user with %s proxies opened a connection on half of them every 3 s (%d rounds of %s `connection_start`s, so pairings always wait for the worker) while %d clients asked for its 365-day report by day back to back: answers %s, each taking p50 %s, max %s",
			count(reportAttackProxies(f)), rounds, count(reportAttackProxies(f)/2), reportAttackClients,
			strings.Join(answered, ", "), ms(quantile(took, 0.5)), ms(quantile(took, 1)))
	}, nil
}
