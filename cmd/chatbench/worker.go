package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/bench/load"
)

// worker holds one process's share of the sockets.
type worker struct {
	p        *plan
	progress func(int)
	dialer   *load.Dialer
	rec      *load.Recorder
	ev       *load.Events

	mu       sync.Mutex
	res      result
	conns    []*load.Conn // by local index; nil if it failed
	senders  []*load.Sender
	retired  map[*load.Conn]bool // closed by us (churn)
	closedCh chan struct{}       // a socket closed (expiry waits on it)
	closed   atomic.Int64
}

// newWorker makes the worker of plan p; progress is told, every 100 ms,
// how many sockets opened since it was last told.
func newWorker(p *plan, progress func(int)) *worker {
	w := &worker{
		p:        p,
		progress: progress,
		rec:      load.NewRecorder(),
		retired:  map[*load.Conn]bool{},
		closedCh: make(chan struct{}, 1),
		conns:    make([]*load.Conn, p.Count),
	}
	w.res = result{
		DialErrors: map[string]int{}, Closes: map[string]int{}, Errors: map[string]int{},
		Handshake: load.NewHist(), Latency: load.NewHist(), Lateness: load.NewHist(), LateRead: load.NewHist(),
	}
	var ips []net.IP
	for _, s := range p.SourceIPs {
		ips = append(ips, net.ParseIP(s))
	}
	w.dialer = &load.Dialer{URL: p.URL, SourceIPs: ips, ReadBufferSize: p.ReadBuffer, ReadClock: p.ReadClock, ReadLoops: p.ReadLoops}
	if p.Cmd == "expiry" {
		w.dialer.LingerExpired = p.Linger // see load.Dialer.LingerExpired
	}
	w.ev = &load.Events{Message: w.rec.Message, Frame: w.onFrame, Closed: w.onClosed}
	return w
}

func (w *worker) onFrame(c *load.Conn, typ string, frame []byte) {
	if typ != "error" {
		return // presence, ack, expiring: not counted
	}
	code := load.ErrorCode(frame)
	w.mu.Lock()
	w.res.Errors[code]++
	w.mu.Unlock()
	if s := c.Sender(); s != nil && code != "token_expired" {
		s.Refuse()
	}
}

func (w *worker) onClosed(c *load.Conn, code uint16, at time.Time) {
	w.mu.Lock()
	if !w.retired[c] {
		if w.p.Cmd == "expiry" {
			read := at
			if told := c.ToldExpired(); !told.IsZero() {
				at, read = told, c.ToldExpiredRead()
			}
			if w.p.ReadClock {
				at = read
			}
			exp := time.Unix(c.Exp, 0).Add(w.p.Leeway)
			w.res.LateRead.Record(read.Sub(exp))
			if at.Before(exp) {
				w.res.Early++
			}
			w.res.Expired++
			w.res.Lateness.Record(at.Sub(exp))
			if code != 4001 {
				w.res.Closes[strconv.Itoa(int(code))]++
			}
		} else {
			w.res.Closes[strconv.Itoa(int(code))]++
		}
	}
	w.mu.Unlock()
	w.closed.Add(1)
	select {
	case w.closedCh <- struct{}{}:
	default:
	}
}

// connect opens the worker's sockets, Concurrency at a time.
func (w *worker) connect(ctx context.Context) error {
	p := w.p
	var next, opened atomic.Int64
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		var told int64
		for {
			select {
			case <-t.C:
			case <-stopProgress:
			}
			if n := opened.Load(); n > told {
				w.progress(int(n - told))
				told = n
			}
			select {
			case <-stopProgress:
				return
			default:
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for range max(1, p.Concurrency) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= p.Count {
					return
				}
				g := p.First + i
				t0 := time.Now()
				c, err := w.dialer.Dial(p.token(g), g, g, w.ev)
				w.mu.Lock()
				if err != nil {
					w.res.DialErrors[dialErrorKind(err)]++
				} else {
					w.res.Handshake.Record(time.Since(t0))
					w.conns[i] = c
					w.res.Connected++
				}
				w.mu.Unlock()
				opened.Add(1)
			}
		}()
	}
	wg.Wait()
	end := time.Now()
	close(stopProgress)
	<-progressDone
	w.res.DialStart, w.res.DialEnd = start.UnixNano(), end.UnixNano()
	for i, c := range w.conns {
		if c == nil {
			continue
		}
		if j := p.senderOf(p.First + i); j >= 0 {
			window := p.Window
			if p.Cmd != "fanout" {
				window = 0
			}
			w.senders = append(w.senders, load.NewSender(c, j, window, p.Size, p.Room))
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("stopped while connecting: %w", ctx.Err())
	}
	return nil
}

// ready is the Ready event of a worker that has connected: how many of its
// sockets did, and why the others did not (a copy: soak's reconnects go on
// counting in the worker's own map).
func (w *worker) ready() event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return event{Worker: w.p.Worker, Ready: true, Connected: w.res.Connected, DialErrors: maps.Clone(w.res.DialErrors)}
}

// dialHint says what a new user most likely got wrong, given why the dials
// failed: for the most common reason it knows.
func dialHint(kinds map[string]int) string {
	byCount := slices.SortedFunc(maps.Keys(kinds), func(a, b string) int { return kinds[b] - kinds[a] })
	for _, kind := range byCount {
		switch {
		case kind == "401 invalid_token":
			return "; is --secret the server's --jwt-secret?"
		case kind == "401 token_expired":
			return "; the tokens expired before they were used: with --login, chatd's --token-ttl is too short for this run"
		case strings.Contains(kind, "connection refused"):
			return "; is chatd running at --url?"
		case strings.HasPrefix(kind, "403"):
			return "; the server refuses this Origin (its --allowed-origins)"
		case strings.HasPrefix(kind, "429"):
			return "; the server limits sockets per address (its --ws-rate-limit)"
		case strings.HasPrefix(kind, "503"):
			return "; the server is draining or at its --max-sockets"
		}
	}
	return ""
}

