package boltstore

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/chatd/chatd/broker"
)

// waitFor bounds every wait of these tests, so a lost done fails the test
// instead of hanging it.
const waitFor = 10 * time.Second

func openDB(tb testing.TB, path string) *bolt.DB {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, nil) // default options: fsync on
	if err != nil {
		tb.Fatalf("open db: %v", err)
	}
	return db
}

// newStore returns a store on a fresh database file that is closed, with
// the store, when the test ends.
func newStore(tb testing.TB, opts Options) (*Store, *bolt.DB, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "chatd.db")
	db := openDB(tb, path)
	s, err := New(db, opts)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		s.Close()
		db.Close()
	})
	return s, db, path
}

func msg(room string, seq uint64) broker.Message {
	return broker.Message{
		Room: room, Seq: seq, ID: fmt.Sprintf("m-%s-%d", room, seq),
		From: "alice", Text: fmt.Sprintf("hello %d", seq), TS: time.Now().UnixMilli(),
	}
}

// appendWait appends ms and waits until every done has run, failing on an
// error.
func appendWait(t *testing.T, s *Store, ms ...broker.Message) {
	t.Helper()
	errs := make(chan error, len(ms))
	for _, m := range ms {
		s.Append(m, func(err error) { errs <- err })
	}
	for range ms {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatalf("append: %v", err)
			}
		case <-time.After(waitFor):
			t.Fatal("done not called")
		}
	}
}

func seqRange(room string, from, to uint64) []broker.Message {
	var out []broker.Message
	for i := from; i <= to; i++ {
		out = append(out, msg(room, i))
	}
	return out
}

func seqsOf(ms []broker.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

func wantSeqs(t *testing.T, what string, got []broker.Message, from, to uint64) {
	t.Helper()
	var want []uint64
	for i := from; i <= to && from != 0; i++ {
		want = append(want, i)
	}
	if g := seqsOf(got); !slices.Equal(g, want) {
		t.Fatalf("%s: seqs %v, want %v", what, g, want)
	}
}

func checkAfter(t *testing.T, s *Store, room string, since uint64, limit int, from, to uint64, complete bool) {
	t.Helper()
	got, c, err := s.After(room, since, limit)
	if err != nil {
		t.Fatalf("After(%s, %d, %d): %v", room, since, limit, err)
	}
	wantSeqs(t, fmt.Sprintf("After(%s, %d, %d)", room, since, limit), got, from, to)
	if c != complete {
		t.Fatalf("After(%s, %d, %d): complete %v, want %v", room, since, limit, c, complete)
	}
}

func checkBefore(t *testing.T, s *Store, room string, before uint64, limit int, from, to uint64) {
	t.Helper()
	got, err := s.Before(room, before, limit)
	if err != nil {
		t.Fatalf("Before(%s, %d, %d): %v", room, before, limit, err)
	}
	wantSeqs(t, fmt.Sprintf("Before(%s, %d, %d)", room, before, limit), got, from, to)
}

func checkLast(t *testing.T, s *Store, room string, want uint64) {
	t.Helper()
	got, err := s.LastSeq(room)
	if err != nil || got != want {
		t.Fatalf("LastSeq(%s) = %d, %v; want %d", room, got, err, want)
	}
}

// checkQueries runs the same After/Before/LastSeq checks whatever mix of
// committed and pending messages holds seqs 1..10 of room "r".
func checkQueries(t *testing.T, s *Store) {
	t.Helper()
	checkAfter(t, s, "r", 0, 100, 1, 10, true)
	checkAfter(t, s, "r", 3, 4, 4, 7, true)
	checkAfter(t, s, "r", 6, 100, 7, 10, true)
	checkAfter(t, s, "r", 10, 100, 0, 0, true)
	checkAfter(t, s, "r", 99, 100, 0, 0, true)
	checkAfter(t, s, "r", 0, 0, 0, 0, true)
	checkBefore(t, s, "r", 0, 3, 8, 10)
	checkBefore(t, s, "r", 0, 100, 1, 10)
	checkBefore(t, s, "r", 8, 3, 5, 7)
	checkBefore(t, s, "r", 5, 100, 1, 4)
	checkBefore(t, s, "r", 1, 100, 0, 0)
	checkBefore(t, s, "r", 99, 2, 9, 10)
	checkLast(t, s, "r", 10)
	checkAfter(t, s, "none", 0, 100, 0, 0, true)
	checkBefore(t, s, "none", 0, 100, 0, 0)
	checkLast(t, s, "none", 0)
}

func TestQueriesCommitted(t *testing.T) {
	s, _, _ := newStore(t, Options{})
	appendWait(t, s, seqRange("r", 1, 10)...)
	checkQueries(t, s)

	got, _, err := s.After("r", 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := msg("r", 5); len(got) != 1 || got[0].ID != want.ID || got[0].From != want.From ||
		got[0].Text != want.Text || got[0].Room != "r" || got[0].TS == 0 {
		t.Fatalf("After(r, 4, 1) = %+v, want %+v", got, want)
	}
}

// holdWriter takes bbolt's single writer lock, so the commit loop cannot
// commit until release is called: what is appended meanwhile stays pending.
func holdWriter(t *testing.T, db *bolt.DB) (release func()) {
	t.Helper()
	tx, err := db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { tx.Rollback() }) }
	t.Cleanup(release)
	return release
}

