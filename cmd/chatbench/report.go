package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/chatd/chatd/bench/load"
)

// summary is the merged result of a run: the table and the --json object.
type summary struct {
	Command    string         `json:"command"`
	URL        string         `json:"url"`
	Clock      string         `json:"clock"` // arrival or read: see --clock
	Procs      int            `json:"procs"`
	Sockets    int            `json:"sockets"`
	Connected  int            `json:"connected"`
	DialErrors map[string]int `json:"dial_errors,omitempty"`
	OK         bool           `json:"ok"`
	Problems   []string       `json:"problems,omitempty"`
	// Notes qualify a figure without failing the run (a memory figure
	// from a server that is not fresh, or none at all).
	Notes []string `json:"notes,omitempty"`

	Handshake *handshakeSummary `json:"handshake,omitempty"`
	Messages  *messageSummary   `json:"messages,omitempty"`
	Expiry    *expirySummary    `json:"expiry,omitempty"`
	Server    *memorySummary    `json:"server,omitempty"`

	Closes            map[string]int `json:"unexpected_closes,omitempty"`
	Errors            map[string]int `json:"error_frames,omitempty"`
	Reconnects        int            `json:"reconnects,omitempty"`
	ReconnectFailures int            `json:"reconnect_failures,omitempty"`

	// Steal is the time each CPU waited for the host during the run (Linux).
	Steal *stealSummary `json:"steal,omitempty"`

	Timeline []timelinePoint `json:"timeline,omitempty"`
}

type handshakeSummary struct {
	PerSecond float64 `json:"per_second"`
	Seconds   float64 `json:"seconds"`
	P50       float64 `json:"p50_ms"`
	P90       float64 `json:"p90_ms"`
	P99       float64 `json:"p99_ms"`
	Max       float64 `json:"max_ms"`
}

type messageSummary struct {
	Senders             int     `json:"senders"`
	Sent                int64   `json:"sent"`
	Delivered           int64   `json:"delivered"`
	WindowSeconds       float64 `json:"window_seconds"`
	DeliveriesPerSecond float64 `json:"deliveries_per_second"`
	MessagesPerSecond   float64 `json:"messages_per_second"`
	Expected            int64   `json:"expected,omitempty"`
	Lost                int64   `json:"lost"`
	Refused             int64   `json:"refused"`
	Stalls              int64   `json:"stalls"`
	P50                 float64 `json:"p50_ms"`
	P90                 float64 `json:"p90_ms"`
	P99                 float64 `json:"p99_ms"`
	P999                float64 `json:"p999_ms"`
	Max                 float64 `json:"max_ms"`
}

type expirySummary struct {
	Expired   int     `json:"expired"`
	Early     int     `json:"early"`
	StillOpen int     `json:"still_open"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	Max       float64 `json:"max_ms"`
	// The same, when chatbench read the frame: with thousands of sockets
	// told in one burst on chatbench's one core, its own queueing.
	ReadP50 float64 `json:"read_p50_ms"`
	ReadP99 float64 `json:"read_p99_ms"`
	ReadMax float64 `json:"read_max_ms"`
	// Other is the latency of two sockets chatting meanwhile (with --secret).
	Other *otherTraffic `json:"other_traffic,omitempty"`
}

// otherTraffic is the latency of a load.Probe's messages.
type otherTraffic struct {
	Messages int64   `json:"messages"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
}

type memorySummary struct {
	RSSBefore      float64 `json:"rss_before_bytes"`
	RSSAfter       float64 `json:"rss_after_bytes"`
	HeapBefore     float64 `json:"heap_before_bytes"`
	HeapAfter      float64 `json:"heap_after_bytes"`
	RSSPerSocket   float64 `json:"rss_per_socket_bytes,omitempty"`
	HeapPerSocket  float64 `json:"heap_per_socket_bytes,omitempty"`
	MeasuredAtOpen int     `json:"sockets_open"`
}