// dialErrorKind groups dial errors for the report.
func dialErrorKind(err error) string {
	var se *load.ErrStatus
	if errors.As(err, &se) {
		return strconv.Itoa(se.Status) + " " + se.Code
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Op + ": " + oe.Err.Error()
	}
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// run does the command's load, starting at start, and returns the result.
func (w *worker) run(ctx context.Context, start time.Time) *result {
	p := w.p
	stopTimeline := make(chan struct{})
	go w.rec.RunTimeline(stopTimeline)
	if d := time.Until(start); d > 0 {
		sleep(ctx, d)
	}
	switch p.Cmd {
	case "connect":
		sleep(ctx, p.Hold)
	case "fanout":
		w.fanout(ctx, start)
	case "paced", "soak":
		w.paced(ctx, start)
	case "expiry":
		w.expiry(ctx)
	}
	close(stopTimeline)
	w.rec.Tick(time.Now().Unix()) // the partial last second
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.res
	r.Delivered = w.rec.Delivered()
	r.Latency = w.rec.Latency()
	r.Timeline = w.rec.Timeline()
	for _, s := range w.senders {
		r.Sent += s.Sent.Load()
		r.Refused += s.Refused.Load()
		r.Stalls += s.Stalls.Load()
	}
	if p.Cmd == "expiry" {
		for _, c := range w.conns {
			if c != nil && !c.Closed() {
				r.StillOpen++
			}
		}
	}
	return &r
}

func (w *worker) fanout(ctx context.Context, start time.Time) {
	p := w.p
	sendCtx, stop := context.WithDeadline(ctx, start.Add(p.Warmup+p.Duration))
	defer stop()
	var wg sync.WaitGroup
	for _, s := range w.senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Saturate(sendCtx, -1)
		}()
	}
	if p.Warmup > 0 {
		sleep(sendCtx, p.Warmup)
		w.rec.Reset()
	}
	<-sendCtx.Done()
	w.rec.Freeze()
	wg.Wait()
	// Let what is in flight arrive, so it is not counted as a stall.
	drain, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, s := range w.senders {
		s.Drain(drain)
	}
}

func (w *worker) paced(ctx context.Context, start time.Time) {
	p := w.p
	total := p.messages()
	every := time.Duration(float64(time.Second) / p.Rate)
	var wg sync.WaitGroup
	for _, s := range w.senders {
		// Sender j sends the messages j, j+S, j+2S, ... of the run.
		count := (total - int64(s.Index) + int64(p.Senders) - 1) / int64(p.Senders)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Paced(ctx, start, time.Duration(s.Index)*every, time.Duration(p.Senders)*every, count)
		}()
	}
	churnDone := make(chan struct{})
	if p.Cmd == "soak" && p.Churn > 0 {
		go func() {
			defer close(churnDone)
			w.churn(ctx, start.Add(p.Duration))
		}()
	} else {
		close(churnDone)
	}
	wg.Wait()
	<-churnDone
	// Wait for every socket to get every message, a few seconds at most.
	// Under churn sockets come and go, and a count cannot tell when all
	// is in: a second's grace then.
	want := total * int64(w.live())
	deadline := time.Now().Add(5 * time.Second)
	if p.Cmd == "soak" {
		deadline = time.Now().Add(time.Second)
	}
	for w.rec.Delivered() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

// live counts the worker's open sockets.
func (w *worker) live() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, c := range w.conns {
		if c != nil && !c.Closed() {
			n++
		}
	}
	return n
}

// churn closes a random non-sender socket and opens a new one in its place,
// Churn times a second, until end.
func (w *worker) churn(ctx context.Context, end time.Time) {
	p := w.p
	every := time.Duration(float64(time.Second) / p.Churn)
	t := time.NewTicker(every)
	defer t.Stop()
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		i := rand.IntN(len(w.conns))
		g := p.First + i
		if p.senderOf(g) >= 0 {
			continue
		}
		w.mu.Lock()
		old := w.conns[i]
		if old != nil {
			w.retired[old] = true
		}
		w.mu.Unlock()
		if old != nil {
			old.Close()
		}
		c, err := w.dialer.Dial(p.token(g), g, g, w.ev)
		w.mu.Lock()
		if err != nil {
			w.res.ReconnectFailures++
			w.res.DialErrors[dialErrorKind(err)]++
			w.conns[i] = nil
		} else {
			w.res.Reconnects++
			w.conns[i] = c
		}
		w.mu.Unlock()
	}
}

func (w *worker) expiry(ctx context.Context) {
	var latest int64
	for _, c := range w.conns {
		if c != nil && c.Exp > latest {
			latest = c.Exp
		}
	}
	want := int64(w.res.Connected)
	deadline := time.Unix(latest, 0).Add(w.p.Leeway + 10*time.Second)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for w.closed.Load() < want {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-w.closedCh:
		}
	}
}

// close drops every socket.
func (w *worker) close() {
	w.mu.Lock()
	conns := append([]*load.Conn(nil), w.conns...)
	for _, c := range conns {
		if c != nil {
			w.retired[c] = true
		}
	}
	w.mu.Unlock()
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
