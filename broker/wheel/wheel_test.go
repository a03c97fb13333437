package wheel

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNeverEarlyAndPrompt(t *testing.T) {
	w := New(2*time.Millisecond, 64) // few slots: most timers go round more than once
	defer w.Stop()
	const n = 2000
	var wg sync.WaitGroup
	wg.Add(n)
	late := make([]time.Duration, n)
	base := time.Now()
	for i := range n {
		at := base.Add(time.Duration(rand.IntN(400)) * time.Millisecond)
		w.Schedule(NewTimer(func() {
			late[i] = time.Since(at)
			wg.Done()
		}), at)
	}
	wg.Wait()
	for i, d := range late {
		if d < 0 {
			t.Fatalf("timer %d fired %v early", i, -d)
		}
		if d > 200*time.Millisecond {
			t.Errorf("timer %d fired %v late", i, d)
		}
	}
	if w.Len() != 0 {
		t.Errorf("Len = %d after all fired", w.Len())
	}
}

func TestCancelAndReschedule(t *testing.T) {
	w := New(time.Millisecond, 16)
	defer w.Stop()
	fired := make(chan string, 3)
	cancelled := NewTimer(func() { fired <- "cancelled" })
	moved := NewTimer(func() { fired <- "moved" })
	marker := NewTimer(func() { fired <- "marker" })

	now := time.Now()
	w.Schedule(cancelled, now.Add(20*time.Millisecond))
	w.Schedule(moved, now.Add(10*time.Millisecond))
	if !w.Cancel(cancelled) {
		t.Fatal("Cancel of a scheduled timer reported false")
	}
	if w.Cancel(cancelled) {
		t.Fatal("second Cancel reported true")
	}
	w.Schedule(moved, now.Add(60*time.Millisecond)) // moved later: O(1) re-link
	w.Schedule(marker, now.Add(40*time.Millisecond))

	if got := <-fired; got != "marker" {
		t.Fatalf("first to fire = %q, want marker", got)
	}
	if got := <-fired; got != "moved" {
		t.Fatalf("second to fire = %q, want moved", got)
	}
	if since := time.Since(now); since < 60*time.Millisecond {
		t.Fatalf("moved timer fired after %v, before its new time", since)
	}
	select {
	case got := <-fired:
		t.Fatalf("%q fired after being cancelled", got)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestPastTimeFiresNextTick(t *testing.T) {
	w := New(time.Millisecond, 8)
	defer w.Stop()
	done := make(chan struct{})
	w.Schedule(NewTimer(func() { close(done) }), time.Now().Add(-time.Hour))
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("a timer in the past did not fire")
	}
}

func BenchmarkScheduleCancel(b *testing.B) {
	w := New(5*time.Millisecond, 4096)
	defer w.Stop()
	timers := make([]*Timer, 1024)
	for i := range timers {
		timers[i] = NewTimer(func() {})
	}
	at := time.Now().Add(time.Hour)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		t := timers[i%len(timers)]
		w.Schedule(t, at.Add(time.Duration(i)*time.Millisecond))
		w.Cancel(t)
	}
}

