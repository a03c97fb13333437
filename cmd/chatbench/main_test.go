package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/chatd/chatd/bench/load"
	"github.com/chatd/chatd/broker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// TestMain lets the test binary serve as chatbench's worker process, since
// --procs re-executes os.Executable().
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == workerCommand {
		if err := runWorkerProcess(os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString("worker: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const testSecret = "chatbench-test-secret-0123456789abcdef"

// startChatd serves what chatd serves (authn, /ws, /metrics) on
// 127.0.0.1, as cmd/chatd wires it, and returns the /ws URL.
func startChatd(t *testing.T) string {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "chatd.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	revoked, err := authn.NewRevocations(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := authn.NewTokens(authn.TokenConfig{Secret: []byte(testSecret), Revoked: revoked})
	if err != nil {
		t.Fatal(err)
	}
	users, err := authn.NewUsers(db, 4) // bcrypt.MinCost
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	b := broker.New(broker.Options{
		Verifier: tokens, History: broker.NewMemoryHistory(100, 0), RateLimit: 100000,
		Log: zerolog.Nop(), Metrics: reg,
	})
	auth := authn.NewService(users, tokens, revoked, authn.ServiceConfig{OpenRegistration: true, OnRevoke: b.Revoke, Log: zerolog.Nop()})
	mux := http.NewServeMux()
	auth.Register(mux)
	mux.Handle("/ws", b)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		b.Close()
		srv.CloseClientConnections()
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

// runJSON runs chatbench with args plus --json and decodes its summary.
func runJSON(t *testing.T, wantCode int, args ...string) *summary {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, append(args, "--json"), &stdout, &stderr)
	if code != wantCode {
		t.Fatalf("chatbench %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, stdout.String(), stderr.String())
	}
	var s summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("chatbench %s: output is not one JSON object: %v\n%s", args[0], err, stdout.String())
	}
	return &s
}

func TestCommands(t *testing.T) {
	url := startChatd(t)
	common := []string{"--url", url, "--secret", testSecret, "--quiet"}

	t.Run("connect", func(t *testing.T) {
		s := runJSON(t, 0, append([]string{"connect", "--sockets", "60", "--concurrency", "8"}, common...)...)
		if s.Connected != 60 || !s.OK || s.Handshake.PerSecond <= 0 {
			t.Errorf("connect: %+v", s)
		}
		if s.Server == nil || s.Server.RSSAfter <= 0 {
			t.Errorf("connect: no server memory from /metrics: %+v", s.Server)
		}
		if runtime.GOOS == "linux" && (s.Steal == nil || len(s.Steal.PercentByCPU) == 0) {
			t.Errorf("connect: no CPU steal from /proc/stat: %+v", s.Steal)
		}
	})

	t.Run("fanout", func(t *testing.T) {
		s := runJSON(t, 0, append([]string{"fanout", "--sockets", "40", "--senders", "2", "--duration", "700ms", "--warmup", "200ms"}, common...)...)
		if s.Messages == nil || s.Messages.Delivered == 0 || s.Messages.DeliveriesPerSecond <= 0 || s.Messages.P99 <= 0 {
			t.Errorf("fanout: %+v", s.Messages)
		}
		if !s.OK {
			t.Errorf("fanout problems: %v", s.Problems)
		}
	})

	t.Run("paced-login-procs", func(t *testing.T) {
		plot := filepath.Join(t.TempDir(), "paced.png")
		s := runJSON(t, 0, "paced", "--url", url, "--login", "--users", "2", "--quiet",
			"--sockets", "30", "--procs", "2", "--rate", "40", "--duration", "1s", "--plot", plot)
		if s.Procs != 2 || s.Connected != 30 {
			t.Errorf("paced: %d sockets in %d processes", s.Connected, s.Procs)
		}
		if m := s.Messages; m == nil || m.Sent != 40 || m.Lost != 0 || m.Expected != 40*30 {
			t.Errorf("paced: %+v", s.Messages)
		}
		if info, err := os.Stat(plot); err != nil || info.Size() == 0 {
			t.Errorf("no plot: %v", err)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		s := runJSON(t, 0, append([]string{"expiry", "--sockets", "40", "--spread", "2s", "--margin", "1s"}, common...)...)
		if e := s.Expiry; e == nil || e.Expired != 40 || e.Early != 0 || e.StillOpen != 0 {
			t.Errorf("expiry: %+v", s.Expiry)
		}
	})

	t.Run("soak", func(t *testing.T) {
		s := runJSON(t, 0, append([]string{"soak", "--sockets", "30", "--rate", "20", "--churn", "10", "--duration", "1500ms"}, common...)...)
		if s.Reconnects == 0 || s.Messages == nil || s.Messages.Delivered == 0 || len(s.Timeline) == 0 {
			t.Errorf("soak: reconnects %d, messages %+v, %d timeline points", s.Reconnects, s.Messages, len(s.Timeline))
		}
	})
}

func TestTable(t *testing.T) {
	url := startChatd(t)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"paced", "--url", url, "--secret", testSecret,
		"--sockets", "10", "--rate", "20", "--duration", "500ms"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"deliveries/s", "latency p50/p90/p99", "lost", "0 of 100"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "connecting") {
		t.Errorf("no progress bar on stderr: %q", stderr.String())
	}
}

func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"fanout", "--url", "ws://10.1.2.3:3000/ws", "--secret", testSecret}, "not on this machine"},
		{[]string{"fanout", "--source-ips", "10.0.0.1-10.0.0.3", "--secret", testSecret}, "not a loopback address"},
		{[]string{"fanout"}, "--secret"},
		{[]string{"fanout", "--secret", "short"}, "shorter than 32"},
		{[]string{"connect", "--secret", testSecret, "--sockets", "40000"}, "--procs 3"},
		{[]string{"blast"}, "unknown command"},
		{[]string{"connect", "--secret", testSecret, "--sockets", "0"}, "--sockets must be at least 1"},
		{[]string{"fanout", "--secret", testSecret, "--duration", "5"}, "durations take a unit"},
		{[]string{"fanout", "--secret", testSecret, "--senders", "0"}, "--senders must be at least 1"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), tc.args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr %q lacks %q", tc.args, stderr.String(), tc.want)
		}
	}
	// A bad flag's error is not buried under the list of every flag; no
	// error names a flag that was not given.
	var out bytes.Buffer
	run(context.Background(), []string{"fanout", "--secret", testSecret, "--duration", "5"}, &out, &out)
	if strings.Contains(out.String(), "-window") {
		t.Errorf("a bad flag value printed the flag list:\n%s", out.String())
	}
	out.Reset()
	run(context.Background(), []string{"connect", "--secret", testSecret, "--sockets", "0"}, &out, &out)
	if strings.Contains(out.String(), "--senders") {
		t.Errorf("--sockets 0 blamed --senders: %s", out.String())
	}
	out.Reset()
	t.Setenv("CHATBENCH_SECRET", testSecret)
	run(context.Background(), []string{"paced", "--login"}, &out, &out)
	if !strings.Contains(out.String(), "CHATBENCH_SECRET is set") {
		t.Errorf("--login with CHATBENCH_SECRET set: %s", out.String())
	}

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &stdout, &stderr); code != 0 ||
		!strings.Contains(stderr.String(), "Commands:") || !strings.Contains(stderr.String(), "-rate-limit 100000") {
		t.Errorf("--help: exit %d, %q", code, stderr.String())
	}
}

