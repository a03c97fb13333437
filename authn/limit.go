package authn

import (
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// KeyedLimiter is a token bucket per key (a client address). Idle buckets
// are forgotten so the map cannot grow without bound.
type KeyedLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	swept   time.Time
}

// NewKeyedLimiter returns a limiter of limit per second per key, burst
// burst; rate.Inf allows everything.
func NewKeyedLimiter(limit rate.Limit, burst int) *KeyedLimiter {
	return &KeyedLimiter{limit: limit, burst: burst, buckets: make(map[string]*rate.Limiter)}
}

// bucket returns key's limiter, creating a full one if needed.
func (k *KeyedLimiter) bucket(key string, now time.Time) *rate.Limiter {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.Sub(k.swept) > time.Minute {
		// A bucket that has refilled completely carries no information.
		for key, l := range k.buckets {
			if l.TokensAt(now) >= float64(k.burst) {
				delete(k.buckets, key)
			}
		}
		k.swept = now
	}
	l := k.buckets[key]
	if l == nil {
		l = rate.NewLimiter(k.limit, k.burst)
		k.buckets[key] = l
	}
	return l
}

// Allow takes one token for key; when none is left it returns false and how
// long until one will be.
func (k *KeyedLimiter) Allow(key string, now time.Time) (bool, time.Duration) {
	if k.limit == rate.Inf {
		return true, 0
	}
	l := k.bucket(key, now)
	r := l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// failureWindow counts failures per key (a username) over a sliding
// window: "10 failed logins within a minute" means exactly that, however
// they are spaced, where a token bucket would have refilled between
// failures a few seconds apart and never refused them.
type failureWindow struct {
	max    int
	window time.Duration

	mu    sync.Mutex
	keys  map[string][]*attempt // each key's recent failures and attempts in flight, oldest first
	swept time.Time
}

// attempt is one login attempt, counted as a failure unless cancelled.
type attempt struct{ at time.Time }

func newFailureWindow(limit int, window time.Duration) *failureWindow {
	return &failureWindow{max: limit, window: window, keys: make(map[string][]*attempt)}
}

// reserve counts an attempt for key as a failure up front (checking the
// password first would let concurrent guesses all through), and returns
// a function that takes it back on success. When max failures already
// lie within the window it returns nil and how long until the oldest
// leaves it.
func (f *failureWindow) reserve(key string, now time.Time) (cancel func(), wait time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Sub(f.swept) > f.window {
		// A key whose failures have all left the window carries nothing.
		for k, list := range f.keys {
			if len(f.recent(list, now)) == 0 {
				delete(f.keys, k)
			}
		}
		f.swept = now
	}
	list := f.recent(f.keys[key], now)
	if len(list) >= f.max {
		f.keys[key] = list
		return nil, list[0].at.Add(f.window).Sub(now)
	}
	a := &attempt{at: now}
	f.keys[key] = append(list, a)
	return func() { f.forget(key, a) }, 0
}

// recent drops from list the failures that have left the window.
func (f *failureWindow) recent(list []*attempt, now time.Time) []*attempt {
	i := 0
	for i < len(list) && !list[i].at.After(now.Add(-f.window)) {
		i++
	}
	return list[i:]
}

// forget takes back an attempt that succeeded.
func (f *failureWindow) forget(key string, a *attempt) {
	f.mu.Lock()
	defer f.mu.Unlock()
	list := f.keys[key]
	if i := slices.Index(list, a); i >= 0 {
		f.keys[key] = slices.Delete(list, i, i+1)
	}
}