// A wheel whose timers are far off does not wake every tick, and a timer
// scheduled meanwhile for sooner still fires on time.
func TestSleepsUntilTheNextTimer(t *testing.T) {
	w := New(time.Millisecond, 4096)
	defer w.Stop()
	w.Schedule(NewTimer(func() {}), time.Now().Add(time.Hour))
	wakes := func() int {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.wakes
	}
	before := wakes()
	time.Sleep(300 * time.Millisecond) // 300 ticks, 3 maxSleeps
	if n := wakes() - before; n > 6 {
		t.Fatalf("woke %d times in 300 ticks with nothing due", n)
	}
	fired := make(chan time.Time, 1)
	at := time.Now().Add(20 * time.Millisecond)
	w.Schedule(NewTimer(func() { fired <- time.Now() }), at)
	select {
	case got := <-fired:
		if got.Before(at) {
			t.Fatalf("fired %v early", at.Sub(got))
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a timer scheduled while the wheel slept did not fire")
	}
}

// A step of the wall clock forward fires what it made due within
// maxSleep, not after the rest of a long sleep.
func TestWallClockStepForward(t *testing.T) {
	w := New(time.Millisecond, 4096)
	defer w.Stop()
	fired := make(chan time.Time, 1)
	w.Schedule(NewTimer(func() { fired <- time.Now() }), time.Now().Add(10*time.Second))
	time.Sleep(20 * time.Millisecond) // the wheel is asleep
	w.mu.Lock()
	w.start = w.start.Add(-10 * time.Second) // as if the clock had jumped 10 s
	stepped := time.Now()
	w.mu.Unlock()
	select {
	case got := <-fired:
		if late := got.Sub(stepped); late > maxSleep+50*time.Millisecond {
			t.Fatalf("fired %v after the step", late)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the timer did not fire after the step")
	}
}

// Tokens expire at whole seconds: a tick must fall on each of them, or
// every socket of an expiry burst waits up to a tick for the next one.
func TestTicksFallOnWholeSeconds(t *testing.T) {
	for _, tick := range []time.Duration{time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond} {
		w := New(tick, 0)
		w.Stop()
		next := time.Now().Truncate(time.Second).Add(time.Second)
		for s := range 3 {
			exp := next.Add(time.Duration(s) * time.Second)
			n := w.tickOf(exp)
			if at := w.start.Add(time.Duration(n) * tick); !at.Equal(exp) {
				t.Errorf("tick %v: a timer at %v fires at the tick of %v, %v late", tick, exp, at, at.Sub(exp))
			}
		}
	}
}

// AfterBurst defers work to the end of a burst: during one it queues f,
// which runs on the wheel's goroutine after the burst's last timer; with
// no burst firing it says so and queues nothing.
func TestAfterBurst(t *testing.T) {
	w := New(time.Millisecond, 0)
	defer w.Stop()
	if w.AfterBurst(func() { t.Error("ran without a burst") }) {
		t.Fatal("an idle wheel says it is firing a burst")
	}

	const n = 3 * yieldEvery
	at := time.Now().Add(100 * time.Millisecond) // all in one tick, whatever the scheduling
	var fired int                                // touched on the wheel's goroutine only
	var deferred atomic.Int32
	var firedBeforeDeferred []int
	done := make(chan struct{})
	for i := range n {
		w.Schedule(NewTimer(func() {
			fired++
			if i%2 == 0 {
				// As a socket answering its close does, mid-burst.
				if !w.AfterBurst(func() {
					firedBeforeDeferred = append(firedBeforeDeferred, fired)
					if deferred.Add(1) == n/2 {
						close(done)
					}
				}) {
					t.Errorf("timer %d: no burst while firing %d timers due at once", i, n)
				}
			}
		}), at)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%d of %d deferred funcs ran", deferred.Load(), n/2)
	}
	for i, f := range firedBeforeDeferred {
		if f != n {
			t.Fatalf("deferred func %d ran after %d of the burst's %d timers, want after all", i, f, n)
		}
	}

	// The burst is over: a single timer is no burst.
	small := make(chan bool, 1)
	w.Schedule(NewTimer(func() { small <- w.AfterBurst(func() {}) }), time.Now())
	if <-small {
		t.Error("a single timer made the wheel a burst")
	}
}

// A burst too large for one processor is shared: the first timer of the
// burst waits for the last one to have fired, which only a second
// goroutine can do meanwhile.
func TestBurstIsShared(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	w := New(time.Millisecond, 0)
	defer w.Stop()

	const n = 4 * perGoroutine
	at := time.Now().Add(100 * time.Millisecond) // all in one tick
	lastFired := make(chan struct{})
	var fired, deferred atomic.Int32
	done := make(chan struct{})
	for i := range n {
		w.Schedule(NewTimer(func() {
			switch i {
			case 0:
				select {
				case <-lastFired:
				case <-time.After(10 * time.Second):
					t.Error("the burst's last timer did not fire while its first one ran")
				}
			case n - 1:
				close(lastFired)
			}
			fired.Add(1)
			if !w.AfterBurst(func() {
				if got := fired.Load(); got != n {
					t.Errorf("a deferred func ran after %d of the burst's %d timers", got, n)
				}
				if deferred.Add(1) == n {
					close(done)
				}
			}) {
				t.Errorf("timer %d: no burst while firing %d timers due at once", i, n)
			}
		}), at)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%d of %d timers fired, %d deferred funcs ran", fired.Load(), n, deferred.Load())
	}
}