// A run in which no socket connects stops after the connect phase and says
// what is likely wrong, instead of running its whole length on nothing.
func TestNoSocketConnectedFailsFast(t *testing.T) {
	url := startChatd(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "ws://" + ln.Addr().String() + "/ws"
	ln.Close()
	for _, tc := range []struct {
		name, url, secret, procs, want string
	}{
		{"a wrong secret", url, strings.Repeat("w", 32), "1", "--jwt-secret"},
		{"no chatd there", closed, testSecret, "1", "is chatd running"},
		{"no chatd there, two processes", closed, testSecret, "2", "connection refused: 20"}, // both workers' errors, merged
	} {
		var stdout, stderr bytes.Buffer
		start := time.Now()
		code := run(context.Background(), []string{"fanout", "--url", tc.url, "--secret", tc.secret, "--sockets", "20", "--procs", tc.procs, "--duration", "30s", "--quiet"}, &stdout, &stderr)
		if code == 0 || strings.Count(stderr.String(), "no socket connected") != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want one failure naming %q", tc.name, code, stderr.String(), tc.want)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("%s: took %v, the whole run's length", tc.name, d)
		}
	}
}

// Memory figures that cannot be trusted are qualified, not failed: a
// server whose memory shrank (it had served earlier runs), or one whose
// /metrics could not be read.
func TestMemoryNotes(t *testing.T) {
	o := &options{cmd: "connect", sockets: 10, procs: 1, clock: "arrival"}
	r := &result{Connected: 10, Handshake: load.NewHist(), Latency: load.NewHist(), Lateness: load.NewHist(), LateRead: load.NewHist()}
	for name, mem := range map[string]serverMemory{
		"shrank":     {RSS: 50 << 20, Heap: 20 << 20, after: &serverMemory{RSS: 40 << 20, Heap: 19 << 20}},
		"no metrics": {err: errors.New("connection refused")},
	} {
		s := summarize(o, []*result{r}, mem)
		if !s.OK || len(s.Notes) != 1 {
			t.Errorf("%s: ok %v, notes %q; want ok with one note", name, s.OK, s.Notes)
		}
	}
	shrank := summarize(o, []*result{r}, serverMemory{RSS: 50 << 20, Heap: 20 << 20, after: &serverMemory{RSS: 40 << 20, Heap: 21 << 20}})
	if shrank.Server.RSSPerSocket != 0 || shrank.Server.HeapPerSocket <= 0 || !strings.Contains(shrank.Notes[0], "RSS did not grow") {
		t.Errorf("RSS fell, heap grew: RSS %v, heap %v per socket, notes %q; want RSS left out, heap kept, a note naming RSS",
			shrank.Server.RSSPerSocket, shrank.Server.HeapPerSocket, shrank.Notes)
	}
	grew := summarize(o, []*result{r}, serverMemory{RSS: 50 << 20, Heap: 20 << 20, after: &serverMemory{RSS: 51 << 20, Heap: 21 << 20}})
	if len(grew.Notes) != 0 || grew.Server.RSSPerSocket <= 0 {
		t.Errorf("a server that grew: notes %q, RSS per socket %v", grew.Notes, grew.Server.RSSPerSocket)
	}
}
