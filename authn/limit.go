package authn

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// keyedLimiter is a token bucket per key (a username, an IP address). Idle
// buckets are forgotten so the map cannot grow without bound.
type keyedLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	swept   time.Time
}

func newKeyedLimiter(limit rate.Limit, burst int) *keyedLimiter {
	return &keyedLimiter{limit: limit, burst: burst, buckets: make(map[string]*rate.Limiter)}
}

// bucket returns key's limiter, creating a full one if needed.
func (k *keyedLimiter) bucket(key string, now time.Time) *rate.Limiter {
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

// allow takes one token for key; when none is left it returns false and how
// long until one will be.
func (k *keyedLimiter) allow(key string, now time.Time) (bool, time.Duration) {
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

// reserve takes one token for key up front. When none is left it returns
// nil and how long until one will be; otherwise the reservation, which the
// caller cancels to give the token back.
func (k *keyedLimiter) reserve(key string, now time.Time) (*rate.Reservation, time.Duration) {
	r := k.bucket(key, now).ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return nil, d
	}
	return r, 0
}
