// Command chatbench puts load on a running chatd over loopback and reports
// what users would feel: handshakes per second, fan-out deliveries per
// second, message latency percentiles (HDR histograms), messages lost,
// how late sockets close after their token expires, and server memory per
// socket.
//
//	chatbench connect --url ws://127.0.0.1:3000/ws --secret S --sockets 9000
//	chatbench fanout  --secret S --sockets 1000 --senders 4 --window 4 --procs 2
//	chatbench paced   --secret S --sockets 1000 --rate 100
//	chatbench expiry  --secret S --sockets 9000 --spread 3s
//	chatbench soak    --secret S --sockets 2000 --rate 200 --churn 20 --duration 10m
//
// Run chatbench --help for the flags. Every run is bounded in sockets and
// time and stops by itself; it targets loopback only unless told otherwise.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// A load tool must not be the bottleneck it measures. chatbench
		// holds thousands of sockets, each with a read loop whose stack
		// every GC cycle scans; collecting a quarter as often costs only
		// memory, which here nobody measures. GOGC overrides it.
		debug.SetGCPercent(400)
	}
	if len(os.Args) > 1 && os.Args[1] == workerCommand {
		if err := runWorkerProcess(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "chatbench worker:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(code)
}

const usage = `chatbench: load for a running chatd, over loopback.

Usage:
  chatbench COMMAND [flags]

Commands:
  connect  open --sockets sockets, --concurrency dials at a time per process;
           handshakes/s and handshake latency, and the server's memory growth
           per socket (read from its /metrics); --hold keeps them open.
  fanout   --sockets sockets in one room; --senders of them send 64-byte
           messages as fast as --window messages in flight each allows, for
           --duration after --warmup; deliveries/s and delivery latency.
  paced    --sockets sockets in one room; --rate messages per second in all,
           spread over --senders sockets, for --duration; latency and lost.
  expiry   --sockets sockets whose tokens expire over --spread (minted with
           --secret, or from --login and the server's --token-ttl); how late
           the server closes each after its exp, and how many early.
  soak     paced load for --duration while --churn sockets a second
           reconnect; the timeline, errors and the server's memory.

Tokens: --secret (or --secret-file, or CHATBENCH_SECRET) mints tokens with
the server's --jwt-secret, so a run does not wait on logins; --login logs in
(registering the --users as needed) with --password over HTTP instead.

The target chatd must allow the load:
  chatd --addr 127.0.0.1:3000 --data-dir /tmp/chatd-bench --jwt-secret "$SECRET" \
        --history memory --rate-limit 100000 --max-sockets 0
(--rate-limit: each sender sends hundreds of messages a second; the default
20/s refuses them. --history memory: fan-out without a disk in the way.)
Pin them apart for clean figures: taskset -c 0 chatd ..., taskset -c 1 chatbench ...

--procs K runs the sockets in K worker processes (each under the open-files
limit) and merges their HDR histograms exactly; --source-ips
127.0.0.2-127.0.0.9 spreads sockets past one address's ephemeral ports.
At the end: a table, or with --json one JSON object; --plot FILE.png draws
deliveries/s and p50/p99 latency over time. On Linux both report the CPU
steal time (the time each vCPU waited for the host) during the run and,
in the timeline, each second's: latency in stolen seconds is the host's.
On a KVM guest idling with the haltpoll governor they also report its
polling limit: where an idle vCPU halts at once, waking it is the steal
(BENCHMARKS.md).

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		fs, _ := newFlags("COMMAND")
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd := args[0]
	if !validCommand(cmd) {
		fmt.Fprintf(stderr, "chatbench: unknown command %q (connect, fanout, paced, expiry or soak; see chatbench --help)\n", cmd)
		return 2
	}
	fs, o := newFlags(cmd)
	fs.SetOutput(stderr)
	// The flag package prints a bad flag's error and then Usage: nothing
	// more, so that the error stays on the screen; -h gets the whole list.
	fs.Usage = func() {}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "Usage: chatbench %s [flags]\n\n", cmd)
			fs.PrintDefaults()
			return 0
		}
		if strings.Contains(err.Error(), "parse error") && durationFlag(fs, err) {
			fmt.Fprintln(stderr, "(durations take a unit: 5s, 500ms, 2m)")
		}
		fmt.Fprintf(stderr, "(chatbench %s -h lists the flags)\n", cmd)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "chatbench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	o.cmd = cmd
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if err := o.finish(); err != nil {
		fmt.Fprintln(stderr, "chatbench:", err)
		return 2
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "chatbench:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "chatbench:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	sum, err := orchestrate(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "chatbench:", err)
		return 1
	}
	if o.plot != "" {
		if err := plotTimeline(o.plot, sum); err != nil {
			fmt.Fprintln(stderr, "chatbench: plot:", err)
			return 1
		}
		if !o.quiet {
			fmt.Fprintln(stderr, "chatbench: plot written to", o.plot)
		}
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(sum)
	} else {
		printTable(stdout, sum)
	}
	if !sum.OK {
		return 1
	}
	return 0
}

func validCommand(c string) bool {
	switch c {
	case "connect", "fanout", "paced", "expiry", "soak":
		return true
	}
	return false
}

// runWorkerProcess is the hidden worker mode: a plan on the first line of
// stdin, then commands; events and the result as JSON lines on stdout.
func runWorkerProcess(stdin io.Reader, stdout io.Writer) error {
	in := bufio.NewReader(stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read plan: %w", err)
	}
	var p plan
	if err := json.Unmarshal(line, &p); err != nil {
		return fmt.Errorf("decode plan: %w", err)
	}
	enc := json.NewEncoder(stdout)
	emit := func(ev event) { _ = enc.Encode(ev) }
	ctx, cancel := context.WithTimeout(context.Background(), p.Limit)
	defer cancel()
	runs := make(chan time.Time, 1)
	go readCommands(in, runs, cancel)
	w := newWorker(&p, func(n int) { emit(event{Progress: n}) })
	defer w.close()
	if err := w.connect(ctx); err != nil {
		emit(event{Error: err.Error()})
		return nil // the parent reports it
	}
	emit(w.ready())
	var start time.Time
	select {
	case start = <-runs:
	case <-ctx.Done():
		return errors.New("stopped before the run began")
	}
	emit(event{Result: w.run(ctx, start)})
	return nil
}

// readCommands reads the parent's lines: "run <unixnano>" starts the run.
// The parent closing stdin (or dying) stops the worker.
func readCommands(in *bufio.Reader, runs chan<- time.Time, stop func()) {
	for {
		line, err := in.ReadString('\n')
		if f := strings.Fields(line); len(f) == 2 && f[0] == "run" {
			var ns int64
			if _, err := fmt.Sscan(f[1], &ns); err == nil {
				runs <- time.Unix(0, ns)
			}
		}
		if err != nil {
			stop()
			return
		}
	}
}

// durationFlag reports whether err, from fs.Parse, is about a duration flag.
func durationFlag(fs *flag.FlagSet, err error) bool {
	found := false
	fs.VisitAll(func(f *flag.Flag) {
		if strings.Contains(err.Error(), "flag -"+f.Name+":") {
			if g, ok := f.Value.(flag.Getter); ok {
				_, found = g.Get().(time.Duration)
			}
		}
	})
	return found
}
