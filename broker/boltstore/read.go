package boltstore

// Reading: what is committed, merged with what is queued and not yet
// committed, so that a reader never waits for the disk.

import (
	"encoding/binary"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"

	"github.com/chatd/chatd/broker"
)

// snapshot copies the pending messages of room for which keep is true. It
// must be taken before the read transaction starts: a message that commits
// in between is then in both, and never in neither.
func (s *Store) snapshot(room string, keep func(seq uint64) bool) ([]broker.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, broker.ErrHistoryClosed
	}
	var out []broker.Message
	for _, m := range s.pending[room] {
		if keep(m.Seq) {
			out = append(out, m)
		}
	}
	return out, nil
}

// After implements broker.History.
func (s *Store) After(room string, since uint64, limit int) ([]broker.Message, bool, error) {
	if since == math.MaxUint64 {
		return nil, true, nil
	}
	pend, err := s.snapshot(room, func(seq uint64) bool { return seq > since })
	if err != nil {
		return nil, false, err
	}
	// Pending seqs are above all committed ones, so the database part ends
	// below the first pending message; this also drops the duplicates of a
	// batch that committed after the snapshot.
	upto := uint64(math.MaxUint64)
	if len(pend) > 0 {
		upto = pend[0].Seq
	}
	var msgs []broker.Message
	complete := true
	err = s.db.View(func(tx *bolt.Tx) error {
		rb := roomBucket(tx, room)
		if rb == nil {
			return nil
		}
		complete = since >= readMeta(rb).pruned
		c := rb.Cursor()
		// The meta key is not 8 bytes long and ends the walk.
		for k, v := c.Seek(seqKey(since + 1)); len(k) == 8 && len(msgs) < limit; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			if seq >= upto {
				break
			}
			m, err := decode(room, seq, v)
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("read history of %q after %d: %w", room, since, err)
	}
	for _, m := range pend {
		if len(msgs) >= limit {
			break
		}
		msgs = append(msgs, m)
	}
	return msgs, complete, nil
}

// Before implements broker.History.
func (s *Store) Before(room string, before uint64, limit int) ([]broker.Message, error) {
	if limit <= 0 || before == 1 {
		return nil, nil
	}
	upto := uint64(math.MaxUint64) // inclusive
	if before != 0 {
		upto = before - 1
	}
	pend, err := s.snapshot(room, func(seq uint64) bool { return seq <= upto })
	if err != nil {
		return nil, err
	}
	if len(pend) >= limit {
		return pend[len(pend)-limit:], nil
	}
	if len(pend) > 0 {
		upto = pend[0].Seq - 1
	}
	need := limit - len(pend)
	var rev []broker.Message // newest first
	err = s.db.View(func(tx *bolt.Tx) error {
		rb := roomBucket(tx, room)
		if rb == nil {
			return nil
		}
		c := rb.Cursor()
		k, v := c.Seek(seqKey(upto))
		if k == nil {
			k, v = c.Last()
		}
		if len(k) != 8 || binary.BigEndian.Uint64(k) > upto {
			k, v = c.Prev() // off the meta key or the first seq above upto
		}
		for ; len(k) == 8 && len(rev) < need; k, v = c.Prev() {
			m, err := decode(room, binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			rev = append(rev, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read history of %q before %d: %w", room, before, err)
	}
	out := make([]broker.Message, 0, len(rev)+len(pend))
	for i := len(rev) - 1; i >= 0; i-- {
		out = append(out, rev[i])
	}
	return append(out, pend...), nil
}

// LastSeq implements broker.History. The answer survives pruning and
// restarts because the room's meta keeps it.
func (s *Store) LastSeq(room string) (uint64, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, broker.ErrHistoryClosed
	}
	last, ok := s.last[room]
	s.mu.Unlock()
	if ok {
		return last, nil
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if rb := roomBucket(tx, room); rb != nil {
			last = readMeta(rb).last
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read last seq of %q: %w", room, err)
	}
	return last, nil
}

// SeqFloor implements broker.History: the room's last seq, or the floor
// the last start after a crash set for it (raiseFloors), whichever is
// higher.
func (s *Store) SeqFloor(room string) (uint64, error) {
	last, err := s.LastSeq(room)
	if err != nil {
		return 0, err
	}
	var floor uint64
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(floorsBucket)).Get([]byte(room))
		if v == nil && roomBucket(tx, room) == nil {
			v = tx.Bucket([]byte(stateBucket)).Get([]byte(newRoomFloorKey))
		}
		floor = getUint64(v)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read seq floor of %q: %w", room, err)
	}
	return max(last, floor), nil
}