type timelinePoint struct {
	Unix                int64    `json:"unix"`
	DeliveriesPerSecond int64    `json:"deliveries_per_second"`
	P50                 float64  `json:"p50_ms"`
	P99                 float64  `json:"p99_ms"`
	StealPercent        *float64 `json:"steal_percent,omitempty"` // the worst CPU's, that second, where sampled
}

// addSteal adds the steal sampled during the run to s.
func (s *summary) addSteal(sum *stealSummary, bySecond map[int64]float64) {
	s.Steal = sum
	for i := range s.Timeline {
		if p, ok := bySecond[s.Timeline[i].Unix]; ok {
			p = round1(p)
			s.Timeline[i].StealPercent = &p
		}
	}
}

// summarize merges the workers' results.
func summarize(o *options, results []*result, mem serverMemory) *summary {
	s := &summary{
		Command: o.cmd, URL: o.url, Clock: o.clock, Procs: o.procs, Sockets: o.sockets,
		DialErrors: map[string]int{}, Closes: map[string]int{}, Errors: map[string]int{},
	}
	hs, lat, late, lateRead := load.NewHist(), load.NewHist(), load.NewHist(), load.NewHist()
	var dialStart, dialEnd int64
	var sent, delivered, refused, stalls int64
	var expired, early, open int
	var lines [][]load.Point
	for _, r := range results {
		s.Connected += r.Connected
		for k, v := range r.DialErrors {
			s.DialErrors[k] += v
		}
		for k, v := range r.Closes {
			s.Closes[k] += v
		}
		for k, v := range r.Errors {
			s.Errors[k] += v
		}
		if dialStart == 0 || r.DialStart < dialStart {
			dialStart = r.DialStart
		}
		dialEnd = max(dialEnd, r.DialEnd)
		hs.Merge(r.Handshake)
		lat.Merge(r.Latency)
		late.Merge(r.Lateness)
		lateRead.Merge(r.LateRead)
		sent += r.Sent
		delivered += r.Delivered
		refused += r.Refused
		stalls += r.Stalls
		expired += r.Expired
		early += r.Early
		open += r.StillOpen
		s.Reconnects += r.Reconnects
		s.ReconnectFailures += r.ReconnectFailures
		lines = append(lines, r.Timeline)
	}
	failed := 0
	for _, v := range s.DialErrors {
		failed += v
	}
	if failed > 0 {
		s.Problems = append(s.Problems, fmt.Sprintf("%d sockets failed to connect", failed))
	}
	secs := time.Duration(dialEnd - dialStart).Seconds()
	s.Handshake = &handshakeSummary{
		PerSecond: float64(s.Connected) / math.Max(secs, 1e-9), Seconds: secs,
		P50: hs.Quantile(50), P90: hs.Quantile(90), P99: hs.Quantile(99), Max: hs.MaxMs(),
	}
	switch o.cmd {
	case "fanout", "paced", "soak":
		m := &messageSummary{
			Senders: o.senders, Sent: sent, Delivered: delivered, Refused: refused, Stalls: stalls,
			P50: lat.Quantile(50), P90: lat.Quantile(90), P99: lat.Quantile(99), P999: lat.Quantile(99.9), Max: lat.MaxMs(),
		}
		m.WindowSeconds = o.duration.Seconds()
		m.DeliveriesPerSecond = float64(delivered) / m.WindowSeconds
		if o.cmd == "paced" {
			m.Expected = sent * int64(s.Connected)
			m.Lost = max(0, m.Expected-delivered)
			if m.Lost > 0 {
				s.Problems = append(s.Problems, fmt.Sprintf("%d of %d deliveries lost", m.Lost, m.Expected))
			}
		}
		m.MessagesPerSecond = m.DeliveriesPerSecond / float64(max(s.Connected, 1))
		if refused > 0 {
			s.Problems = append(s.Problems, fmt.Sprintf("%d sends refused by the server (see error_frames; is --rate-limit high enough?)", refused))
		}
		s.Messages = m
	case "expiry":
		s.Expiry = &expirySummary{
			Expired: expired, Early: early, StillOpen: open,
			P50: late.Quantile(50), P99: late.Quantile(99), Max: late.MaxMs(),
			ReadP50: lateRead.Quantile(50), ReadP99: lateRead.Quantile(99), ReadMax: lateRead.MaxMs(),
		}
		if early > 0 {
			s.Problems = append(s.Problems, fmt.Sprintf("%d sockets closed before their exp", early))
		}
		if open > 0 {
			s.Problems = append(s.Problems, fmt.Sprintf("%d sockets still open 10 s after their exp", open))
		}
	}
	if len(s.Closes) > 0 {
		s.Problems = append(s.Problems, "sockets closed by the server unexpectedly: "+closesString(s.Closes))
	}
	if mem.after != nil {
		a := mem.after
		ms := &memorySummary{
			RSSBefore: mem.RSS, RSSAfter: a.RSS, HeapBefore: mem.Heap, HeapAfter: a.Heap, MeasuredAtOpen: s.Connected,
		}
		if o.cmd == "connect" && s.Connected > 0 {
			ms.RSSPerSocket = (a.RSS - mem.RSS) / float64(s.Connected)
			ms.HeapPerSocket = (a.Heap - mem.Heap) / float64(s.Connected)
			// A figure that fell is no per-socket cost: it is left out.
			var fell []string
			if ms.RSSPerSocket <= 0 {
				fell, ms.RSSPerSocket = append(fell, "RSS"), 0
			}
			if ms.HeapPerSocket <= 0 {
				fell, ms.HeapPerSocket = append(fell, "heap"), 0
			}
			if len(fell) > 0 {
				s.Notes = append(s.Notes, "the server's "+strings.Join(fell, " and ")+" did not grow with the sockets (left out): "+
					"a chatd that has served earlier runs returns their memory meanwhile; start a fresh one for the per-socket figures")
			}
		}
		s.Server = ms
	}
	if mem.err != nil {
		s.Notes = append(s.Notes, fmt.Sprintf("no memory figures: the server's /metrics could not be read (%v); --no-metrics skips them", mem.err))
	}
	for _, p := range load.MergeTimelines(lines...) {
		if p.Delivered == 0 && p.Latency.Count() == 0 {
			continue
		}
		s.Timeline = append(s.Timeline, timelinePoint{
			Unix: p.Unix, DeliveriesPerSecond: p.Delivered,
			P50: p.Latency.Quantile(50), P99: p.Latency.Quantile(99),
		})
	}
	s.OK = len(s.Problems) == 0
	return s
}