func TestQueriesPending(t *testing.T) {
	for _, committed := range []uint64{0, 4, 10} {
		t.Run(fmt.Sprintf("committed=%d", committed), func(t *testing.T) {
			s, db, _ := newStore(t, Options{})
			appendWait(t, s, seqRange("r", 1, committed)...)
			release := holdWriter(t, db)
			var calls atomic.Int32
			all := make(chan struct{})
			for _, m := range seqRange("r", committed+1, 10) {
				s.Append(m, func(err error) {
					if err != nil {
						t.Errorf("append: %v", err)
					}
					if calls.Add(1) == int32(10-committed) {
						close(all)
					}
				})
			}
			checkQueries(t, s)
			if n := calls.Load(); n != 0 {
				t.Fatalf("%d done calls before the commit", n)
			}
			release()
			if committed < 10 {
				select {
				case <-all:
				case <-time.After(waitFor):
					t.Fatal("done not called after the writer was released")
				}
			}
			checkQueries(t, s)
		})
	}
}

// TestQueriesDuringCommits reads while batches commit, where a message
// moves from pending to the database between a read's two halves.
func TestQueriesDuringCommits(t *testing.T) {
	s, _, _ := newStore(t, Options{})
	const n = 500
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			last, err := s.LastSeq("r")
			if err != nil {
				t.Error(err)
				return
			}
			got, complete, err := s.After("r", 0, n)
			if err != nil || !complete {
				t.Errorf("After: %v complete=%v", err, complete)
				return
			}
			// Everything up to the LastSeq read before must be there, in
			// order, once each.
			if uint64(len(got)) < last {
				t.Errorf("After saw %d messages, LastSeq was %d", len(got), last)
				return
			}
			for i, m := range got {
				if m.Seq != uint64(i+1) {
					t.Errorf("After: position %d has seq %d", i, m.Seq)
					return
				}
			}
			page, err := s.Before("r", 0, 7)
			if err != nil {
				t.Error(err)
				return
			}
			for i := 1; i < len(page); i++ {
				if page[i].Seq != page[i-1].Seq+1 {
					t.Errorf("Before page not contiguous: %v", seqsOf(page))
					return
				}
			}
		}
	})
	errs := make(chan error, n)
	for i := uint64(1); i <= n; i++ {
		s.Append(msg("r", i), func(err error) { errs <- err })
		if i%10 == 0 { // let some batches commit between appends
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	for range n - n/10 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestDoneAfterCommit(t *testing.T) {
	s, db, _ := newStore(t, Options{})
	const n = 200
	results := make(chan error, n)
	for i := uint64(1); i <= n; i++ {
		room := fmt.Sprintf("room%d", i%3)
		s.Append(msg(room, i), func(err error) {
			if err != nil {
				results <- err
				return
			}
			// A fresh read transaction must already see the message.
			results <- db.View(func(tx *bolt.Tx) error {
				rb := roomBucket(tx, room)
				if rb == nil || rb.Get(seqKey(i)) == nil {
					return fmt.Errorf("%s/%d not in the database when done ran", room, i)
				}
				return nil
			})
		})
	}
	for range n {
		select {
		case err := <-results:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(waitFor):
			t.Fatal("done not called")
		}
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chatd.db")
	db := openDB(t, path)
	// Another package's bucket in the same file must be left alone.
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("users"))
		if err != nil {
			return err
		}
		return b.Put([]byte("alice"), []byte("x"))
	}); err != nil {
		t.Fatal(err)
	}
	s, err := New(db, Options{MaxPerRoom: 5, PruneInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	appendWait(t, s, seqRange("r", 1, 10)...)
	appendWait(t, s, seqRange("other", 1, 3)...)
	if _, err := s.prune(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openDB(t, path)
	defer db.Close()
	s, err = New(db, Options{MaxPerRoom: 5, PruneInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkLast(t, s, "r", 10)
	checkLast(t, s, "other", 3)
	checkAfter(t, s, "r", 0, 100, 6, 10, false)
	checkAfter(t, s, "r", 5, 100, 6, 10, true)
	checkAfter(t, s, "other", 0, 100, 1, 3, true)
	checkBefore(t, s, "r", 0, 2, 9, 10)
	got, _, err := s.After("other", 1, 1)
	if err != nil || len(got) != 1 || got[0].ID != "m-other-2" || got[0].Text != "hello 2" || got[0].From != "alice" {
		t.Fatalf("After(other, 1, 1) = %+v, %v", got, err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("users")).Get([]byte("alice")); string(v) != "x" {
			return fmt.Errorf("users bucket changed: %q", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Appends continue where the last run stopped.
	appendWait(t, s, msg("r", 11))
	checkLast(t, s, "r", 11)
	checkAfter(t, s, "r", 9, 100, 10, 11, true)
}

func TestConcurrentAppends(t *testing.T) {
	s, _, _ := newStore(t, Options{})
	const (
		rooms      = 16
		goroutines = 64
		perG       = 60
	)
	type room struct {
		mu  sync.Mutex
		seq uint64
	}
	rs := make([]*room, rooms)
	for i := range rs {
		rs[i] = &room{}
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			done := make(chan error, 1)
			for i := range perG {
				name := fmt.Sprintf("room%d", (g+i)%rooms)
				r := rs[(g+i)%rooms]
				// As the broker does: seq and Append under the room lock.
				r.mu.Lock()
				r.seq++
				s.Append(msg(name, r.seq), func(err error) { done <- err })
				r.mu.Unlock()
				select {
				case err := <-done:
					if err != nil {
						t.Error(err)
						return
					}
				case <-time.After(waitFor):
					t.Error("done not called")
					return
				}
			}
		})
	}
	wg.Wait()
	var total uint64
	for i, r := range rs {
		name := fmt.Sprintf("room%d", i)
		checkAfter(t, s, name, 0, 10000, 1, r.seq, true)
		checkLast(t, s, name, r.seq)
		total += r.seq
	}
	if total != goroutines*perG {
		t.Fatalf("stored %d messages, want %d", total, goroutines*perG)
	}
}

func TestClose(t *testing.T) {
	s, db, _ := newStore(t, Options{})
	appendWait(t, s, seqRange("r", 1, 3)...)
	release := holdWriter(t, db)
	var mu sync.Mutex
	var results []error
	for _, m := range seqRange("r", 4, 10) {
		s.Append(m, func(err error) {
			mu.Lock()
			results = append(results, err)
			mu.Unlock()
		})
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before its pending messages could commit", err)
	default:
	}
	release()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Close did not return")
	}
	mu.Lock()
	if len(results) != 7 {
		t.Fatalf("%d done calls by the end of Close, want 7", len(results))
	}
	for _, err := range results {
		if err != nil {
			t.Fatalf("pending append failed: %v", err)
		}
	}
	mu.Unlock()

	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	var got error
	s.Append(msg("r", 11), func(err error) { got = err })
	if !errors.Is(got, broker.ErrHistoryClosed) {
		t.Fatalf("Append after Close: %v, want ErrHistoryClosed", got)
	}
	if _, _, err := s.After("r", 0, 10); !errors.Is(err, broker.ErrHistoryClosed) {
		t.Fatalf("After after Close: %v", err)
	}
	if _, err := s.Before("r", 0, 10); !errors.Is(err, broker.ErrHistoryClosed) {
		t.Fatalf("Before after Close: %v", err)
	}
	if _, err := s.LastSeq("r"); !errors.Is(err, broker.ErrHistoryClosed) {
		t.Fatalf("LastSeq after Close: %v", err)
	}

	// The database is still open and holds everything acknowledged.
	s2, err := New(db, Options{})
	if err != nil {
		t.Fatalf("database closed by Store.Close: %v", err)
	}
	defer s2.Close()
	checkAfter(t, s2, "r", 0, 100, 1, 10, true)
	checkLast(t, s2, "r", 10)
}

func TestBadRoom(t *testing.T) {
	s, _, _ := newStore(t, Options{})
	var got error
	s.Append(msg("", 1), func(err error) { got = err })
	if !errors.Is(got, ErrBadRoom) {
		t.Fatalf("Append to empty room: %v, want ErrBadRoom", got)
	}
	// The refused message did not spoil anyone else's batch.
	appendWait(t, s, msg("r", 1))
}

func TestEncoding(t *testing.T) {
	for _, m := range []broker.Message{
		{},
		{ID: "x", From: "bob", Text: "héllo 🌍\n\x00", TS: -5},
		{ID: string(make([]byte, 300)), From: "a", Text: string(make([]byte, 5000)), TS: 1 << 60},
	} {
		v := encode(nil, m)
		got, err := decode("r", 7, v)
		m.Room, m.Seq = "r", 7
		if err != nil || got != m {
			t.Fatalf("decode(encode(%+v)) = %+v, %v", m, got, err)
		}
		if tsOf(v) != m.TS {
			t.Fatalf("tsOf = %d, want %d", tsOf(v), m.TS)
		}
	}
	for _, bad := range [][]byte{nil, {1}, {2, 0, 0, 0, 0, 0, 0, 0, 0}, {1, 0, 0, 0, 0, 0, 0, 0, 0, 5, 'a'}} {
		if _, err := decode("r", 1, bad); !errors.Is(err, errCorrupt) {
			t.Fatalf("decode(%v) err = %v, want errCorrupt", bad, err)
		}
	}
}

// BenchmarkAppend measures group commit as the broker drives it: 64
// senders over 16 rooms, each waiting for its ack (done) before sending
// again, with bbolt's default settings (fsync on).
func BenchmarkAppend(b *testing.B) {
	const (
		rooms      = 16
		goroutines = 64
	)
	s, _, _ := newStore(b, Options{})
	type room struct {
		mu   sync.Mutex
		name string
		seq  uint64
	}
	rs := make([]*room, rooms)
	for i := range rs {
		rs[i] = &room{name: fmt.Sprintf("room%d", i)}
	}
	var next atomic.Int64
	lat := make([][]time.Duration, goroutines)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := range goroutines {
		wg.Go(func() {
			done := make(chan error, 1)
			ack := func(err error) { done <- err }
			r := rs[g%rooms]
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				r.mu.Lock()
				r.seq++
				s.Append(broker.Message{Room: r.name, Seq: r.seq, ID: "0123456789abcdef",
					From: "benchuser", Text: "a typical chat line of some fifty bytes of text!!",
					TS: t0.UnixMilli()}, ack)
				r.mu.Unlock()
				if err := <-done; err != nil {
					b.Error(err)
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	ms := func(q float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(q*float64(len(all)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}

// After a crash (no Close), every room's seq jumps by CrashGap: seqs that
// were fanned out but never committed must not be handed out again.
func TestSeqJumpsAfterCrash(t *testing.T) {
	s, db, _ := newStore(t, Options{})
	appendWait(t, s, seqRange("r", 1, 5)...)
	crashed, err := New(db, Options{}) // s was never closed: as after kill -9
	if err != nil {
		t.Fatal(err)
	}
	checkLast(t, crashed, "r", 5) // what is stored is unchanged
	for room, want := range map[string]uint64{"r": 5 + CrashGap, "never-committed": CrashGap} {
		if floor, err := crashed.SeqFloor(room); err != nil || floor != want {
			t.Fatalf("SeqFloor(%s) = %d, %v; want %d", room, floor, err, want)
		}
	}
	appendWait(t, crashed, msg("moved-on", CrashGap+1))
	if err := crashed.Close(); err != nil {
		t.Fatal(err)
	}
	// A clean stop after the crash does not give the lost seqs back: a
	// room nobody wrote to since still continues above its floor.
	clean, err := New(db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for room, want := range map[string]uint64{"r": 5 + CrashGap, "never-committed": CrashGap, "moved-on": CrashGap + 1} {
		if floor, err := clean.SeqFloor(room); err != nil || floor != want {
			t.Fatalf("after a clean Close: SeqFloor(%s) = %d, %v; want %d", room, floor, err, want)
		}
	}
	appendWait(t, clean, msg("moved-on", CrashGap+2))
	if err := clean.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := New(db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if floor, _ := again.SeqFloor("moved-on"); floor != CrashGap+2 {
		t.Fatalf("after two clean stops SeqFloor(moved-on) = %d, want %d: no jump without a crash", floor, CrashGap+2)
	}
}

// A commit that fails loses messages whose seqs were already fanned out:
// even after a clean Close, the next start must not hand those seqs out
// again.
func TestSeqJumpsAfterLostCommit(t *testing.T) {
	s, db, _ := newStore(t, Options{})
	appendWait(t, s, seqRange("r", 1, 3)...)
	// Take the history bucket away under the store: the next commit fails.
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte(historyBucket)) }); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 1)
	s.Append(msg("r", 4), func(err error) { errs <- err })
	if err := <-errs; err == nil {
		t.Fatal("the commit without its bucket succeeded")
	}
	_ = s.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte(historyBucket))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	next, err := New(db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if floor, err := next.SeqFloor("r"); err != nil || floor < 4 {
		t.Fatalf("SeqFloor(r) = %d, %v after seq 4 was fanned out and lost; want at least 4", floor, err)
	}
}

// Rooms whose messages are all committed are not remembered in memory:
// users naming new rooms must not grow the store's maps for good.
func TestCommittedRoomsAreForgotten(t *testing.T) {
	s, _, _ := newStore(t, Options{})
	for i := range 50 {
		appendWait(t, s, msg(fmt.Sprint("room", i), 1))
	}
	s.mu.Lock()
	last, pending := len(s.last), len(s.pending)
	s.mu.Unlock()
	if last != 0 || pending != 0 {
		t.Fatalf("%d rooms in last and %d in pending after every commit", last, pending)
	}
	checkLast(t, s, "room7", 1) // from disk
}
