package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
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
		events <- w.ready()
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
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	once   sync.Once
	exited chan struct{} // closed once the process has exited and its stderr is copied
	quit   chan struct{} // closed by stop: nobody reads events any more
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
	r := &procRunner{cmd: cmd, stdin: stdin, exited: make(chan struct{}), quit: make(chan struct{})}
	// send passes on an event unless the run has stopped reading them: a
	// worker's last lines must not keep its process from being waited for.
	send := func(ev event) {
		select {
		case events <- ev:
		case <-r.quit:
		}
	}
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
				send(event{Worker: p.Worker, Error: "bad worker output: " + err.Error()})
				continue
			}
			ev.Worker = p.Worker
			gotResult = gotResult || ev.Result != nil
			send(ev)
		}
		err := cmd.Wait()
		close(r.exited)
		if !gotResult {
			msg := "worker exited without a result"
			if err != nil {
				msg += ": " + err.Error()
			}
			send(event{Worker: p.Worker, Error: msg})
		}
	}()
	return r, nil
}

func (r *procRunner) start(at time.Time) {
	_, _ = fmt.Fprintf(r.stdin, "run %d\n", at.UnixNano())
}

// stop ends the worker (its stdin's end tells it to) and waits until it
// has exited: its stderr goes to the caller's, which must not be written
// by the two at once once orchestrate has returned.
func (r *procRunner) stop() {
	r.once.Do(func() {
		close(r.quit)
		_ = r.stdin.Close()
	})
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second): // a worker that does not hear
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
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
		var err error
		if memBefore, err = scrapeMemory(base); err != nil {
			memBefore.err = err
		}
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
	ready, connected := 0, 0
	dialErrors := map[string]int{}
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
			connected += ev.Connected
			for k, v := range ev.DialErrors {
				dialErrors[k] += v
			}
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
			if connected == 0 {
				// Nothing to measure: say why now, not after the run's whole length.
				return nil, fmt.Errorf("no socket connected (%s)%s", mapString(dialErrors, "%s: %d"), dialHint(dialErrors))
			}
			if !o.noMetrics && o.cmd == "connect" {
				// Let the server finish its handshake work (and, with a long
				// settle, collect its garbage) before reading.
				sleep(ctx, o.settle)
				memBefore.scrapeAfter(base)
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
		memBefore.scrapeAfter(base)
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
	err   error // why /metrics could not be read, before or after
}

// scrapeAfter reads the server's memory after the sockets opened into
// m.after, or why it could not into m.err (a reading that failed before
// leaves no after to compare).
func (m *serverMemory) scrapeAfter(base string) {
	after, err := scrapeMemory(base)
	switch {
	case err != nil:
		m.err = err
	case m.err == nil:
		m.after = &after
	}
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
