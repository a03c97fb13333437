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
	if r := h.rooms["r"]; len(r.msgs) != 2 || r.at(0).Seq != 5 || r.at(1).Seq != 6 {
		t.Fatalf("room r holds %v after pruning, want seqs 5 and 6", r.msgs)
	}
	if r := h.rooms["aged"]; len(r.msgs) != 0 || r.last != 1 {
		t.Fatalf("room aged holds %d messages, last %d: want none, last 1", len(r.msgs), r.last)
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
