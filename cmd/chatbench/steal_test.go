package main

import (
	"os"
	"path/filepath"
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

func TestGuestHaltPoll(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		content string
		want    int64
		ok      bool
	}{{"0\n", 0, true}, {"200000\n", 200000, true}, {"poll\n", 0, false}} {
		path := filepath.Join(dir, "guest_halt_poll_ns")
		if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got := guestHaltPoll(path)
		if (got != nil) != c.ok || (got != nil && *got != c.want) {
			t.Errorf("%q: got %v, want %d (ok %v)", c.content, got, c.want, c.ok)
		}
	}
	if guestHaltPoll(filepath.Join(dir, "missing")) != nil {
		t.Error("a halt polling time without the file")
	}
	if got := haltPollString(20_000_000); got != "20ms before an idle vCPU halts" {
		t.Errorf("haltPollString: %q", got)
	}
}
