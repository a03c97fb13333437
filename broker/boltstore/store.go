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
// and beside it "history-state" (openKey while a Store is open, and the
// floor of rooms never stored) and "history-floors" (per room, the seq
// new messages continue above after a crash; see SeqFloor).
//
// The meta key is nine bytes long, so it never looks like a seq, and sorts
// after every message key: it lives in the last leaf page, which an append
// dirties anyway, so keeping it current costs no extra page write.
package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
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
	// newRoomFloorKey (in stateBucket) is the seq floor of a room with
	// nothing stored: after a crash, its first messages may have been
	// fanned out and lost.
	newRoomFloorKey = "new-room-floor"
	// floorsBucket holds, per room, the seq floor set at the last start
	// after a crash: the room's last stored seq + CrashGap.
	floorsBucket = "history-floors"
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

	mu     sync.Mutex
	closed bool
	// lost is set when a commit failed: messages fanned out with their
	// seqs never reached the disk, so Close leaves the store marked open
	// and the next start raises the floors as after a crash.
	lost bool
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
	if err := db.Update(func(tx *bolt.Tx) error {
		hist, err := tx.CreateBucketIfNotExists([]byte(historyBucket))
		if err != nil {
			return err
		}
		state, err := tx.CreateBucketIfNotExists([]byte(stateBucket))
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists([]byte(floorsBucket)); err != nil {
			return err
		}
		if state.Get([]byte(openKey)) != nil {
			// The last process did not Close (it crashed, or a commit
			// failed): raise every room's floor, for good.
			if err := raiseFloors(tx, hist, state); err != nil {
				return err
			}
		}
		return state.Put([]byte(openKey), []byte{1})
	}); err != nil {
		return nil, fmt.Errorf("create history bucket: %w", err)
	}
	s := &Store{
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
		s.mu.Lock()
		lost := s.lost
		s.mu.Unlock()
		if s.closeErr == nil && !lost {
			// Everything is committed: the next start may continue each
			// room's seq exactly.
			s.closeErr = s.db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket([]byte(stateBucket)).Delete([]byte(openKey))
			})
		}
	})
	return s.closeErr
}

// raiseFloors records, after a crash, the seq each room must continue
// above: CrashGap past its last stored seq, and for rooms with nothing
// stored CrashGap past the previous such floor. The floors are kept, not
// only used by this process: a room nobody writes to before the next clean
// stop must still not reuse the seqs that were lost.
func raiseFloors(tx *bolt.Tx, hist, state *bolt.Bucket) error {
	floors := tx.Bucket([]byte(floorsBucket))
	err := hist.ForEach(func(room, v []byte) error {
		rb := hist.Bucket(room)
		if v != nil || rb == nil {
			return nil // not a room's bucket
		}
		floor := max(readMeta(rb).last, getUint64(floors.Get(room))) + CrashGap
		return floors.Put(room, binary.BigEndian.AppendUint64(nil, floor))
	})
	if err != nil {
		return fmt.Errorf("raise seq floors: %w", err)
	}
	floor := getUint64(state.Get([]byte(newRoomFloorKey))) + CrashGap
	return state.Put([]byte(newRoomFloorKey), binary.BigEndian.AppendUint64(nil, floor))
}

// getUint64 decodes an 8-byte big-endian value; anything else is 0.
func getUint64(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}
