package main

// What passes between chatbench and its worker processes: the plan a
// worker gets on stdin, and the events (progress, then one result) it
// writes back as JSON lines. Workers in this process use the same types.

import (
	"time"

	"github.com/chatd/chatd/bench/load"
)

// plan is what one worker does: its share of the sockets and the load.
// The parent sends it to a worker process as JSON on stdin; tokens travel
// there too, never on a command line.
type plan struct {
	Cmd       string   `json:"cmd"`
	URL       string   `json:"url"`
	SourceIPs []string `json:"source_ips,omitempty"`
	Worker    int      `json:"worker"`
	First     int      `json:"first"` // global index of this worker's first socket
	Count     int      `json:"count"` // sockets of this worker
	Total     int      `json:"total"` // sockets of all workers
	// Tokens: one per socket when len == Total, else socket i uses
	// Tokens[i % len(Tokens)].
	Tokens      []string      `json:"tokens"`
	Senders     int           `json:"senders"`
	Window      int           `json:"window"`
	Size        int           `json:"size"`
	Room        string        `json:"room"`
	Rate        float64       `json:"rate"`
	Churn       float64       `json:"churn"`
	Duration    time.Duration `json:"duration"`
	Warmup      time.Duration `json:"warmup"`
	Hold        time.Duration `json:"hold"`
	Leeway      time.Duration `json:"leeway"`
	Linger      time.Duration `json:"linger"`
	Concurrency int           `json:"concurrency"`
	ReadBuffer  int           `json:"read_buffer"`
	ReadLoops   bool          `json:"read_loops"` // see load.Dialer.ReadLoops
	ReadClock   bool          `json:"read_clock"` // see load.Dialer.ReadClock
	Limit       time.Duration `json:"limit"`      // the worker stops by itself after this
}

// messages is how many messages a paced or soak run sends in all.
func (p *plan) messages() int64 { return int64(p.Rate*p.Duration.Seconds() + 0.5) }

// senderOf returns which sender global socket i is, or -1.
func (p *plan) senderOf(i int) int {
	for j := range p.Senders {
		if i == j*p.Total/p.Senders {
			return j
		}
	}
	return -1
}

func (p *plan) token(i int) string {
	if len(p.Tokens) == p.Total {
		return p.Tokens[i]
	}
	return p.Tokens[i%len(p.Tokens)]
}

// event is one line a worker reports.
type event struct {
	Worker   int     `json:"worker,omitempty"`
	Progress int     `json:"progress,omitempty"` // sockets opened since the last event
	Ready    bool    `json:"ready,omitempty"`
	Result   *result `json:"result,omitempty"`
	Error    string  `json:"error,omitempty"`

	// With Ready: how many of the worker's sockets connected, and why the
	// others did not.
	Connected  int            `json:"connected,omitempty"`
	DialErrors map[string]int `json:"dial_errors,omitempty"`
}

// result is one worker's measurements; the parent merges them.
type result struct {
	Connected  int            `json:"connected"`
	DialErrors map[string]int `json:"dial_errors,omitempty"`
	DialStart  int64          `json:"dial_start"` // unix nanos
	DialEnd    int64          `json:"dial_end"`
	Handshake  *load.Hist     `json:"handshake"`

	Sent      int64        `json:"sent"`
	Refused   int64        `json:"refused"`
	Stalls    int64        `json:"stalls"`
	Delivered int64        `json:"delivered"`
	Latency   *load.Hist   `json:"latency"`
	Timeline  []load.Point `json:"timeline,omitempty"`

	Closes map[string]int `json:"closes,omitempty"` // closes we did not ask for, by code
	Errors map[string]int `json:"errors,omitempty"` // error frames, by code

	Expired   int        `json:"expired"`
	Early     int        `json:"early"`
	Lateness  *load.Hist `json:"lateness"`      // at the token_expired frame's arrival
	LateRead  *load.Hist `json:"lateness_read"` // when chatbench read it
	StillOpen int        `json:"still_open"`

	Reconnects        int `json:"reconnects"`
	ReconnectFailures int `json:"reconnect_failures"`
}
