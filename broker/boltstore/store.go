// Package boltstore is the durable broker.History: chat messages kept in a
// bbolt database that the caller opens and shares with other packages.
//
// Appends are group-committed: Append only queues the message, and a single
// commit goroutine writes everything queued so far in one bbolt transaction,
// so the cost of the fsyncs is shared by every message of the batch. Until
// its transaction commits a message is held in memory and merged into every
// read, so readers never wait for the disk.
//
// Layout, all under the top-level bucket "history":
//
//	history/<room>/<seq as 8-byte big-endian>  one message (see encode)
//	history/<room>/<nine 0xff bytes>            room meta: last, pruned, count
//
// The meta key is nine bytes long, so it never looks like a seq, and sorts
// after every message key: it lives in the last leaf page, which an append
// dirties anyway, so keeping it current costs no extra page write.
package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/chatd/chatd/broker"
)

const (
	// historyBucket is the top-level bucket this store owns; other packages
	// keep their own buckets in the same file.
	historyBucket = "history"
	// stateBucket holds openKey while a Store has the database open; finding
	// it at start means the last process did not Close (it crashed).
	stateBucket = "history-state"
	openKey     = "open"
	// CrashGap is how far every room's seq jumps after a crash. Messages
	// are fanned out before their commit, so clients may have seen seqs
	// that never reached the disk; reusing them for new messages would make
	// a client resuming with `since` skip those. The gap covers up to that
	// many messages per room in flight when the process died.
	CrashGap = 1 << 16
	// metaKey is the key of a room's meta record inside the room's bucket.
	metaKey = "\xff\xff\xff\xff\xff\xff\xff\xff\xff"
	// metaLen is the size of a meta record: last, pruned and count, each
	// 8 bytes big-endian.
	metaLen = 24

	defaultMaxPerRoom    = 10000
	defaultPruneInterval = time.Minute
	// pruneBatch bounds the deletions of one prune transaction, because a
	// long write transaction holds up the commit loop and so every ack.
	pruneBatch = 10000
)

// Options tunes a Store. The zero value is usable: 10000 messages per room,
// kept forever, pruned every minute, no logging.
type Options struct {
	// MaxPerRoom is how many of the latest messages each room keeps; older
	// ones are pruned. 0 means 10000, a negative value means no limit.
	MaxPerRoom int
	// MaxAge prunes messages whose TS is older than this. 0 keeps messages
	// regardless of their age.
	MaxAge time.Duration
	// PruneInterval is how often retention is enforced. 0 means one minute.
	PruneInterval time.Duration
	// Logger receives commit and prune failures and prune summaries, with
	// the field component=history added. The zero Logger logs nothing.
	Logger zerolog.Logger
}

// Store is a broker.History on bbolt. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	opts Options
	log  zerolog.Logger

	// unclean is set when the previous process did not Close: SeqFloor
	// then adds CrashGap to what the database holds.
	unclean bool

	mu     sync.Mutex
	closed bool
	// queue is what Append accepted and the commit loop has not yet taken.
	queue []entry
	// pending holds, per room in seq order, the messages whose transaction
	// has not committed yet; reads merge them with the database.
	pending map[string][]broker.Message
	// last is the highest seq appended per room by this process. It is
	// never below what the database holds, so LastSeq can skip the disk,
	// and it survives a failed commit, so a seq is never handed out twice.
	last map[string]uint64

	kick      chan struct{} // wakes the commit loop; capacity 1
	quit      chan struct{} // closed by Close
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// entry is one queued Append.
type entry struct {
	m    broker.Message
	done func(error)
}

// ErrBadRoom is passed to done for a message whose room name cannot be a
// bbolt bucket name (empty or over bolt.MaxKeySize bytes).
var ErrBadRoom = errors.New("invalid room name")

// Compile-time proof that Store is what the broker needs.
var _ broker.History = (*Store)(nil)

