package bench

import (
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/bench/load"
)

// BenchmarkExpiry measures, at the client, when each of N sockets is
// closed relative to its token's exp. The sockets connect with long-lived
// tokens and then `refresh` to tokens whose exps are spread over three
// whole seconds from two seconds on, so a slow connect never eats into the
// schedule. One op is one round of N expiries.
func BenchmarkExpiry(b *testing.B) {
	for _, n := range []int{9000} {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			var lateness, probe *load.Hist
			var early int64
			for range b.N {
				lateness, probe, early = expiryRound(b, n)
			}
			b.ReportMetric(lateness.Quantile(50), "p50-ms")
			b.ReportMetric(lateness.Quantile(99), "p99-ms")
			b.ReportMetric(lateness.MaxMs(), "max-ms")
			b.ReportMetric(float64(early), "early")
			// Messages between two other sockets while the sockets close:
			// the closing must not stall other traffic.
			b.ReportMetric(probe.Quantile(99), "other-traffic-p99-ms")
		})
	}
}

// expiryRound returns the lateness of n sockets' closes, the latency of
// other traffic meanwhile, and how many closed early.
func expiryRound(b *testing.B, n int) (*load.Hist, *load.Hist, int64) {
	s := newServer(b)
	defer s.close()
	const spread = 3
	lateness := load.NewHist()
	exps := make([]atomic.Int64, n) // unix seconds, by socket
	var mu sync.Mutex
	var early, wrongCode, closed, refreshed atomic.Int64
	done := make(chan struct{})
	allRefreshed := make(chan struct{})
	ev := &load.Events{
		Frame: func(c *load.Conn, typ string, frame []byte) {
			switch typ {
			case "refreshed":
				if refreshed.Add(1) == int64(n) {
					close(allRefreshed)
				}
			case "error":
				if code := load.ErrorCode(frame); code != "token_expired" {
					b.Errorf("socket %d: error frame %s", c.ID, frame)
				}
			}
		},
		Closed: func(c *load.Conn, code uint16, at time.Time) {
			if told := c.ToldExpired(); !told.IsZero() {
				at = told // see load.Conn.ToldExpired
			}
			exp := time.Unix(exps[c.ID].Load(), 0)
			if at.Before(exp) {
				early.Add(1)
			}
			if code != 4001 {
				wrongCode.Add(1)
			}
			mu.Lock()
			lateness.Record(at.Sub(exp))
			mu.Unlock()
			if closed.Add(1) == int64(n) {
				close(done)
			}
		},
	}
	d := &load.Dialer{URL: s.url, SourceIPs: sourceIPs, LingerExpired: 500 * time.Millisecond}
	conns := dialAll(b, d, mint(b, n, 8, time.Hour), 32, ev)
	defer closeAll(conns)

	base := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	for i, c := range conns {
		exp := base.Add(time.Duration(i%spread) * time.Second)
		tok, err := load.Mint(secret, load.UserName("bench", i%8), exp)
		if err != nil {
			b.Fatal(err)
		}
		exps[i].Store(exp.Unix())
		if err := c.Write([]byte(`{"type":"refresh","token":"` + tok + `"}`)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-allRefreshed:
	case <-time.After(time.Until(base)):
		b.Fatalf("%d of %d sockets refreshed before the first exp", refreshed.Load(), n)
	}
	// BENCH_EXPIRY_CPUPROFILE=FILE profiles the closing only, not the
	// connecting before it.
	if path := os.Getenv("BENCH_EXPIRY_CPUPROFILE"); path != "" {
		sleepUntil(base.Add(-50 * time.Millisecond))
		stop := startCPUProfile(b, path)
		defer stop()
	}
	finishProbe := startProbe(b, s.url)
	select {
	case <-done:
	case <-time.After(time.Until(base) + (spread+10)*time.Second):
		b.Fatalf("%d of %d sockets closed by 10s after the last exp", closed.Load(), n)
	}
	if early.Load() > 0 {
		b.Errorf("%d sockets closed before their exp", early.Load())
	}
	if wrongCode.Load() > 0 {
		b.Errorf("%d sockets closed with a code other than 4001", wrongCode.Load())
	}
	return lateness, finishProbe(), early.Load()
}
