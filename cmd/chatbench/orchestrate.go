package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chatd/chatd/bench/load"
	"github.com/schollz/progressbar/v3"
)

// workerCommand is the hidden first argument of a worker process.
const workerCommand = "__worker"

// maxSocketsPerProcess keeps one process under a 20,000 open-files limit
// with room to spare.
const maxSocketsPerProcess = 15000

type options struct {
	cmd string
	set map[string]bool // flags given on the command line

	url         string
	secret      string
	secretFile  string
	login       bool
	password    string
	users       int
	userPrefix  string
	sockets     int
	procs       int
	concurrency int
	sourceIPs   string
	duration    time.Duration
	warmup      time.Duration
	hold        time.Duration
	settle      time.Duration
	spread      time.Duration
	margin      time.Duration
	leeway      time.Duration
	linger      time.Duration
	limit       time.Duration
	senders     int
	window      int
	size        int
	rate        float64
	churn       float64
	room        string
	readBuffer  int
	clock       string
	json        bool
	plot        string
	quiet       bool
	allowRemote bool
	noMetrics   bool
	cpuProfile  string

	ips []string
}

func newFlags(cmd string) (*flag.FlagSet, *options) {
	o := &options{}
	fs := flag.NewFlagSet("chatbench "+cmd, flag.ContinueOnError)
	fs.StringVar(&o.url, "url", "ws://127.0.0.1:3000/ws", "chatd's WebSocket URL")
	fs.StringVar(&o.secret, "secret", "", "the server's --jwt-secret: mint tokens locally (also CHATBENCH_SECRET)")
	fs.StringVar(&o.secretFile, "secret-file", "", "read the secret from this file (first line)")
	fs.BoolVar(&o.login, "login", false, "get tokens from POST /auth, registering the users as needed")
	fs.StringVar(&o.password, "password", "chatbench-password", "password of the load users with --login")
	fs.IntVar(&o.users, "users", 8, "distinct users the sockets belong to (presence is per user)")
	fs.StringVar(&o.userPrefix, "user-prefix", "load", "load users are named PREFIX0, PREFIX1, ...")
	fs.IntVar(&o.sockets, "sockets", 1000, "sockets to open in all")
	fs.IntVar(&o.procs, "procs", 1, "worker processes to spread the sockets over")
	fs.IntVar(&o.concurrency, "concurrency", 64, "dials in flight per process")
	fs.StringVar(&o.sourceIPs, "source-ips", "", "local addresses to dial from, e.g. 127.0.0.2-127.0.0.9")
	fs.DurationVar(&o.duration, "duration", 0, "how long the load runs (fanout, paced: 10s; soak: 1m)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "fanout: load before the measured window")
	fs.DurationVar(&o.hold, "hold", 0, "connect: keep the sockets open this long")
	fs.DurationVar(&o.settle, "settle", time.Second, "connect: wait this long with every socket open before reading the server's memory\n(130s includes the Go runtime's forced GC every 2 minutes: the idle steady state)")
	fs.DurationVar(&o.spread, "spread", 3*time.Second, "expiry: spread the tokens' exp over this long (whole seconds)")
	fs.DurationVar(&o.margin, "margin", 0, "expiry: first exp this long after the start (default: time to connect, estimated)")
	fs.DurationVar(&o.leeway, "leeway", 0, "expiry: the server's --jwt-leeway (sockets close at exp + leeway)")
	fs.DurationVar(&o.linger, "linger", 500*time.Millisecond, "expiry: how long a socket waits after token_expired before answering the close\n(0: at once; then each socket's close handshake delays the next one's read on this one core)")
	fs.DurationVar(&o.limit, "limit", 0, "hard stop for the whole run (default: the run's length plus 2m)")
	fs.IntVar(&o.senders, "senders", 0, "sockets that send (fanout: 4; paced, soak: one per 10 msg/s)")
	fs.IntVar(&o.window, "window", 4, "fanout: messages each sender keeps in flight")
	fs.IntVar(&o.size, "size", 64, "bytes of chat text per message (at least 24)")
	fs.Float64Var(&o.rate, "rate", 100, "paced, soak: messages per second into the room, in all")
	fs.Float64Var(&o.churn, "churn", 0, "soak: sockets per second closed and reopened")
	fs.StringVar(&o.room, "room", "general", "the room the senders send to")
	fs.IntVar(&o.readBuffer, "read-buffer", 0, "read buffer per socket (default: fanout 4096, else 1024)")
	fs.StringVar(&o.clock, "clock", "arrival", "when a frame counts as delivered: arrival (the kernel's receive timestamp, leaving out\nthis process's own queueing) or read (when chatbench gets to it)")
	fs.BoolVar(&o.json, "json", false, "print one JSON object instead of a table")
	fs.StringVar(&o.plot, "plot", "", "draw deliveries/s and p50/p99 latency over time into this PNG")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress bar")
	fs.BoolVar(&o.allowRemote, "allow-remote", false, "allow a target that is not on this machine (127.0.0.0/8, ::1)")
	fs.BoolVar(&o.noMetrics, "no-metrics", false, "do not read the server's /metrics for its memory")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write chatbench's own CPU profile here (with --procs 1), to tell a slow client from a slow server")
	return fs, o
}

// finish fills defaults and checks the options.
func (o *options) finish() error {
	if o.duration == 0 {
		o.duration = 10 * time.Second
		if o.cmd == "soak" {
			o.duration = time.Minute
		}
	}
	if o.senders == 0 {
		switch o.cmd {
		case "fanout":
			o.senders = 4
		case "paced", "soak":
			o.senders = max(1, int((o.rate+9)/10))
		}
	}
	if o.cmd == "connect" || o.cmd == "expiry" {
		o.senders = 0
	}
	if o.clock != "arrival" && o.clock != "read" {
		return fmt.Errorf("--clock must be arrival or read, not %q", o.clock)
	}
	if o.readBuffer == 0 {
		o.readBuffer = 1024
		if o.cmd == "fanout" {
			o.readBuffer = 4096
		}
	}
	if o.secret == "" {
		o.secret = os.Getenv("CHATBENCH_SECRET")
	}
	if o.secretFile != "" {
		data, err := os.ReadFile(o.secretFile)
		if err != nil {
			return fmt.Errorf("--secret-file: %w", err)
		}
		o.secret = strings.TrimRight(strings.SplitN(string(data), "\n", 2)[0], "\r")
	}
	var errs []error
	switch {
	case o.secret == "" && !o.login:
		errs = append(errs, errors.New("give --secret (the server's --jwt-secret) to mint tokens, or --login to log in"))
	case o.secret != "" && o.login:
		errs = append(errs, errors.New("give --secret or --login, not both"))
	case o.secret != "" && len(o.secret) < 32:
		errs = append(errs, errors.New("--secret is shorter than 32 bytes; chatd refuses such secrets, so it cannot be the server's"))
	}
	if o.sockets < 1 {
		errs = append(errs, errors.New("--sockets must be at least 1"))
	}
	if o.procs < 1 || o.procs > 64 {
		errs = append(errs, errors.New("--procs must be 1-64"))
	}
	if o.procs > o.sockets {
		o.procs = o.sockets
	}
	if per := (o.sockets + o.procs - 1) / max(o.procs, 1); per > maxSocketsPerProcess {
		errs = append(errs, fmt.Errorf("%d sockets in one process pass the open-files limit; use --procs %d or more",
			per, (o.sockets+maxSocketsPerProcess-1)/maxSocketsPerProcess))
	}
	if o.users < 1 {
		errs = append(errs, errors.New("--users must be at least 1"))
	}
	if o.senders > o.sockets {
		errs = append(errs, errors.New("--senders must not pass --sockets"))
	}
	if o.size < 24 || o.size > 4096 {
		errs = append(errs, errors.New("--size must be 24-4096"))
	}
	if o.window < 1 {
		errs = append(errs, errors.New("--window must be at least 1"))
	}
	if (o.cmd == "paced" || o.cmd == "soak") && (o.rate <= 0 || o.rate > 1e6) {
		errs = append(errs, errors.New("--rate must be above 0 and at most 1000000"))
	}
	if o.duration < 0 || o.duration > 24*time.Hour {
		errs = append(errs, errors.New("--duration must be at most 24h"))
	}
	if o.concurrency < 1 || o.concurrency > 4096 {
		errs = append(errs, errors.New("--concurrency must be 1-4096"))
	}
	if o.cmd == "expiry" && o.spread < time.Second {
		o.spread = time.Second
	}
	if o.sourceIPs != "" {
		ips, err := load.ParseIPRange(o.sourceIPs)
		if err != nil {
			errs = append(errs, fmt.Errorf("--source-ips: %w", err))
		}
		for _, ip := range ips {
			if !o.allowRemote && !ip.IsLoopback() {
				errs = append(errs, fmt.Errorf("--source-ips: %s is not a loopback address", ip))
				break
			}
			o.ips = append(o.ips, ip.String())
		}
	}
	if _, err := load.HTTPBase(o.url); err != nil {
		errs = append(errs, fmt.Errorf("--url: %w", err))
	} else if !o.allowRemote {
		local, err := load.Loopback(o.url)
		if err != nil {
			errs = append(errs, fmt.Errorf("--url: %w", err))
		} else if !local {
			errs = append(errs, fmt.Errorf("--url %s is not on this machine; chatbench only loads loopback unless given --allow-remote", o.url))
		}
	}
	if o.limit == 0 {
		o.limit = o.warmup + o.duration + o.hold + o.settle + o.margin + o.spread + 2*time.Minute
		if o.cmd == "connect" || o.cmd == "expiry" {
			o.limit += time.Duration(o.sockets/100) * time.Second // connect time, generously
		}
	}
	return errors.Join(errs...)
}

// tokens returns the tokens the plan hands out: one per user, or for expiry
// with a secret one per socket, their exp spread over o.spread.
func (o *options) tokens(ctx context.Context, stderr io.Writer) ([]string, error) {
	if o.login {
		base, _ := load.HTTPBase(o.url)
		client := &http.Client{Timeout: 30 * time.Second}
		deadline := time.Now().Add(min(o.limit, 5*time.Minute))
		out := make([]string, o.users)
		for i := range out {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			t, exp, err := load.Login(client, base, load.UserName(o.userPrefix, i), o.password, true, deadline)
			if err != nil {
				return nil, err
			}
			if o.cmd == "expiry" && time.Until(exp) > o.limit-30*time.Second {
				return nil, fmt.Errorf("tokens from --login expire in %v, past this run's --limit %v: start chatd with a short --token-ttl (e.g. 30s) for an expiry run, or use --secret",
					time.Until(exp).Round(time.Second), o.limit)
			}
			out[i] = t
		}
		return out, nil
	}
	secret := []byte(o.secret)
	if o.cmd != "expiry" {
		exp := time.Now().Add(o.limit + time.Hour)
		out := make([]string, o.users)
		for i := range out {
			t, err := load.Mint(secret, load.UserName(o.userPrefix, i), exp)
			if err != nil {
				return nil, err
			}
			out[i] = t
		}
		return out, nil
	}
	margin := o.margin
	if margin == 0 {
		// Enough to open every socket at a pessimistic 1,500 a second.
		margin = 3*time.Second + time.Duration(o.sockets)*time.Second/1500
	}
	base := time.Now().Add(margin).Truncate(time.Second).Add(time.Second)
	steps := int(o.spread / time.Second)
	out := make([]string, o.sockets)
	for i := range out {
		t, err := load.Mint(secret, load.UserName(o.userPrefix, i%o.users), base.Add(time.Duration(i%steps)*time.Second))
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	if !o.quiet {
		fmt.Fprintf(stderr, "tokens expire from %s, over %d s\n", base.Format(time.TimeOnly), steps)
	}
	return out, nil
}

// plans splits the run over o.procs workers.
func (o *options) plans(tokens []string) []*plan {
	out := make([]*plan, o.procs)
	for k := range out {
		first := k * o.sockets / o.procs
		out[k] = &plan{
			Cmd: o.cmd, URL: o.url, SourceIPs: o.ips, Worker: k,
			First: first, Count: (k+1)*o.sockets/o.procs - first, Total: o.sockets,
			Tokens: tokens, Senders: o.senders, Window: o.window, Size: o.size, Room: o.room,
			Rate: o.rate, Churn: o.churn / float64(o.procs), Duration: o.duration, Warmup: o.warmup,
			Hold: o.hold, Leeway: o.leeway, Linger: o.linger, Concurrency: o.concurrency, ReadBuffer: o.readBuffer,
			ReadClock: o.clock == "read", Limit: o.limit,
		}
		if o.cmd != "fanout" {
			out[k].Warmup = 0
		}
	}
	return out
}

// runner is one worker: in this process or another.
type runner interface {
	start(at time.Time)
	stop()
}

// localRunner runs a worker on goroutines of this process.
type localRunner struct {
	runs   chan time.Time
	cancel context.CancelFunc
}

func startLocal(ctx context.Context, p *plan, events chan<- event) *localRunner {
	ctx, cancel := context.WithTimeout(ctx, p.Limit)
	r := &localRunner{runs: make(chan time.Time, 1), cancel: cancel}
	go func() {
		w := newWorker(p, func(n int) { events <- event{Worker: p.Worker, Progress: n} })
		defer w.close()
		if err := w.connect(ctx); err != nil {
			events <- event{Worker: p.Worker, Error: err.Error()}
			return
		}
		events <- event{Worker: p.Worker, Ready: true}
		select {
		case at := <-r.runs:
			events <- event{Worker: p.Worker, Result: w.run(ctx, at)}
		case <-ctx.Done():
			events <- event{Worker: p.Worker, Error: "stopped: " + ctx.Err().Error()}
		}
	}()
	return r
}

func (r *localRunner) start(at time.Time) { r.runs <- at }
func (r *localRunner) stop()              { r.cancel() }

// procRunner is a worker process: this executable with the hidden worker
// command, the plan on its stdin, events on its stdout.
type procRunner struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	once  sync.Once
}

func startProc(ctx context.Context, p *plan, events chan<- event, stderr io.Writer) (*procRunner, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe, workerCommand)
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker %d: %w", p.Worker, err)
	}
	r := &procRunner{cmd: cmd, stdin: stdin}
	go func() {
		data, _ := json.Marshal(p)
		_, _ = stdin.Write(append(data, '\n'))
	}()
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		gotResult := false
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				events <- event{Worker: p.Worker, Error: "bad worker output: " + err.Error()}
				continue
			}
			ev.Worker = p.Worker
			gotResult = gotResult || ev.Result != nil
			events <- ev
		}
		err := cmd.Wait()
		if !gotResult {
			msg := "worker exited without a result"
			if err != nil {
				msg += ": " + err.Error()
			}
			events <- event{Worker: p.Worker, Error: msg}
		}
	}()
	return r, nil
}

