package boltstore

import (
	"testing"
	"time"
)

func TestRetentionByCount(t *testing.T) {
	s, _, _ := newStore(t, Options{MaxPerRoom: 10, PruneInterval: time.Hour})
	appendWait(t, s, seqRange("r", 1, 25)...)
	appendWait(t, s, seqRange("small", 1, 4)...)
	n, err := s.prune(time.Now())
	if err != nil || n != 15 {
		t.Fatalf("prune = %d, %v; want 15 deleted", n, err)
	}
	checkAfter(t, s, "r", 0, 100, 16, 25, false)
	checkAfter(t, s, "r", 14, 100, 16, 25, false)
	checkAfter(t, s, "r", 15, 100, 16, 25, true)
	checkAfter(t, s, "r", 20, 2, 21, 22, true)
	checkAfter(t, s, "r", 25, 100, 0, 0, true)
	checkBefore(t, s, "r", 0, 100, 16, 25)
	checkBefore(t, s, "r", 18, 100, 16, 17)
	checkLast(t, s, "r", 25)
	checkAfter(t, s, "small", 0, 100, 1, 4, true)

	// A second pass has nothing to do, and the count stays exact.
	if n, err := s.prune(time.Now()); err != nil || n != 0 {
		t.Fatalf("second prune = %d, %v", n, err)
	}
	appendWait(t, s, seqRange("r", 26, 27)...)
	if n, err := s.prune(time.Now()); err != nil || n != 2 {
		t.Fatalf("third prune = %d, %v; want 2", n, err)
	}
	checkAfter(t, s, "r", 0, 100, 18, 27, false)
}

func TestRetentionLargeBacklog(t *testing.T) {
	// More than one prune transaction's worth in one room.
	s, _, _ := newStore(t, Options{MaxPerRoom: 3, PruneInterval: time.Hour})
	const n = pruneBatch + 500
	appendWait(t, s, seqRange("r", 1, n)...)
	if got, err := s.prune(time.Now()); err != nil || got != n-3 {
		t.Fatalf("prune = %d, %v; want %d", got, err, n-3)
	}
	checkAfter(t, s, "r", 0, 100, n-2, n, false)
	checkLast(t, s, "r", n)
}

func TestRetentionByAge(t *testing.T) {
	s, _, _ := newStore(t, Options{MaxPerRoom: -1, MaxAge: time.Hour, PruneInterval: time.Hour})
	old := time.Now().Add(-2 * time.Hour).UnixMilli()
	ms := seqRange("r", 1, 8)
	for i := range 5 {
		ms[i].TS = old
	}
	appendWait(t, s, ms...)
	if n, err := s.prune(time.Now()); err != nil || n != 5 {
		t.Fatalf("prune = %d, %v; want 5", n, err)
	}
	checkAfter(t, s, "r", 0, 100, 6, 8, false)
	checkAfter(t, s, "r", 5, 100, 6, 8, true)
	checkLast(t, s, "r", 8)

	// Everything ages out: the room is empty, yet LastSeq remembers and
	// a client behind it learns that it missed messages.
	if n, err := s.prune(time.Now().Add(3 * time.Hour)); err != nil || n != 3 {
		t.Fatalf("prune = %d, %v; want 3", n, err)
	}
	checkAfter(t, s, "r", 0, 100, 0, 0, false)
	checkAfter(t, s, "r", 7, 100, 0, 0, false)
	checkAfter(t, s, "r", 8, 100, 0, 0, true)
	checkBefore(t, s, "r", 0, 100, 0, 0)
	checkLast(t, s, "r", 8)
	// A fresh store has no memory of the appends: LastSeq comes from disk.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := New(s.db, Options{PruneInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	checkLast(t, s2, "r", 8)
}

func TestPrunerRunsInBackground(t *testing.T) {
	s, _, _ := newStore(t, Options{MaxPerRoom: 2, PruneInterval: 5 * time.Millisecond})
	appendWait(t, s, seqRange("r", 1, 6)...)
	deadline := time.After(waitFor)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		got, complete, err := s.After("r", 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 2 && !complete {
			wantSeqs(t, "After(r, 0)", got, 5, 6)
			break
		}
		select {
		case <-deadline:
			t.Fatalf("not pruned: %v complete=%v", seqsOf(got), complete)
		case <-tick.C:
		}
	}
}
