package boltstore

// Writing: Append queues a message, and commitLoop writes everything
// queued so far in one transaction (a batch), then tells each waiter.

import (
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/chatd/chatd/broker"
)

// Append implements broker.History. It only queues m, so it is cheap enough
// to call under a room's lock; done runs on the store's commit goroutine
// once m's transaction has committed (or failed), so it must not block and
// must not call Close, or the next batch waits for it. While the disk keeps
// up, the queue holds at most about one transaction's worth of messages.
// After Close, done gets broker.ErrHistoryClosed before Append returns, and
// for an unusable room name ErrBadRoom.
func (s *Store) Append(m broker.Message, done func(error)) {
	if m.Room == "" || len(m.Room) > bolt.MaxKeySize {
		// Refused here because bbolt would fail the whole batch for it.
		if done != nil {
			done(fmt.Errorf("append to room %.64q: %w", m.Room, ErrBadRoom))
		}
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		if done != nil {
			done(broker.ErrHistoryClosed)
		}
		return
	}
	s.queue = append(s.queue, entry{m: m, done: done})
	s.pending[m.Room] = append(s.pending[m.Room], m)
	if m.Seq > s.last[m.Room] {
		s.last[m.Room] = m.Seq
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default: // the loop is already due to run and will take m with the rest
	}
}

// commitLoop writes batches until Close; it is the only writer of messages,
// which is what lets one transaction carry every queued append.
func (s *Store) commitLoop() {
	defer s.wg.Done()
	var b batch
	for {
		select {
		case <-s.kick:
			b.flush(s)
		case <-s.quit:
			// Close set closed before closing quit, so nothing can be
			// queued after this last flush.
			s.closeErr = b.flush(s)
			return
		}
	}
}

// batch is the commit loop's scratch space, reused between transactions so
// that a steady stream of appends allocates little.
type batch struct {
	spare   []entry
	buf     []byte
	offsets []int // end of each entry's key+value in buf
	rooms   map[string]*roomBatch
}

// roomBatch is what one transaction adds to one room.
type roomBatch struct {
	n    int    // messages
	last uint64 // highest seq
}

// flush commits everything queued so far in one transaction and then
// reports the outcome to every done.
func (b *batch) flush(s *Store) error {
	s.mu.Lock()
	entries := s.queue
	s.queue = b.spare[:0]
	s.mu.Unlock()
	if len(entries) == 0 {
		b.spare = entries
		return nil
	}

	// Encode before the transaction so the write lock is held only for
	// the B+tree work. buf must not change until the commit: bbolt keeps
	// the key and value slices until then.
	if b.rooms == nil {
		b.rooms = make(map[string]*roomBatch)
	}
	clear(b.rooms)
	b.buf, b.offsets = b.buf[:0], b.offsets[:0]
	for _, e := range entries {
		b.buf = binary.BigEndian.AppendUint64(b.buf, e.m.Seq)
		b.buf = encode(b.buf, e.m)
		b.offsets = append(b.offsets, len(b.buf))
		rb := b.rooms[e.m.Room]
		if rb == nil {
			rb = &roomBatch{}
			b.rooms[e.m.Room] = rb
		}
		rb.n++
		rb.last = max(rb.last, e.m.Seq)
	}

	err := s.db.Update(func(tx *bolt.Tx) error {
		hist := tx.Bucket([]byte(historyBucket))
		if hist == nil {
			return errors.New("history bucket missing")
		}
		buckets := make(map[string]*bolt.Bucket, len(b.rooms))
		start := 0
		for i, e := range entries {
			end := b.offsets[i]
			rec := b.buf[start:end:end]
			start = end
			rb := buckets[e.m.Room]
			if rb == nil {
				var err error
				rb, err = hist.CreateBucketIfNotExists([]byte(e.m.Room))
				if err != nil {
					return fmt.Errorf("room %q: %w", e.m.Room, err)
				}
				// Keys only ever grow, so full pages waste nothing
				// and halve the page writes of the default 50%.
				rb.FillPercent = 1.0
				buckets[e.m.Room] = rb
			}
			if err := rb.Put(rec[:8], rec[8:]); err != nil {
				return fmt.Errorf("put %s/%d: %w", e.m.Room, e.m.Seq, err)
			}
		}
		for room, add := range b.rooms {
			rb := buckets[room]
			m := readMeta(rb)
			m.last = max(m.last, add.last)
			m.count += uint64(add.n)
			if err := rb.Put([]byte(metaKey), m.encode()); err != nil {
				return fmt.Errorf("put meta of %q: %w", room, err)
			}
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("commit %d messages: %w", len(entries), err)
		s.log.Error().Err(err).Msg("history commit failed")
	}

	// Committed messages are now read from the database; failed ones are
	// gone, and their done learns so below.
	s.mu.Lock()
	if err != nil {
		s.lost = true
	}
	for room, rb := range b.rooms {
		p := s.pending[room]
		n := min(rb.n, len(p))
		clear(p[:n]) // let the strings go before the array is reused
		if n == len(p) {
			delete(s.pending, room)
			if err == nil {
				// Everything of the room is on disk, where LastSeq finds
				// it: forgetting it here keeps this map from growing
				// with every room ever named.
				delete(s.last, room)
			}
		} else {
			s.pending[room] = p[n:]
		}
	}
	s.mu.Unlock()

	for _, e := range entries {
		if e.done != nil {
			e.done(err)
		}
	}
	clear(entries)
	b.spare = entries[:0]
	return err
}
