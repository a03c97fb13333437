package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/chatd/chatd/bench/load"
	"github.com/chatd/chatd/broker"
	"github.com/rs/zerolog"
)

var secret = []byte("bench-secret-0123456789abcdef-0123456789")

// server is a broker behind a real HTTP server on 127.0.0.1, configured
// for load: no per-socket rate limit to speak of and history in memory.
type server struct {
	broker *broker.Broker
	srv    *httptest.Server
	url    string // ws://127.0.0.1:port/ws
}

func newServer(tb testing.TB) *server {
	tb.Helper()
	tokens, err := authn.NewTokens(authn.TokenConfig{Secret: secret})
	if err != nil {
		tb.Fatal(err)
	}
	b := broker.New(broker.Options{
		Verifier:  tokens,
		History:   broker.NewMemoryHistory(1000, 0),
		RateLimit: 1e6,
		Log:       zerolog.Nop(),
	})
	// Served as chatd serves it: upgrades through broker.Listener.
	srv := httptest.NewUnstartedServer(b)
	srv.Listener = broker.NewListener(srv.Listener, b, 5*time.Second, zerolog.Nop())
	srv.Start()
	s := &server{broker: b, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"}
	tb.Cleanup(s.close)
	return s
}

func (s *server) close() {
	s.broker.Close()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// sourceIPs spreads client sockets over 127.0.0.1-8 so that repeated runs
// never run out of ephemeral ports (sockets in TIME_WAIT hold theirs).
var sourceIPs, _ = load.ParseIPRange("127.0.0.1-127.0.0.8")

// mint returns n tokens for users bench0..bench(users-1), valid for ttl.
func mint(tb testing.TB, n, users int, ttl time.Duration) []string {
	tb.Helper()
	exp := time.Now().Add(ttl)
	out := make([]string, n)
	for i := range out {
		if i < users {
			t, err := load.Mint(secret, load.UserName("bench", i), exp)
			if err != nil {
				tb.Fatal(err)
			}
			out[i] = t
		} else {
			out[i] = out[i%users]
		}
	}
	return out
}

// dialAll opens len(tokens) sockets, concurrency at a time.
func dialAll(tb testing.TB, d *load.Dialer, tokens []string, concurrency int, ev *load.Events) []*load.Conn {
	tb.Helper()
	conns := make([]*load.Conn, len(tokens))
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(tokens) || failed.Load() != nil {
					return
				}
				c, err := d.Dial(tokens[i], i, i, ev)
				if err != nil {
					err = fmt.Errorf("socket %d: %w", i, err)
					failed.CompareAndSwap(nil, &err)
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	if p := failed.Load(); p != nil {
		tb.Fatal(*p)
	}
	return conns
}

func closeAll(conns []*load.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Abort()
		}
	}
}

// BenchmarkHandshake measures authenticated upgrades: each op dials,
// presents a token the server verifies, gets the 101 and then the welcome
// frame, and drops the connection.
func BenchmarkHandshake(b *testing.B) {
	s := newServer(b)
	tokens := mint(b, 64, 64, time.Hour)
	d := &load.Dialer{URL: s.url, SourceIPs: sourceIPs}
	hist := load.NewHist()
	var mu sync.Mutex
	var next atomic.Int64
	var failures atomic.Int64
	concurrency := 16 * runtime.GOMAXPROCS(0)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := load.NewHist()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				c, err := d.Dial(tokens[w%len(tokens)], w, w, nil)
				if err != nil {
					failures.Add(1)
					b.Error(err)
					return
				}
				local.Record(time.Since(t0))
				c.Abort()
			}
			mu.Lock()
			hist.Merge(local)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "handshakes/s")
	b.ReportMetric(hist.Quantile(50), "p50-ms")
	b.ReportMetric(hist.Quantile(99), "p99-ms")
}

// fanoutEnv is N sockets in room general, four of them senders.
type fanoutEnv struct {
	srv     *server
	conns   []*load.Conn
	senders []*load.Sender
	rec     *load.Recorder
}

const (
	fanoutSenders = 4
	fanoutWindow  = 4
	fanoutSize    = 64
)

func newFanoutEnv(b *testing.B, n int) *fanoutEnv {
	e := &fanoutEnv{srv: newServer(b), rec: load.NewRecorder()}
	ev := &load.Events{
		Message: e.rec.Message,
		Frame: func(c *load.Conn, typ string, frame []byte) {
			if s := c.Sender(); typ == "error" && s != nil {
				s.Refuse()
			}
		},
	}
	// Few users: presence is per user, so thousands of sockets of a
	// handful of users join without a presence storm.
	tokens := mint(b, n, 8, time.Hour)
	d := &load.Dialer{URL: e.srv.url, SourceIPs: sourceIPs, ReadBufferSize: 4096}
	e.conns = dialAll(b, d, tokens, 32, ev)
	for i := range fanoutSenders {
		c := e.conns[i*n/fanoutSenders]
		e.senders = append(e.senders, load.NewSender(c, i, fanoutWindow, fanoutSize, "general"))
	}
	// Joins (and their presence frames) settle before the clock starts.
	waitFor(b, 10*time.Second, func() bool { return e.srv.broker.Sockets() == n })
	return e
}

func (e *fanoutEnv) close() {
	closeAll(e.conns)
	e.srv.close()
}

// BenchmarkFanout measures one room of N sockets under four saturating
// senders with four 64-byte messages in flight each. One op is one message
// delivered to all N members (the sender included).
func BenchmarkFanout(b *testing.B) {
	envs := map[int]*fanoutEnv{}
	b.Cleanup(func() {
		for _, e := range envs {
			e.close()
		}
	})
	for _, n := range []int{100, 1000, 5000} {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			e := envs[n]
			if e == nil {
				for k, old := range envs { // free the fds of the last size
					old.close()
					delete(envs, k)
				}
				e = newFanoutEnv(b, n)
				envs[n] = e
			}
			e.run(b, n)
		})
	}
}

func (e *fanoutEnv) run(b *testing.B, n int) {
	e.rec.Reset()
	want := int64(b.N) * int64(n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, s := range e.senders {
		count := int64(b.N / len(e.senders))
		if i < b.N%len(e.senders) {
			count++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Saturate(ctx, count); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for e.rec.Delivered() < want && time.Now().Before(deadline) {
		time.Sleep(200 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	got := e.rec.Delivered()
	if got < want {
		b.Fatalf("%d of %d deliveries arrived within 30s of the last send", got, want)
	}
	for _, s := range e.senders {
		if s.Refused.Load() > 0 || s.Stalls.Load() > 0 {
			b.Fatalf("sender %d: %d refused, %d stalled", s.Index, s.Refused.Load(), s.Stalls.Load())
		}
	}
	lat := e.rec.Latency()
	b.ReportMetric(float64(got)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(lat.Quantile(50), "p50-ms")
	b.ReportMetric(lat.Quantile(99), "p99-ms")
}

func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

// startCPUProfile writes a CPU profile to path until the returned func runs.
func startCPUProfile(b *testing.B, path string) func() {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// waitFor polls cond until it holds, failing b after d.
func waitFor(tb testing.TB, d time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal(errors.New("condition not met within " + d.String()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
