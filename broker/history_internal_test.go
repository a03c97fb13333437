package broker

import (
	"testing"
	"time"
)

// With a maximum age the memory store frees aged messages, not only hides
// them, also from a full ring that has wrapped; seqs go on.
func TestMemoryHistoryFreesAgedMessages(t *testing.T) {
	h := NewMemoryHistory(4, time.Hour)
	defer h.Close()
	old := time.Now().Add(-2 * time.Hour).UnixMilli()
	for seq := uint64(1); seq <= 6; seq++ { // the ring wraps: 3-6 kept
		ts := old
		if seq >= 5 {
			ts = time.Now().UnixMilli()
		}
		h.Append(Message{Room: "r", Seq: seq, TS: ts}, nil)
	}
	h.Append(Message{Room: "aged", Seq: 1, TS: old}, nil)
	h.prune()
	held := func(room string) (seqs []uint64) {
		for _, m := range h.rooms[room].msgs {
			if m != (Message{}) {
				seqs = append(seqs, m.Seq)
			}
		}
		return seqs
	}
	if got := held("r"); len(got) != 2 || got[0]+got[1] != 11 {
		t.Fatalf("room r holds seqs %v after pruning, want 5 and 6", got)
	}
	if got := held("aged"); len(got) != 0 || h.rooms["aged"].last != 1 {
		t.Fatalf("room aged holds %v, last %d: want none, last 1", got, h.rooms["aged"].last)
	}
	h.Append(Message{Room: "r", Seq: 7, TS: time.Now().UnixMilli()}, nil)
	h.Append(Message{Room: "aged", Seq: 2, TS: time.Now().UnixMilli()}, nil)
	if ms, complete, _ := h.After("r", 4, 10); !complete || len(ms) != 3 || ms[0].Seq != 5 || ms[2].Seq != 7 {
		t.Fatalf("After(4) = %v complete %v, want 5-7", ms, complete)
	}
	if ms, _ := h.Before("aged", 0, 10); len(ms) != 1 || ms[0].Seq != 2 {
		t.Fatalf("aged room after a new message: %v, want seq 2", ms)
	}
}
