package main

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// On a virtual machine a vCPU can wait for the host (steal time), and a
// server's latency in those seconds says more about the host than the
// server: on the project's machine, seconds with over 12% steal on the
// server's core had a p99 six times that of seconds with none
// (BENCHMARKS.md). There the steal is mostly the host's delay in waking a
// vCPU that halted while idle: busy vCPUs see none, and idle vCPUs that
// poll before halting (a KVM guest's haltpoll cpuidle governor) see almost
// none. So chatbench samples the kernel's per-CPU steal (/proc/stat) once
// a second through the run and reports it beside the figures: the run's
// share per CPU, each timeline second's worst CPU, and the guest's halt
// polling.

// stealSummary is the report's "steal" object.
type stealSummary struct {
	PercentByCPU       map[string]float64 `json:"percent_by_cpu"`
	WorstSecondPercent float64            `json:"worst_second_percent"`
	// GuestHaltPollNs is how long an idle vCPU may poll before it halts
	// (0: it halts at once); absent unless the haltpoll governor is in use.
	GuestHaltPollNs *int64 `json:"guest_halt_poll_ns,omitempty"`
}

// haltPoll says where a KVM guest's haltpoll cpuidle governor keeps its
// polling limit, and where the kernel names the governor in use: the
// parameter exists, with its default, wherever the governor is built in,
// even where another governor idles the CPUs.
var haltPoll = struct{ limit, governor string }{
	limit:    "/sys/module/haltpoll/parameters/guest_halt_poll_ns",
	governor: "/sys/devices/system/cpu/cpuidle/current_governor_ro",
}

// guestHaltPoll reads the haltpoll governor's polling limit; nil unless
// that governor is the one in use.
func guestHaltPoll() *int64 {
	gov, err := os.ReadFile(haltPoll.governor)
	if err != nil || strings.TrimSpace(string(gov)) != "haltpoll" {
		return nil
	}
	data, err := os.ReadFile(haltPoll.limit)
	if err != nil {
		return nil
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return nil
	}
	return &ns
}

// cpuTimes is one /proc/stat line: all its times, and the steal among them.
type cpuTimes struct{ total, steal uint64 }

// stealSampler samples /proc/stat until stopped.
type stealSampler struct {
	path     string
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	mu        sync.Mutex
	first     map[string]cpuTimes
	last      map[string]cpuTimes
	perSecond map[int64]float64 // unix second -> the worst CPU's steal in it, %
}

// startSteal starts sampling path (/proc/stat); nil where it cannot be read.
func startSteal(path string) *stealSampler {
	first, err := readCPUTimes(path)
	if err != nil || len(first) == 0 {
		return nil
	}
	s := &stealSampler{path: path, stop: make(chan struct{}), done: make(chan struct{}), first: first, last: first, perSecond: map[int64]float64{}}
	go s.run()
	return s
}

func (s *stealSampler) run() {
	defer close(s.done)
	for {
		// Sample on whole seconds, the timeline's buckets.
		now := time.Now()
		next := now.Truncate(time.Second).Add(time.Second)
		select {
		case <-s.stop:
			return
		case <-time.After(next.Sub(now)):
		}
		times, err := readCPUTimes(s.path)
		if err != nil {
			continue
		}
		s.mu.Lock()
		var worst float64
		for cpu, t := range times {
			worst = max(worst, stealPercent(s.last[cpu], t))
		}
		s.perSecond[next.Unix()-1] = worst
		s.last = times
		s.mu.Unlock()
	}
}

// close stops the sampler; more calls do nothing.
func (s *stealSampler) close() {
	if s == nil {
		return
	}
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

// finish stops the sampler and returns the run's steal; each second's
// worst CPU is in bySecond.
func (s *stealSampler) finish() (sum *stealSummary, bySecond map[int64]float64) {
	if s == nil {
		return nil, nil
	}
	s.close()
	end, err := readCPUTimes(s.path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		end = s.last
	}
	sum = &stealSummary{PercentByCPU: map[string]float64{}, GuestHaltPollNs: guestHaltPoll()}
	for cpu, t := range end {
		sum.PercentByCPU[cpu] = round1(stealPercent(s.first[cpu], t))
	}
	for _, p := range s.perSecond {
		sum.WorstSecondPercent = max(sum.WorstSecondPercent, round1(p))
	}
	return sum, s.perSecond
}

// stealPercent is the share of steal in the time between two samples.
func stealPercent(from, to cpuTimes) float64 {
	if to.total <= from.total || to.steal < from.steal {
		return 0
	}
	return 100 * float64(to.steal-from.steal) / float64(to.total-from.total)
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }

// readCPUTimes reads the per-CPU lines (cpu0, cpu1, ...) of /proc/stat.
func readCPUTimes(path string) (map[string]cpuTimes, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseCPUTimes(data), nil
}

// parseCPUTimes parses /proc/stat's "cpuN user nice system idle iowait irq
// softirq steal ..." lines; steal is the eighth time (Linux 2.6.11 on).
func parseCPUTimes(data []byte) map[string]cpuTimes {
	out := map[string]cpuTimes{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var t cpuTimes
		for i, v := range f[1:] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				break
			}
			if i < 8 { // guest times are already counted in user and nice
				t.total += n
			}
			if i == 7 {
				t.steal = n
			}
		}
		out[f[0]] = t
	}
	return out
}

// haltPollString describes a guest halt polling time for the table.
func haltPollString(ns int64) string {
	if ns <= 0 {
		return "off (an idle vCPU halts at once)"
	}
	return "an idle vCPU polls up to " + time.Duration(ns).String() + " before it halts"
}