func (r *procRunner) start(at time.Time) {
	_, _ = fmt.Fprintf(r.stdin, "run %d\n", at.UnixNano())
}

func (r *procRunner) stop() {
	r.once.Do(func() { _ = r.stdin.Close() })
}

// orchestrate runs the whole command and returns the merged summary.
func orchestrate(ctx context.Context, o *options, stderr io.Writer) (*summary, error) {
	// Worker processes and the progress bar share stderr.
	stderr = &lockedWriter{w: stderr}
	ctx, cancel := context.WithTimeout(ctx, o.limit)
	defer cancel()
	tokens, err := o.tokens(ctx, stderr)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	steal := startSteal("/proc/stat")
	defer steal.close()
	base, _ := load.HTTPBase(o.url)
	var memBefore serverMemory
	if !o.noMetrics && (o.cmd == "connect" || o.cmd == "soak") {
		memBefore, _ = scrapeMemory(base)
	}

	events := make(chan event, 1024)
	var runners []runner
	defer func() {
		for _, r := range runners {
			r.stop()
		}
	}()
	for _, p := range o.plans(tokens) {
		if o.procs == 1 {
			runners = append(runners, startLocal(ctx, p, events))
			continue
		}
		r, err := startProc(ctx, p, events, stderr)
		if err != nil {
			return nil, err
		}
		runners = append(runners, r)
	}

	var bar *progressbar.ProgressBar
	if !o.quiet {
		bar = progressbar.NewOptions(o.sockets,
			progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetDescription("connecting"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("sockets"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetWidth(30),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }),
		)
	}
	var probe *load.Probe
	defer func() {
		if probe != nil {
			probe.Stop()
		}
	}()
	ready := 0
	results := make([]*result, 0, len(runners))
	var failures []string
	started := false
	for len(results)+len(failures) < len(runners) {
		var ev event
		select {
		case ev = <-events:
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped: %w (the --limit was %v)", ctx.Err(), o.limit)
		}
		switch {
		case ev.Progress > 0:
			if bar != nil {
				_ = bar.Add(ev.Progress)
			}
		case ev.Ready:
			ready++
		case ev.Result != nil:
			results = append(results, ev.Result)
		case ev.Error != "":
			failures = append(failures, fmt.Sprintf("worker %d: %s", ev.Worker, ev.Error))
		}
		if ready == len(runners) && !started {
			started = true
			if bar != nil {
				_ = bar.Finish()
			}
			var memAfter serverMemory
			if !o.noMetrics && o.cmd == "connect" {
				// Let the server finish its handshake work (and, with a long
				// settle, collect its garbage) before reading.
				sleep(ctx, o.settle)
				memAfter, _ = scrapeMemory(base)
				memBefore.after = &memAfter
			}
			if o.cmd == "expiry" && o.secret != "" {
				probe = o.startProbe(stderr)
			}
			at := time.Now().Add(100 * time.Millisecond)
			if !o.quiet && o.cmd != "connect" {
				fmt.Fprintf(stderr, "%s: running for %v\n", o.cmd, o.warmupFor()+o.runFor())
			}
			for _, r := range runners {
				r.start(at)
			}
		}
		if len(failures) > 0 && !started {
			break
		}
	}
	if len(failures) > 0 {
		return nil, errors.New(strings.Join(failures, "; "))
	}
	if !o.noMetrics && o.cmd == "soak" {
		after, err := scrapeMemory(base)
		if err == nil {
			memBefore.after = &after
		}
	}
	s := summarize(o, results, memBefore)
	s.addSteal(steal.finish())
	if probe != nil && s.Expiry != nil {
		lat := probe.Stop()
		probe = nil
		s.Expiry.Other = &otherTraffic{Messages: lat.Count(), P50: lat.Quantile(50), P99: lat.Quantile(99), Max: lat.MaxMs()}
	}
	return s, nil
}

