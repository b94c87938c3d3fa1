package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// idleStatus is what the idle-connection attacker reports, one JSON line
// every 200 ms and a last one when it stops.
type idleStatus struct {
	Open, Peak, Opened, Attempted, DialFails, ClosedByService int64
	Done                                                      bool
}

// idleConnections is (8c): the attacker keeps opt.idleConns connections
// open, each after one /healthz request; one the service closes is opened
// again after a backoff (1 s, doubling up to 30 s, as persistent clients
// do). It runs in a process of its own (this binary, -idle-attacker), as
// an attacker does: in this one, its thousands of goroutines and their
// garbage collection would delay the victim's client and count as the
// service's latency.
func idleConnections(ctx context.Context, f *fairness) (func() string, error) {
	n := f.b.opt.idleConns
	if limit := openFileLimit(); limit < uint64(n)+1000 {
		return nil, fmt.Errorf("holding %d connections needs %d open files; the hard limit is %d (ulimit -Hn)", n, n+1000, limit)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "-idle-attacker", f.hostPort(), "-idle-conns", fmt.Sprint(n))
	cmd.Stderr = os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	f.b.attackerPID.Store(int64(cmd.Process.Pid))
	var mu sync.Mutex
	var last idleStatus
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var st idleStatus
			if json.Unmarshal(sc.Bytes(), &st) == nil {
				mu.Lock()
				last = st
				mu.Unlock()
			}
		}
	}()
	status := func() idleStatus {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
	t0 := time.Now()
	for status().Attempted < int64(n) && time.Since(t0) < 60*time.Second && ctx.Err() == nil {
		progress("attacker: %s connections open, %s attempted", count(int(status().Open)), count(int(status().Attempted)))
		time.Sleep(200 * time.Millisecond)
	}
	endProgress()
	setup := time.Since(t0)
	return func() string {
		atEnd := status().Open
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-read
		_ = cmd.Wait()
		f.b.attackerPID.Store(0)
		st := status()
		return fmt.Sprintf("%s connections from a process of their own, each sending `GET /healthz` once and then nothing, reopened when the service closes one after a backoff of 1 s doubling up to 30 s; all first attempts made in %.1f s; open on the attacker's side at the end %s (at most %s; connected but not yet accepted ones count), %s opened in all, %s closed by the service, %s dials failed",
			count(n), setup.Seconds(), count(int(atEnd)), count(int(st.Peak)), count(int(st.Opened)), count(int(st.ClosedByService)), count(int(st.DialFails)))
	}, nil
}

// runIdleAttacker is the attacker process of (8c) (bench -idle-attacker
// addr -idle-conns n): it holds n connections to addr until SIGTERM,
// reporting idleStatus lines on stdout.
func runIdleAttacker(addr string, n int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	raiseOpenFileLimit()
	var open, peak, opened, dialFails, closedByService, attempted atomic.Int64
	status := func(done bool) {
		b, _ := json.Marshal(idleStatus{open.Load(), peak.Load(), opened.Load(), attempted.Load(), dialFails.Load(), closedByService.Load(), done})
		fmt.Println(string(b))
	}
	dialers := make(chan struct{}, 64)
	var wg sync.WaitGroup
	req := "GET /healthz HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first, backoff := true, time.Second
			for ctx.Err() == nil {
				dialers <- struct{}{}
				d := net.Dialer{Timeout: 5 * time.Second}
				c, err := d.DialContext(ctx, "tcp", addr)
				<-dialers
				if first {
					first = false
					attempted.Add(1)
				}
				if err != nil {
					if ctx.Err() == nil {
						dialFails.Add(1)
						sleep(ctx, time.Second)
					}
					continue
				}
				opened.Add(1)
				cur := open.Add(1)
				for p := peak.Load(); cur > p && !peak.CompareAndSwap(p, cur); p = peak.Load() {
				}
				stopClose := context.AfterFunc(ctx, func() { c.Close() })
				if _, err := io.WriteString(c, req); err == nil {
					_, _ = io.Copy(io.Discard, c) // the answer, then nothing until the service closes it
				}
				stopClose()
				c.Close()
				open.Add(-1)
				if ctx.Err() == nil {
					closedByService.Add(1)
					sleep(ctx, backoff)
					backoff = min(2*backoff, 30*time.Second)
				}
			}
		}()
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		status(false)
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	wg.Wait()
	status(true)
}
