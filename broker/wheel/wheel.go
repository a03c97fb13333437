// Package wheel is a hashed timing wheel: one goroutine keeps any number of
// timers (and shares a large burst of them among GOMAXPROCS goroutines),
// scheduling and cancelling are O(1), and no timer ever fires before its
// time.
//
// chatd keeps two timers per socket (the expiry warning and the close), so
// at tens of thousands of sockets a runtime timer each would cost memory and
// contention for nothing: the wheel needs one ticking goroutine in all.
package wheel

import (
	"runtime"
	"sync"
	"time"
)

// Timer is one scheduled callback. Its zero value is not usable; make it
// with NewTimer. A Timer belongs to at most one Wheel.
type Timer struct {
	fire       func()
	tick       int64 // the tick at which it fires
	prev, next *Timer
	slot       *Timer // the slot's sentinel while scheduled, else nil
}

// NewTimer returns an unscheduled timer that calls fire when it expires.
// fire runs on the wheel's goroutine, or in a large burst on one of the
// goroutines the wheel shares the burst with, so different timers' fires
// may run at once. It must be quick and must not block.
func NewTimer(fire func()) *Timer { return &Timer{fire: fire} }

// Wheel fires timers at tick granularity: a timer for t fires on the first
// tick at or after t, so it is late by less than a tick plus scheduling
// delay, and never early.
type Wheel struct {
	tick  time.Duration
	start time.Time // wall clock of tick 0

	mu      sync.Mutex
	slots   []Timer // sentinels of circular lists
	current int64   // the last tick processed
	count   int
	wakeAt  int64 // the tick the goroutine sleeps until

	kick     chan struct{} // a timer was scheduled before wakeAt
	bursting bool          // firing more timers than fire between yields; under mu
	after    []func()      // what waits for the burst's end (AfterBurst); under mu
	stop     chan struct{}
	done     chan struct{}
	wakes    int // loop turns, for tests
}

// yieldEvery is how many timers fire between yields of the processor.
const yieldEvery = 64

// New starts a wheel that ticks every tick (5ms if tick <= 0) with slots
// buckets (4096 if slots <= 0). Timers further ahead than tick*slots wait
// in their bucket for more than one turn; that costs a look per turn.
func New(tick time.Duration, slots int) *Wheel {
	if tick <= 0 {
		tick = 5 * time.Millisecond
	}
	if slots <= 0 {
		slots = 4096
	}
	w := &Wheel{
		tick: tick,
		// Wall clock, as expiry times are wall times; and a multiple of
		// tick, so that ticks fall on whole seconds where tokens' exps do
		// (for a tick dividing a second). With an arbitrary start, a timer
		// at a whole second would wait for the next tick, up to one tick
		// late, every socket of an expiry burst included.
		start: time.Now().Truncate(tick),
		slots: make([]Timer, slots),
		kick:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	for i := range w.slots {
		s := &w.slots[i]
		s.prev, s.next = s, s
	}
	go w.run()
	return w
}

// tickOf returns the first tick whose time is at or after t.
func (w *Wheel) tickOf(t time.Time) int64 {
	d := t.Sub(w.start)
	n := int64(d / w.tick)
	if d%w.tick > 0 {
		n++
	}
	return n
}

// Schedule sets t to fire at when, replacing any earlier schedule. A time
// already past fires on the next tick.
func (w *Wheel) Schedule(t *Timer, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t.slot != nil {
		w.unlink(t)
	}
	n := w.tickOf(at)
	if n <= w.current {
		n = w.current + 1
	}
	t.tick = n
	s := &w.slots[n%int64(len(w.slots))]
	t.slot = s
	t.prev, t.next = s.prev, s
	s.prev.next = t
	s.prev = t
	w.count++
	if n < w.wakeAt {
		w.wakeAt = n
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// Cancel unschedules t and reports whether it was scheduled. A timer the
// wheel has already taken to fire (due, its function not yet run) is not
// scheduled any more: Cancel returns false and the function still runs,
// so a timer's function must check that its work is still wanted.
func (w *Wheel) Cancel(t *Timer) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t.slot == nil {
		return false
	}
	w.unlink(t)
	return true
}

// Len returns how many timers are scheduled.
func (w *Wheel) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count
}

func (w *Wheel) unlink(t *Timer) {
	t.prev.next = t.next
	t.next.prev = t.prev
	t.prev, t.next, t.slot = nil, nil, nil
	w.count--
}

// Stop ends the wheel's goroutine; timers still scheduled never fire.
func (w *Wheel) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// run fires what is due, then sleeps until the next tick whose slot holds
// a timer (maxSleep at most): an idle wheel, or one whose timers are
// minutes away, does not wake every tick. A Schedule for an earlier
// tick wakes it.
func (w *Wheel) run() {
	defer close(w.done)
	sleep := time.NewTimer(w.tick)
	defer sleep.Stop()
	var due []*Timer
	for {
		select {
		case <-w.stop:
			return
		case <-w.kick:
			if !sleep.Stop() {
				select {
				case <-sleep.C:
				default:
				}
			}
		case <-sleep.C:
		}
		now := time.Now().Round(0)
		due = w.advance(now, due[:0])
		burst := len(due) > yieldEvery
		if burst {
			w.mu.Lock()
			w.bursting = true
			w.mu.Unlock()
		}
		fire(due)
		if burst {
			w.endBurst()
		}
		w.mu.Lock()
		w.wakes++
		w.wakeAt = w.nextBusyTick()
		next := w.start.Add(time.Duration(w.wakeAt) * w.tick)
		w.mu.Unlock()
		sleep.Reset(max(0, time.Until(next)))
	}
}

// perGoroutine is the fewest due timers worth a goroutine of their own:
// about 2.5 ms of closing sockets, against microseconds to start it.
const perGoroutine = 256

// fire runs the due timers. Thousands can fall due in one tick (tokens
// minted in the same second), and each costs a socket's close: some
// microseconds, most of them the kernel's. One goroutine would close them
// one after another on one processor; so a burst is split among up to
// GOMAXPROCS goroutines, the wheel's own among them, and the wheel goes
// on when all are done.
func fire(due []*Timer) {
	parts := min(runtime.GOMAXPROCS(0), len(due)/perGoroutine)
	if parts <= 1 {
		fireInTurn(due)
		return
	}
	var wg sync.WaitGroup
	size := (len(due) + parts - 1) / parts
	for start := size; start < len(due); start += size {
		part := due[start:min(start+size, len(due))]
		wg.Go(func() { fireInTurn(part) })
	}
	fireInTurn(due[:size])
	wg.Wait()
}

// fireInTurn runs the timers one after another, letting other goroutines
// (the ones carrying everybody else's traffic) in between batches rather
// than after the whole burst.
func fireInTurn(due []*Timer) {
	for i, t := range due {
		t.fire()
		due[i] = nil // let fired timers' owners be collected
		yieldBetweenBatches(i, len(due))
	}
}

// AfterBurst reports whether the wheel is firing a burst: more timers due
// at once than it fires between two yields of the processor. If it is, f
// runs on the wheel's goroutine once the burst has fired, in batches
// between yields as timers do; if not, f does not run (the caller does
// the work itself). Work that a burst's timers cause and that can wait
// for its end (tearing down the sockets they closed, as the peers answer)
// goes there, so that the burst's yields let in the traffic that cannot
// wait instead. Like a timer's, f must be quick and must not block.
// AfterBurst never blocks.
func (w *Wheel) AfterBurst(f func()) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bursting {
		w.after = append(w.after, f)
	}
	return w.bursting
}

