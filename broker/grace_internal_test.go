package broker

import (
	"testing"
	"time"

	"github.com/chatd/chatd/broker/wheel"
)

// A refresh that reschedules the token's close while the close frame goes
// out must not push the close grace back: s.expire is the grace once
// awaitClose has run, whichever of the two schedules it last.
func TestRefreshDoesNotMoveTheCloseGrace(t *testing.T) {
	w := wheel.New(time.Millisecond, 0)
	defer w.Stop()
	b := &Broker{wheel: w, opts: Options{ExpiryWarning: 30 * time.Second}}
	fired := make(chan time.Time, 1)
	s := &Session{broker: b}
	s.expire = wheel.NewTimer(func() { fired <- time.Now() })
	s.warn = wheel.NewTimer(func() {})

	start := time.Now()
	s.awaitClose()
	s.schedule(time.Now().Add(time.Hour)) // the refresh, after the close frame
	select {
	case at := <-fired:
		if d := at.Sub(start); d < closeGrace {
			t.Fatalf("the grace timer fired after %v, before closeGrace (%v)", d, closeGrace)
		}
	case <-time.After(closeGrace + 3*time.Second):
		t.Fatal("the refresh moved the close grace: nothing fired")
	}
}

// A negative ExpiryWarning (--expiry-warning 0) schedules no warning, even
// for a token far from its end; the default schedules one.
func TestNoWarningScheduled(t *testing.T) {
	w := wheel.New(time.Millisecond, 0)
	defer w.Stop()
	for _, tc := range []struct {
		warning time.Duration
		want    bool
	}{{-1, false}, {0, true}} {
		opts := Options{ExpiryWarning: tc.warning}
		opts.defaults()
		s := &Session{broker: &Broker{wheel: w, opts: opts}}
		s.expire = wheel.NewTimer(func() {})
		s.warn = wheel.NewTimer(func() {})
		s.schedule(time.Now().Add(time.Hour))
		if got := w.Cancel(s.warn); got != tc.want {
			t.Errorf("ExpiryWarning %v: warning scheduled %v, want %v", tc.warning, got, tc.want)
		}
		w.Cancel(s.expire)
	}
}
