package main

// What a run is asked to do: the flags of a subcommand, their checks and
// defaults (finish), the tokens the sockets log in with, and how the
// sockets split over worker processes (plans). orchestrate.go runs it.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/chatd/chatd/bench/load"
)

// maxSocketsPerProcess keeps one process under a 20,000 open-files limit
// with room to spare.
const maxSocketsPerProcess = 15000

// options are one run's flags; finish checks them and fills the defaults
// that depend on the subcommand.
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
	readLoops   bool
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

// newFlags declares the flags of subcommand cmd.
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
	fs.IntVar(&o.readBuffer, "read-buffer", 0, "read buffer per socket with --read-loops (default: fanout 4096, else 1024)")
	fs.BoolVar(&o.readLoops, "read-loops", false, "read each socket from a goroutine of its own, as most clients do, rather than all of them\nfrom one epoll loop (64-bit Linux); chatbench then costs 1.5-1.8 times the CPU per delivery under fan-out")
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
	if o.set["senders"] && o.senders < 1 && (o.cmd == "fanout" || o.cmd == "paced" || o.cmd == "soak") {
		return errors.New("--senders must be at least 1 (leave it out for the default)")
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
	fromEnv := false
	if o.secret == "" {
		o.secret = os.Getenv("CHATBENCH_SECRET")
		fromEnv = o.secret != ""
	}
	if o.secretFile != "" {
		data, err := os.ReadFile(o.secretFile)
		if err != nil {
			return fmt.Errorf("--secret-file: %w", err)
		}
		o.secret = strings.TrimRight(strings.SplitN(string(data), "\n", 2)[0], "\r")
		fromEnv = false
	}
	var errs []error
	switch {
	case o.secret == "" && !o.login:
		errs = append(errs, errors.New("give --secret (the server's --jwt-secret) to mint tokens, or --login to log in"))
	case o.secret != "" && o.login && fromEnv:
		errs = append(errs, errors.New("CHATBENCH_SECRET is set, and --login too: unset it, or drop --login"))
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
	if o.senders > o.sockets && o.sockets >= 1 {
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
		if !o.quiet {
			// Each login (and first registration) is a bcrypt check on the
			// server, tens of milliseconds: hundreds of users take a while.
			fmt.Fprintf(stderr, "logging in %d users over HTTP (a bcrypt check each on chatd; --secret skips this)...\n", o.users)
		}
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
			ReadLoops: o.readLoops, ReadClock: o.clock == "read", Limit: o.limit,
		}
		if o.cmd != "fanout" {
			out[k].Warmup = 0
		}
	}
	return out
}