// endBurst ends the burst and runs what waited for its end, in batches
// between yields. What asks later is no longer deferred (AfterBurst says
// no burst): every timer of the burst has fired by then, and a queue
// refilled while it ran could keep the wheel from its next timers.
func (w *Wheel) endBurst() {
	w.mu.Lock()
	after := w.after
	w.after, w.bursting = nil, false
	w.mu.Unlock()
	for i, f := range after {
		f()
		yieldBetweenBatches(i, len(after))
	}
}

// yieldBetweenBatches yields the processor after every yieldEvery-th of n
// items run in turn on one goroutine, except after the last.
func yieldBetweenBatches(i, n int) {
	if i%yieldEvery == yieldEvery-1 && i < n-1 {
		runtime.Gosched()
	}
}

// maxSleep bounds the wheel's sleep. Ticks are wall-clock times and the
// sleep runs on the monotonic clock: after the wall clock steps forward
// (NTP, a resumed VM), timers already due wait for the sleep to end.
const maxSleep = 100 * time.Millisecond

// nextBusyTick returns the first tick after current whose slot holds a
// timer, looking no further than maxSleep (and a turn) ahead. (The timer
// found may be due on a later turn: the wheel then wakes and looks again.)
func (w *Wheel) nextBusyTick() int64 {
	n := int64(len(w.slots))
	limit := w.current + max(1, min(n, int64(maxSleep/w.tick)))
	if w.count > 0 {
		for tick := w.current + 1; tick < limit; tick++ {
			if s := &w.slots[tick%n]; s.next != s {
				return tick
			}
		}
	}
	return limit
}

// advance processes every tick whose time has come by now and returns the
// timers that are due.
func (w *Wheel) advance(now time.Time, due []*Timer) []*Timer {
	w.mu.Lock()
	defer w.mu.Unlock()
	// The last tick whose time is at or before now.
	target := int64(now.Sub(w.start) / w.tick)
	for w.current < target {
		w.current++
		s := &w.slots[w.current%int64(len(w.slots))]
		for t := s.next; t != s; {
			next := t.next
			if t.tick <= w.current {
				w.unlink(t)
				due = append(due, t)
			}
			t = next
		}
	}
	return due
}