// startProbe opens two more sockets that chat in a room of their own, a
// message every 5 ms, while the expiry run closes the others: does a burst
// of closes hold other traffic back? It needs --secret (two more tokens).
func (o *options) startProbe(stderr io.Writer) *load.Probe {
	var tokens [2]string
	for i := range tokens {
		t, err := load.Mint([]byte(o.secret), load.UserName(o.userPrefix+"probe-", i), time.Now().Add(o.limit+time.Minute))
		if err != nil {
			fmt.Fprintf(stderr, "probe: %v\n", err)
			return nil
		}
		tokens[i] = t
	}
	p, err := load.StartProbe(&load.Dialer{URL: o.url, ReadClock: o.clock == "read"}, tokens[0], tokens[1], o.userPrefix+"probe", 5*time.Millisecond)
	if err != nil {
		fmt.Fprintf(stderr, "probe: %v\n", err)
		return nil
	}
	return p
}

func (o *options) warmupFor() time.Duration {
	if o.cmd == "fanout" {
		return o.warmup
	}
	return 0
}

func (o *options) runFor() time.Duration {
	switch o.cmd {
	case "connect":
		return o.hold
	case "expiry":
		return o.spread
	}
	return o.duration
}

// serverMemory is what chatd's /metrics says about its memory.
type serverMemory struct {
	RSS   float64 `json:"rss_bytes"`
	Heap  float64 `json:"heap_inuse_bytes"`
	after *serverMemory
}

// scrapeMemory reads process_resident_memory_bytes and
// go_memstats_heap_inuse_bytes from base/metrics.
func scrapeMemory(base string) (serverMemory, error) {
	var m serverMemory
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("/metrics: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch name {
		case "process_resident_memory_bytes":
			m.RSS = v
		case "go_memstats_heap_inuse_bytes":
			m.Heap = v
		}
	}
	if m.RSS == 0 {
		return m, errors.New("/metrics has no process_resident_memory_bytes")
	}
	return m, nil
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