// printTable writes the summary for a person.
func printTable(w io.Writer, s *summary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t  %s\t\n", k, v) }
	row("command", s.Command)
	row("target", s.URL)
	row("clock", s.Clock)
	row("processes", fmt.Sprint(s.Procs))
	row("sockets", fmt.Sprintf("%d of %d", s.Connected, s.Sockets))
	if h := s.Handshake; h != nil {
		row("handshakes/s", fmt.Sprintf("%.0f (in %.2f s)", h.PerSecond, h.Seconds))
		row("handshake p50/p90/p99/max", fmt.Sprintf("%.2f / %.2f / %.2f / %.2f ms", h.P50, h.P90, h.P99, h.Max))
	}
	if m := s.Messages; m != nil {
		row("senders", fmt.Sprint(m.Senders))
		row("messages sent", fmt.Sprintf("%d (warm-up included)", m.Sent))
		row("deliveries/s", fmt.Sprintf("%.0f (over %.1f s)", m.DeliveriesPerSecond, m.WindowSeconds))
		row("latency p50/p90/p99", fmt.Sprintf("%.2f / %.2f / %.2f ms", m.P50, m.P90, m.P99))
		row("latency p99.9/max", fmt.Sprintf("%.2f / %.2f ms", m.P999, m.Max))
		if s.Command == "paced" {
			row("lost", fmt.Sprintf("%d of %d", m.Lost, m.Expected))
		}
		if m.Refused > 0 || m.Stalls > 0 {
			row("refused/stalled sends", fmt.Sprintf("%d / %d", m.Refused, m.Stalls))
		}
	}
	if e := s.Expiry; e != nil {
		row("expired", fmt.Sprint(e.Expired))
		row("closed early", fmt.Sprint(e.Early))
		row("still open", fmt.Sprint(e.StillOpen))
		row("lateness p50/p99/max", fmt.Sprintf("%.2f / %.2f / %.2f ms", e.P50, e.P99, e.Max))
		row("  when read p50/p99/max", fmt.Sprintf("%.2f / %.2f / %.2f ms", e.ReadP50, e.ReadP99, e.ReadMax))
		if t := e.Other; t != nil {
			row("other traffic p50/p99/max", fmt.Sprintf("%.2f / %.2f / %.2f ms (%d messages)", t.P50, t.P99, t.Max, t.Messages))
		}
	}
	if m := s.Server; m != nil {
		row("server RSS before/after", fmt.Sprintf("%.1f / %.1f MiB", m.RSSBefore/(1<<20), m.RSSAfter/(1<<20)))
		row("server heap before/after", fmt.Sprintf("%.1f / %.1f MiB", m.HeapBefore/(1<<20), m.HeapAfter/(1<<20)))
		if m.RSSPerSocket != 0 {
			row("server RSS per socket", fmt.Sprintf("%.0f B (%.2f KiB)", m.RSSPerSocket, m.RSSPerSocket/1024))
		}
		if m.HeapPerSocket != 0 {
			row("server heap per socket", fmt.Sprintf("%.0f B (%.2f KiB)", m.HeapPerSocket, m.HeapPerSocket/1024))
		}
	}
	if st := s.Steal; st != nil {
		row("CPU steal (hypervisor)", fmt.Sprintf("%s; worst second %.1f%%", mapString(st.PercentByCPU, "%s %.1f%%"), st.WorstSecondPercent))
		if ns := st.GuestHaltPollNs; ns != nil {
			row("guest halt polling", haltPollString(*ns))
		}
	}
	if s.Reconnects > 0 || s.ReconnectFailures > 0 {
		row("reconnects (failed)", fmt.Sprintf("%d (%d)", s.Reconnects, s.ReconnectFailures))
	}
	if len(s.DialErrors) > 0 {
		row("dial errors", mapString(s.DialErrors, "%s: %d"))
	}
	if len(s.Errors) > 0 {
		row("error frames", mapString(s.Errors, "%s: %d"))
	}
	if len(s.Closes) > 0 {
		row("unexpected closes", closesString(s.Closes))
	}
	for _, n := range s.Notes {
		row("note", n)
	}
	verdict := "ok"
	if !s.OK {
		verdict = "PROBLEMS: " + strings.Join(s.Problems, "; ")
	}
	row("result", verdict)
	_ = tw.Flush()
}

// mapString formats m's entries with format (key, value), by key.
func mapString[V any](m map[string]V, format string) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf(format, k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// closeMeanings say, for the close codes a load run can meet, what chatd
// meant and what to change.
var closeMeanings = map[string]string{
	"1001": "the server shut down",
	"1008": "over the server's --rate-limit; start chatd with --rate-limit 100000",
	"1009": "a message over the server's --max-message-bytes",
	"4001": "token expired: with --login, chatd's --token-ttl is shorter than the run",
	"4003": "token revoked",
	"4008": "slow consumer: this process read too slowly (fewer --sockets, or --procs)",
}

// closesString lists close codes with their counts and meanings.
func closesString(closes map[string]int) string {
	parts := make([]string, 0, len(closes))
	for _, code := range slices.Sorted(maps.Keys(closes)) {
		part := fmt.Sprintf("%d × %s", closes[code], code)
		if meaning, ok := closeMeanings[code]; ok {
			part += " (" + meaning + ")"
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ")
}
