package boltstore

// Retention: every PruneInterval, the messages beyond MaxPerRoom or older
// than MaxAge go, in transactions of at most pruneBatch deletions.

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// pruneLoop enforces retention every PruneInterval until Close.
func (s *Store) pruneLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case now := <-t.C:
			n, err := s.prune(now)
			if err != nil {
				s.log.Warn().Err(err).Int("deleted", n).Msg("history prune failed")
			} else if n > 0 {
				s.log.Debug().Int("deleted", n).Msg("history pruned")
			}
		}
	}
}

// prune deletes the messages that retention no longer keeps as of now and
// returns how many it deleted. A read pass finds the rooms with work, so
// an idle store costs no write transaction (and no fsync); the deletions
// then run in transactions of at most pruneBatch keys each.
func (s *Store) prune(now time.Time) (int, error) {
	if s.opts.MaxPerRoom < 0 && s.opts.MaxAge == 0 {
		return 0, nil
	}
	cutoff := int64(math.MinInt64)
	if s.opts.MaxAge > 0 {
		cutoff = now.Add(-s.opts.MaxAge).UnixMilli()
	}

	var rooms []string
	err := s.db.View(func(tx *bolt.Tx) error {
		hist := tx.Bucket([]byte(historyBucket))
		if hist == nil {
			return nil
		}
		return hist.ForEachBucket(func(name []byte) error {
			rb := hist.Bucket(name)
			if s.excess(readMeta(rb)) > 0 {
				rooms = append(rooms, string(name))
				return nil
			}
			if k, v := rb.Cursor().First(); len(k) == 8 && tsOf(v) < cutoff {
				rooms = append(rooms, string(name))
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("find rooms to prune: %w", err)
	}

	deleted := 0
	for len(rooms) > 0 {
		select {
		case <-s.quit:
			return deleted, nil // the rest waits for the next start
		default:
		}
		budget := pruneBatch
		err := s.db.Update(func(tx *bolt.Tx) error {
			hist := tx.Bucket([]byte(historyBucket))
			if hist == nil {
				rooms = nil
				return nil
			}
			for len(rooms) > 0 && budget > 0 {
				rb := hist.Bucket([]byte(rooms[0]))
				if rb == nil {
					rooms = rooms[1:]
					continue
				}
				n, finished, err := s.pruneRoom(rb, cutoff, budget)
				if err != nil {
					return fmt.Errorf("room %q: %w", rooms[0], err)
				}
				budget -= n
				if finished {
					rooms = rooms[1:]
				}
			}
			return nil
		})
		if err != nil {
			return deleted, fmt.Errorf("prune: %w", err)
		}
		deleted += pruneBatch - budget
	}
	return deleted, nil
}

// excess is how many messages a room holds over MaxPerRoom.
func (s *Store) excess(m meta) uint64 {
	if s.opts.MaxPerRoom < 0 || m.count <= uint64(s.opts.MaxPerRoom) {
		return 0
	}
	return m.count - uint64(s.opts.MaxPerRoom)
}

// pruneRoom deletes, oldest first and at most budget of them, the messages
// of rb over the count limit or older than cutoff (unix ms). finished is
// false when the budget ran out first.
func (s *Store) pruneRoom(rb *bolt.Bucket, cutoff int64, budget int) (n int, finished bool, err error) {
	m := readMeta(rb)
	over := s.excess(m)
	var seqs []uint64
	c := rb.Cursor()
	k, v := c.First()
	for ; len(k) == 8; k, v = c.Next() {
		if uint64(len(seqs)) >= over && tsOf(v) >= cutoff {
			break
		}
		if len(seqs) == budget {
			break
		}
		seqs = append(seqs, binary.BigEndian.Uint64(k))
	}
	finished = len(seqs) < budget || len(k) != 8
	if len(seqs) == 0 {
		return 0, true, nil
	}
	// Deleting under a live cursor can skip keys in bbolt, so the keys are
	// collected first and deleted by value.
	for _, seq := range seqs {
		if err := rb.Delete(seqKey(seq)); err != nil {
			return 0, false, err
		}
	}
	m.pruned = max(m.pruned, seqs[len(seqs)-1])
	m.count -= min(m.count, uint64(len(seqs)))
	if err := rb.Put([]byte(metaKey), m.encode()); err != nil {
		return 0, false, err
	}
	return len(seqs), finished, nil
}