// New returns a Store keeping history in db, creating its bucket if needed,
// and starts its commit and prune goroutines. db stays owned by the caller:
// Close the Store before closing db.
func New(db *bolt.DB, opts Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("boltstore: nil database")
	}
	if opts.MaxPerRoom == 0 {
		opts.MaxPerRoom = defaultMaxPerRoom
	}
	if opts.MaxAge < 0 {
		opts.MaxAge = 0
	}
	if opts.PruneInterval <= 0 {
		opts.PruneInterval = defaultPruneInterval
	}
	var unclean bool
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists([]byte(historyBucket)); err != nil {
			return err
		}
		state, err := tx.CreateBucketIfNotExists([]byte(stateBucket))
		if err != nil {
			return err
		}
		unclean = state.Get([]byte(openKey)) != nil
		return state.Put([]byte(openKey), []byte{1})
	}); err != nil {
		return nil, fmt.Errorf("create history bucket: %w", err)
	}
	s := &Store{
		unclean: unclean,
		db:      db,
		opts:    opts,
		log:     opts.Logger.With().Str("component", "history").Logger(),
		pending: make(map[string][]broker.Message),
		last:    make(map[string]uint64),
		kick:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
	}
	s.wg.Add(2)
	go s.commitLoop()
	go s.pruneLoop()
	return s, nil
}

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
	for room, rb := range b.rooms {
		p := s.pending[room]
		n := min(rb.n, len(p))
		clear(p[:n]) // let the strings go before the array is reused
		if n == len(p) {
			delete(s.pending, room)
			if err == nil && !s.unclean {
				// Everything of the room is on disk, where LastSeq finds
				// it: forgetting it here keeps this map from growing
				// with every room ever named. (After a crash it stays,
				// as SeqFloor needs to know which rooms moved on.)
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

// SeqFloor implements broker.History: after a crash, a room that has not
// appended since adds CrashGap to its last stored seq.
func (s *Store) SeqFloor(room string) (uint64, error) {
	s.mu.Lock()
	_, appended := s.last[room]
	s.mu.Unlock()
	last, err := s.LastSeq(room)
	if err != nil || appended || !s.unclean {
		return last, err
	}
	return last + CrashGap, nil
}

// Close implements broker.History: later appends fail with
// broker.ErrHistoryClosed, what is queued is committed, and the background
// goroutines have exited when it returns. It leaves the database open. It
// returns the error of the final commit, if any; calling it again returns
// the same.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.quit)
		s.wg.Wait()
		if s.closeErr == nil {
			// Everything is committed: the next start may continue each
			// room's seq exactly.
			s.closeErr = s.db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket([]byte(stateBucket)).Delete([]byte(openKey))
			})
		}
	})
	return s.closeErr
}

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

// roomBucket returns the bucket of room, or nil if it never had a message.
func roomBucket(tx *bolt.Tx, room string) *bolt.Bucket {
	hist := tx.Bucket([]byte(historyBucket))
	if hist == nil {
		return nil
	}
	return hist.Bucket([]byte(room))
}

// seqKey is the database key of a seq: big-endian, so that byte order is
// seq order.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// meta is the per-room record written in the same transaction as the
// messages it describes.
type meta struct {
	last   uint64 // highest seq ever committed; pruning never lowers it
	pruned uint64 // highest seq ever pruned: After(since < pruned) is incomplete
	count  uint64 // messages now stored, so count retention needs no scan
}

// readMeta returns the meta of rb, zero for a room without one.
func readMeta(rb *bolt.Bucket) meta {
	v := rb.Get([]byte(metaKey))
	if len(v) < metaLen {
		return meta{}
	}
	return meta{
		last:   binary.BigEndian.Uint64(v[0:8]),
		pruned: binary.BigEndian.Uint64(v[8:16]),
		count:  binary.BigEndian.Uint64(v[16:24]),
	}
}

// encode returns m as a meta record value.
func (m meta) encode() []byte {
	b := make([]byte, 0, metaLen)
	b = binary.BigEndian.AppendUint64(b, m.last)
	b = binary.BigEndian.AppendUint64(b, m.pruned)
	return binary.BigEndian.AppendUint64(b, m.count)
}

// Message values are encoded as
//
//	version byte (1) | ts int64 big-endian | uvarint len(id) | id |
//	uvarint len(from) | from | text (the rest)
//
// Room and seq are already the bucket and the key. TS sits at a fixed
// offset so that age pruning reads it without decoding the rest.
const encodingV1 = 1

// encode appends the value encoding of m to b.
func encode(b []byte, m broker.Message) []byte {
	b = append(b, encodingV1)
	b = binary.BigEndian.AppendUint64(b, uint64(m.TS))
	b = binary.AppendUvarint(b, uint64(len(m.ID)))
	b = append(b, m.ID...)
	b = binary.AppendUvarint(b, uint64(len(m.From)))
	b = append(b, m.From...)
	return append(b, m.Text...)
}

// errCorrupt reports a stored value that does not decode.
var errCorrupt = errors.New("corrupt message record")

// tsOf returns the TS of an encoded message, or the largest TS for a value
// it cannot read, so that age pruning leaves such a value alone.
func tsOf(v []byte) int64 {
	if len(v) < 9 || v[0] != encodingV1 {
		return math.MaxInt64
	}
	return int64(binary.BigEndian.Uint64(v[1:9]))
}

// decode rebuilds the message stored under room and seq. The strings are
// copies, so the result outlives the transaction.
func decode(room string, seq uint64, v []byte) (broker.Message, error) {
	if len(v) < 9 || v[0] != encodingV1 {
		return broker.Message{}, fmt.Errorf("%s/%d: %w", room, seq, errCorrupt)
	}
	m := broker.Message{Room: room, Seq: seq, TS: int64(binary.BigEndian.Uint64(v[1:9]))}
	rest := v[9:]
	field := func() (string, bool) {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return "", false
		}
		s := string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
		return s, true
	}
	var ok1, ok2 bool
	m.ID, ok1 = field()
	m.From, ok2 = field()
	if !ok1 || !ok2 {
		return broker.Message{}, fmt.Errorf("%s/%d: %w", room, seq, errCorrupt)
	}
	m.Text = string(rest)
	return m, nil
}
