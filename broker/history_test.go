package broker_test

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/broker"
)

// The memory store forgets by count and, with a maximum age, by age: an
// aged message is pruned for After (recovered false) and Before alike.
func TestMemoryHistoryPrunesByAge(t *testing.T) {
	h := broker.NewMemoryHistory(10, time.Hour)
	defer h.Close()
	now := time.Now()
	for seq := uint64(1); seq <= 6; seq++ {
		ts := now.Add(-2 * time.Hour) // seqs 1-3 are two hours old
		if seq > 3 {
			ts = now
		}
		h.Append(broker.Message{Room: "r", Seq: seq, TS: ts.UnixMilli()}, nil)
	}
	seqs := func(ms []broker.Message) []uint64 {
		var out []uint64
		for _, m := range ms {
			out = append(out, m.Seq)
		}
		return out
	}
	if ms, complete, _ := h.After("r", 0, 100); complete || len(ms) != 3 || ms[0].Seq != 4 {
		t.Errorf("After(0) = %v complete %v, want 4-6, not complete", seqs(ms), complete)
	}
	if ms, complete, _ := h.After("r", 4, 100); !complete || len(ms) != 2 || ms[0].Seq != 5 {
		t.Errorf("After(4) = %v complete %v, want 5-6, complete", seqs(ms), complete)
	}
	if ms, _ := h.Before("r", 0, 100); len(ms) != 3 || ms[0].Seq != 4 {
		t.Errorf("Before(latest) = %v, want 4-6", seqs(ms))
	}
	if ms, _ := h.Before("r", 5, 100); len(ms) != 1 || ms[0].Seq != 4 {
		t.Errorf("Before(5) = %v, want 4", seqs(ms))
	}
	if ms, _ := h.Before("r", 4, 100); len(ms) != 0 {
		t.Errorf("Before(4) = %v, want none (1-3 aged out)", seqs(ms))
	}

	old := broker.NewMemoryHistory(10, time.Hour)
	defer old.Close()
	old.Append(broker.Message{Room: "r", Seq: 1, TS: now.Add(-2 * time.Hour).UnixMilli()}, nil)
	if ms, complete, _ := old.After("r", 0, 100); complete || len(ms) != 0 {
		t.Errorf("all aged: After(0) = %v complete %v, want none, not complete", seqs(ms), complete)
	}
	if ms, _ := old.Before("r", 0, 100); len(ms) != 0 {
		t.Errorf("all aged: Before = %v, want none", seqs(ms))
	}
	if last, _ := old.LastSeq("r"); last != 1 {
		t.Errorf("LastSeq = %d, want 1: seqs go on after pruning", last)
	}
}

// brokenHistory is a store that cannot be read.
type brokenHistory struct{ broker.History }

func (brokenHistory) LastSeq(string) (uint64, error) { return 0, errors.New("disk gone") }

// A socket whose join of general failed is not told it is in general.
func TestWelcomeWithoutAFailedJoin(t *testing.T) {
	e := newEnv(t, broker.Options{History: brokenHistory{broker.NewMemoryHistory(10, 0)}})
	c, err := e.dialHeader(http.Header{"Authorization": {"Bearer " + e.token("unlucky")}})
	if err != nil {
		t.Fatal(err)
	}
	w := c.next()
	if rooms, _ := w["rooms"].([]any); w.str("type") != "welcome" || len(rooms) != 0 {
		t.Fatalf("first frame %v, want a welcome with no rooms", w)
	}
	c.send(map[string]any{"type": "send", "room": "general", "text": "hi", "id": "1"})
	if f := c.expect("error"); f.str("code") != "not_member" {
		t.Fatalf("send to general: %v, want not_member", f)
	}
}

// failingAfter is a store whose After fails from its second call on.
type failingAfter struct {
	broker.History
	calls atomic.Int32
}

func (h *failingAfter) After(room string, since uint64, limit int) ([]broker.Message, bool, error) {
	if h.calls.Add(1) > 1 {
		return nil, false, errors.New("disk gone")
	}
	return h.History.After(room, since, limit)
}

// A replay that the store fails part way is answered `left`: the socket
// had its joined, and is not in the room.
func TestReplayFailureLeaves(t *testing.T) {
	mem := broker.NewMemoryHistory(1000, 0)
	for seq := uint64(1); seq <= 500; seq++ {
		mem.Append(broker.Message{Room: "far", Seq: seq, Text: strings.Repeat("z", 500)}, nil)
	}
	h := &failingAfter{History: mem}
	e := newEnv(t, broker.Options{History: h, SendQueueBytes: 64 << 10})
	c := e.dial(e.token("unlucky"))
	c.send(map[string]any{"type": "join", "room": "far", "since": 0, "id": "j"})
	if j := c.expect("joined"); j["recovered"] != true {
		t.Fatalf("joined = %v", j)
	}
	for {
		f := c.next()
		if f.str("type") == "message" {
			continue
		}
		if f.str("type") != "left" || f.str("room") != "far" {
			t.Fatalf("after the replay failed: %v, want left", f)
		}
		break
	}
	c.send(map[string]any{"type": "send", "room": "far", "text": "hi", "id": 1})
	if f := c.expect("error"); f.str("code") != "not_member" {
		t.Fatalf("send after left: %v, want not_member", f)
	}
}
