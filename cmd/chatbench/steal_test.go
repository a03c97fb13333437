package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const procStat = `cpu  300 0 100 9000 0 0 0 60 0 0
cpu0 100 0 50 4500 0 0 0 50 7 0
cpu1 200 0 50 4500 0 0 0 10 0 0
intr 12345
`

func TestParseCPUTimes(t *testing.T) {
	got := parseCPUTimes([]byte(procStat))
	want := map[string]cpuTimes{"cpu0": {total: 4700, steal: 50}, "cpu1": {total: 4760, steal: 10}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for cpu, w := range want {
		if got[cpu] != w {
			t.Errorf("%s: got %+v, want %+v", cpu, got[cpu], w)
		}
	}
}

// The run's steal is the share of steal in each CPU's time between the
// first sample and the last.
func TestStealOverARun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stat")
	if err := os.WriteFile(path, []byte(procStat), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startSteal(path)
	if s == nil {
		t.Fatal("no sampler")
	}
	// 200 more ticks on cpu0, 50 of them stolen; cpu1 ran 100 with none.
	later := `cpu0 200 0 100 4500 0 0 0 100 0 0
cpu1 250 0 100 4500 0 0 0 10 0 0
`
	if err := os.WriteFile(path, []byte(later), 0o600); err != nil {
		t.Fatal(err)
	}
	sum, _ := s.finish()
	if got := sum.PercentByCPU["cpu0"]; got != 25 {
		t.Errorf("cpu0 steal %v%%, want 25", got)
	}
	if got := sum.PercentByCPU["cpu1"]; got != 0 {
		t.Errorf("cpu1 steal %v%%, want 0", got)
	}
	if startSteal(filepath.Join(t.TempDir(), "missing")) != nil {
		t.Error("a sampler without /proc/stat")
	}
}

// The halt polling limit counts only where the haltpoll governor idles
// the CPUs.
func TestGuestHaltPoll(t *testing.T) {
	dir := t.TempDir()
	saved := haltPoll
	defer func() { haltPoll = saved }()
	haltPoll.limit = filepath.Join(dir, "guest_halt_poll_ns")
	haltPoll.governor = filepath.Join(dir, "current_governor_ro")
	write := func(path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if guestHaltPoll() != nil {
		t.Error("a halt polling limit without the files")
	}
	for _, c := range []struct {
		governor, limit string
		want            int64
		ok              bool
	}{
		{"haltpoll\n", "0\n", 0, true},
		{"haltpoll\n", "200000\n", 200000, true},
		{"haltpoll\n", "poll\n", 0, false},
		{"menu\n", "200000\n", 0, false}, // built in, not in use
	} {
		write(haltPoll.governor, c.governor)
		write(haltPoll.limit, c.limit)
		got := guestHaltPoll()
		if (got != nil) != c.ok || (got != nil && *got != c.want) {
			t.Errorf("governor %q, limit %q: got %v, want %d (ok %v)", c.governor, c.limit, got, c.want, c.ok)
		}
	}
}

// The table has a halt polling row only where the report has a limit, and
// the JSON a guest_halt_poll_ns only then.
func TestHaltPollInTheReport(t *testing.T) {
	limit := int64(20_000_000)
	for _, c := range []struct {
		limit    *int64
		row, key string
	}{
		{&limit, "an idle vCPU polls up to 20ms before it halts", `"guest_halt_poll_ns":20000000`},
		{new(int64), "off (an idle vCPU halts at once)", `"guest_halt_poll_ns":0`},
		{nil, "", ""},
	} {
		s := &summary{Command: "paced", Steal: &stealSummary{PercentByCPU: map[string]float64{"cpu0": 1}, GuestHaltPollNs: c.limit}}
		var table bytes.Buffer
		printTable(&table, s)
		js, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		hasRow := strings.Contains(table.String(), "guest halt polling")
		if hasRow != (c.row != "") || !strings.Contains(table.String(), c.row) {
			t.Errorf("limit %v: table\n%s", c.limit, table.String())
		}
		hasKey := strings.Contains(string(js), "guest_halt_poll_ns")
		if hasKey != (c.key != "") || !strings.Contains(string(js), c.key) {
			t.Errorf("limit %v: JSON %s", c.limit, js)
		}
	}
}
