package authn

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

const revokedBucket = "revoked"

// Revocations is the denylist of logged-out tokens, keyed by jti. It is kept
// in the store so a restart does not forget it, and mirrored in memory
// because every verification consults it.
type Revocations struct {
	db  *bolt.DB
	now func() time.Time

	mu     sync.RWMutex
	jtis   map[string]time.Time // jti -> when the entry may go (the token's exp + leeway)
	pruned time.Time
}

// NewRevocations loads the denylist from db, dropping entries already past
// their exp.
func NewRevocations(db *bolt.DB, now func() time.Time) (*Revocations, error) {
	if now == nil {
		now = time.Now
	}
	r := &Revocations{db: db, now: now, jtis: make(map[string]time.Time)}
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(revokedBucket))
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				r.jtis[string(k)] = time.Unix(int64(binary.BigEndian.Uint64(v)), 0)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load revocations: %w", err)
	}
	return r, r.Prune()
}

// Revoke puts jti on the denylist until exp. It returns once the entry is
// on disk.
func (r *Revocations) Revoke(jti string, exp time.Time) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(exp.Unix()))
	if err := r.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(revokedBucket)).Put([]byte(jti), v[:])
	}); err != nil {
		return fmt.Errorf("store revocation: %w", err)
	}
	r.mu.Lock()
	r.jtis[jti] = exp
	prune := r.now().Sub(r.pruned) > time.Hour
	r.mu.Unlock()
	if prune {
		// Lazily, so a long-running server does not keep every logout. A
		// failure here must not undo the logout: the next one retries.
		_ = r.Prune()
	}
	return nil
}

// IsRevoked reports whether jti was revoked.
func (r *Revocations) IsRevoked(jti string) bool {
	r.mu.RLock()
	_, ok := r.jtis[jti]
	r.mu.RUnlock()
	return ok
}

// Prune forgets revocations whose token has expired anyway: the time kept
// with each already includes the verification leeway.
func (r *Revocations) Prune() error {
	now := r.now()
	r.mu.Lock()
	r.pruned = now
	r.mu.Unlock()
	cutoff := now
	var dead []string
	r.mu.RLock()
	for jti, exp := range r.jtis {
		if exp.Before(cutoff) {
			dead = append(dead, jti)
		}
	}
	r.mu.RUnlock()
	if len(dead) == 0 {
		return nil
	}
	if err := r.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(revokedBucket))
		for _, jti := range dead {
			if err := b.Delete([]byte(jti)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("prune revocations: %w", err)
	}
	r.mu.Lock()
	for _, jti := range dead {
		delete(r.jtis, jti)
	}
	r.mu.Unlock()
	return nil
}
