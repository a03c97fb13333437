package broker

import (
	"errors"
	"sort"
	"sync"
	"time"
)

// Message is one chat message as it is stored and sent: the fields of the
// `message` frame.
type Message struct {
	Room string `json:"room"`
	Seq  uint64 `json:"seq"`
	ID   string `json:"id"`
	From string `json:"from"`
	Text string `json:"text"`
	TS   int64  `json:"ts"` // unix milliseconds
}

// ErrHistoryClosed is returned by a History used after Close.
var ErrHistoryClosed = errors.New("history closed")

// History is what the broker needs from a message store. Rooms call Append in
// seq order, one room at a time (the room's lock is held), so a store may rely
// on seqs arriving in increasing order per room.
type History interface {
	// Append stores m. done is called exactly once, with nil when m is
	// durable as far as the store promises, or with the error that lost it.
	// It may run before Append returns, with the room's lock held, so it
	// must not block or take a room's lock.
	// A message passed to Append must be visible to After and Before at once,
	// even before done runs.
	Append(m Message, done func(error))
	// After returns up to limit messages of room with seq > since, oldest
	// first. complete is false when messages after since were pruned, so the
	// result does not start at since+1.
	After(room string, since uint64, limit int) (msgs []Message, complete bool, err error)
	// Before returns the limit latest messages of room with seq < before,
	// oldest first; before == 0 means the latest page.
	Before(room string, before uint64, limit int) ([]Message, error)
	// LastSeq returns the highest seq ever appended to room, 0 if none.
	LastSeq(room string) (uint64, error)
	// SeqFloor returns the seq above which new messages of room continue:
	// at least LastSeq, and more after a crash, when messages fanned out
	// before their commit may have used seqs that were never stored. Reusing
	// those would make a client resuming with `since` skip new messages.
	SeqFloor(room string) (uint64, error)
	// Close flushes what is pending and releases the store.
	Close() error
}

// MemoryHistory keeps the latest messages of each room in a bounded ring. It
// is fast and forgets everything when the process ends.
type MemoryHistory struct {
	perRoom int
	maxAge  time.Duration // messages older than this are gone; 0: kept by count only
	mu      sync.RWMutex
	rooms   map[string]*ring

	stop     chan struct{} // ends the pruning goroutine (with maxAge)
	stopOnce sync.Once
}

// ring holds the latest messages of one room in seq order.
type ring struct {
	msgs  []Message // circular, len == cap once full
	start int       // index of the oldest message
	last  uint64    // highest seq ever appended
	// zeroed counts the oldest messages prune has zeroed (aged); an
	// append over the oldest slot takes one off.
	zeroed int
}

// NewMemoryHistory returns a History that keeps the latest perRoom messages of
// each room (1000 if perRoom <= 0), and with maxAge > 0 only those younger
// than maxAge: readers never see older ones, and a goroutine frees them
// every maxAge (at most a minute) until Close.
func NewMemoryHistory(perRoom int, maxAge time.Duration) *MemoryHistory {
	if perRoom <= 0 {
		perRoom = 1000
	}
	h := &MemoryHistory{perRoom: perRoom, maxAge: maxAge, rooms: make(map[string]*ring), stop: make(chan struct{})}
	if maxAge > 0 {
		go h.pruneEvery(min(maxAge, time.Minute))
	}
	return h
}

// pruneEvery frees aged messages every d until Close.
func (h *MemoryHistory) pruneEvery(d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			h.prune()
		}
	}
}

// prune drops every room's aged messages from memory: their slots are
// zeroed in place (a zero ts is aged to every reader), which lets their
// texts go without copying what stays. A room keeps its last seq, so its
// seqs go on where they were.
func (h *MemoryHistory) prune() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.rooms {
		skip := h.live(r)
		for i := r.zeroed; i < skip; i++ {
			r.msgs[(r.start+i)%len(r.msgs)] = Message{}
		}
		r.zeroed = skip
	}
}

// Append implements History; done runs before Append returns.
func (h *MemoryHistory) Append(m Message, done func(error)) {
	h.mu.Lock()
	r := h.rooms[m.Room]
	if r == nil {
		r = &ring{msgs: make([]Message, 0, min(h.perRoom, 64))}
		h.rooms[m.Room] = r
	}
	if len(r.msgs) < h.perRoom {
		r.msgs = append(r.msgs, m)
	} else {
		r.msgs[r.start] = m
		r.start = (r.start + 1) % len(r.msgs)
		r.zeroed = max(0, r.zeroed-1)
	}
	r.last = m.Seq
	h.mu.Unlock()
	if done != nil {
		done(nil)
	}
}

// at returns the i-th oldest message of r.
func (r *ring) at(i int) Message { return r.msgs[(r.start+i)%len(r.msgs)] }

// live returns the index of r's oldest message not past maxAge (len(r.msgs)
// when none is left). Aged messages stay in the ring until overwritten, but
// are pruned for every reader.
func (h *MemoryHistory) live(r *ring) int {
	if h.maxAge <= 0 {
		return 0
	}
	cutoff := time.Now().Add(-h.maxAge).UnixMilli()
	// ts is the server's clock at append, in seq order.
	return sort.Search(len(r.msgs), func(i int) bool { return r.at(i).TS >= cutoff })
}

// After implements History.
func (h *MemoryHistory) After(room string, since uint64, limit int) ([]Message, bool, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	r := h.rooms[room]
	if r == nil || r.last <= since {
		return nil, true, nil
	}
	n := len(r.msgs)
	skip := h.live(r)
	if skip == n {
		return nil, false, nil // every message after since has aged out
	}
	// Seqs in the ring are consecutive, so the first wanted index is direct.
	oldest := r.at(skip).Seq
	first := skip
	if since >= oldest {
		first = skip + int(since-oldest+1)
	}
	complete := since+1 >= oldest
	var out []Message
	for i := first; i < n && len(out) < limit; i++ {
		out = append(out, r.at(i))
	}
	return out, complete, nil
}

// Before implements History.
func (h *MemoryHistory) Before(room string, before uint64, limit int) ([]Message, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	r := h.rooms[room]
	if r == nil {
		return nil, nil
	}
	skip := h.live(r)
	if skip == len(r.msgs) {
		return nil, nil
	}
	oldest := r.at(skip).Seq
	end := len(r.msgs) // exclusive
	if before != 0 {
		if before <= oldest {
			return nil, nil
		}
		if before-oldest < uint64(end-skip) { // compare before converting: before may be huge
			end = skip + int(before-oldest)
		}
	}
	start := max(skip, end-limit)
	out := make([]Message, 0, end-start)
	for i := start; i < end; i++ {
		out = append(out, r.at(i))
	}
	return out, nil
}

// LastSeq implements History.
func (h *MemoryHistory) LastSeq(room string) (uint64, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if r := h.rooms[room]; r != nil {
		return r.last, nil
	}
	return 0, nil
}

// SeqFloor implements History: memory forgets everything at exit, so it is
// LastSeq.
func (h *MemoryHistory) SeqFloor(room string) (uint64, error) { return h.LastSeq(room) }

// Close implements History: the memory store has nothing to flush, and
// its pruning (with a maximum age) stops.
func (h *MemoryHistory) Close() error {
	h.stopOnce.Do(func() { close(h.stop) })
	return nil
}
