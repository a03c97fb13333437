package load

import (
	"encoding/json"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram ranges, in microseconds: 1 µs to 100 s.
const (
	histMin = 1
	histMax = 100_000_000
)

// Hist is an HDR histogram of durations in microseconds. It marshals to
// JSON as the compressed HdrHistogram V2 encoding (base64), so results of
// separate processes merge exactly.
type Hist struct{ h *hdrhistogram.Histogram }

// NewHist returns an empty histogram with 3 significant digits.
func NewHist() *Hist { return &Hist{hdrhistogram.New(histMin, histMax, 3)} }

// newCoarseHist has 2 significant digits, for the one-per-second timeline.
func newCoarseHist() *Hist { return &Hist{hdrhistogram.New(histMin, histMax, 2)} }

// Record adds one duration; values outside the range are clamped.
func (h *Hist) Record(d time.Duration) {
	us := d.Microseconds()
	if us < histMin {
		us = histMin
	} else if us > histMax {
		us = histMax
	}
	_ = h.h.RecordValue(us)
}

// Merge adds other's counts.
func (h *Hist) Merge(other *Hist) {
	if other != nil && other.h != nil {
		h.h.Merge(other.h)
	}
}

// Count returns how many values were recorded.
func (h *Hist) Count() int64 { return h.h.TotalCount() }

// Quantile returns the value at q (0-100) in milliseconds.
func (h *Hist) Quantile(q float64) float64 {
	if h.h.TotalCount() == 0 {
		return 0
	}
	return float64(h.h.ValueAtPercentile(q)) / 1000
}

// MaxMs returns the largest value in milliseconds.
func (h *Hist) MaxMs() float64 {
	if h.h.TotalCount() == 0 {
		return 0
	}
	return float64(h.h.Max()) / 1000
}

// MarshalJSON implements json.Marshaler.
func (h *Hist) MarshalJSON() ([]byte, error) {
	b, err := h.h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return nil, fmt.Errorf("encode histogram: %w", err)
	}
	return json.Marshal(b)
}

// UnmarshalJSON implements json.Unmarshaler.
func (h *Hist) UnmarshalJSON(data []byte) error {
	var b []byte
	if err := json.Unmarshal(data, &b); err != nil {
		return err
	}
	d, err := hdrhistogram.Decode(b)
	if err != nil {
		return fmt.Errorf("decode histogram: %w", err)
	}
	h.h = d
	return nil
}

// Point is one second of a run: deliveries received in it and their
// latency.
type Point struct {
	Unix      int64 `json:"unix"` // the second's start, unix seconds
	Delivered int64 `json:"delivered"`
	Latency   *Hist `json:"latency"`
}

// Recorder counts deliveries and their latencies from many sockets at
// once. Sockets record into shards with a lock each, so readers on
// different cores rarely meet: one shard per core the process may use.
// More would not help, and would cost: each shard's histograms take about
// 170 KB, and recording spread over 32 of them (5 MB) missed the cache on
// most deliveries (7% of chatbench's CPU under fan-out, on one core).
type Recorder struct {
	shards []recShard
	mu     sync.Mutex
	points []Point
}

type recShard struct {
	mu        sync.Mutex
	total     *Hist
	second    *Hist
	delivered int64
	inSecond  int64
	counting  bool
	_         [40]byte // keep shards off each other's cache lines
}

// maxRecorderShards bounds the shards of a Recorder on a large machine.
const maxRecorderShards = 32

// NewRecorder returns an empty Recorder with a shard per core the process
// may use (GOMAXPROCS, at most 32); Conn.Shard picks one, modulo that.
func NewRecorder() *Recorder {
	n := min(max(runtime.GOMAXPROCS(0), 1), maxRecorderShards)
	r := &Recorder{shards: make([]recShard, n)}
	for i := range r.shards {
		r.shards[i].total = NewHist()
		r.shards[i].second = newCoarseHist()
		r.shards[i].counting = true
	}
	return r
}

// Record counts one delivery that took d, on shard.
func (r *Recorder) Record(shard int, d time.Duration) {
	s := &r.shards[shard%len(r.shards)]
	s.mu.Lock()
	if s.counting {
		s.total.Record(d)
		s.delivered++
	}
	s.second.Record(d)
	s.inSecond++
	s.mu.Unlock()
}

// Count counts one delivery without a latency.
func (r *Recorder) Count(shard int) {
	s := &r.shards[shard%len(r.shards)]
	s.mu.Lock()
	if s.counting {
		s.delivered++
	}
	s.inSecond++
	s.mu.Unlock()
}

// Reset forgets the totals (not the timeline): the end of a warm-up.
func (r *Recorder) Reset() {
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		s.total = NewHist()
		s.delivered = 0
		s.mu.Unlock()
	}
}

// Freeze stops counting into the totals (the timeline goes on): the end
// of the measured window.
func (r *Recorder) Freeze() {
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		s.counting = false
		s.mu.Unlock()
	}
}

// Delivered returns the deliveries counted into the totals.
func (r *Recorder) Delivered() int64 {
	var n int64
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += s.delivered
		s.mu.Unlock()
	}
	return n
}

// Latency returns the merged latency histogram of the totals.
func (r *Recorder) Latency() *Hist {
	h := NewHist()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		h.Merge(s.total)
		s.mu.Unlock()
	}
	return h
}

// Tick closes the timeline's current second, labelling it with sec (unix
// seconds).
func (r *Recorder) Tick(sec int64) {
	p := Point{Unix: sec, Latency: newCoarseHist()}
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		p.Latency.Merge(s.second)
		p.Delivered += s.inSecond
		s.second.h.Reset()
		s.inSecond = 0
		s.mu.Unlock()
	}
	r.mu.Lock()
	r.points = append(r.points, p)
	r.mu.Unlock()
}

// RunTimeline ticks r at every whole wall-clock second until stop is
// closed, so timelines of separate processes line up.
func (r *Recorder) RunTimeline(stop <-chan struct{}) {
	for {
		now := time.Now()
		next := now.Truncate(time.Second).Add(time.Second)
		t := time.NewTimer(next.Sub(now))
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
			r.Tick(next.Unix() - 1)
		}
	}
}

// Timeline returns the seconds closed so far.
func (r *Recorder) Timeline() []Point {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Point(nil), r.points...)
}

// MergeTimelines adds timelines of several processes second by second.
func MergeTimelines(lines ...[]Point) []Point {
	bySec := map[int64]*Point{}
	for _, line := range lines {
		for _, p := range line {
			q := bySec[p.Unix]
			if q == nil {
				q = &Point{Unix: p.Unix, Latency: newCoarseHist()}
				bySec[p.Unix] = q
			}
			q.Delivered += p.Delivered
			q.Latency.Merge(p.Latency)
		}
	}
	out := make([]Point, 0, len(bySec))
	for _, p := range bySec {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Unix < out[j].Unix })
	return out
}

// Message records a `message` frame received by c at now: its latency, if
// the text carries a send time (see ParseText), else just the delivery;
// and it tells c's Sender, if any, that one of its messages came back. It
// fits Events.Message.
func (r *Recorder) Message(c *Conn, text []byte, now time.Time) {
	sent, sender, ok := ParseText(text)
	if !ok {
		r.Count(c.Shard)
		return
	}
	r.Record(c.Shard, now.Sub(time.Unix(0, sent)))
	if s := c.Sender(); s != nil {
		s.Echo(sender)
	}
}
