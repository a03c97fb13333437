package broker

import (
	"errors"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"
)

// outbox is one socket's bounded send queue. Frames are shared, already
// encoded bytes; whatever has queued up while the previous write was in
// flight goes out in one writev, so a busy socket costs one syscall per
// batch rather than per frame.
//
// gws's own async queue has no bound (notes/gws.md); this one counts bytes
// and tells the caller when a socket is too slow to keep.
type outbox struct {
	conn     net.Conn        // where frames are written
	raw      syscall.RawConn // conn's descriptor, for writes that never wait
	sock     *sockConn       // conn as gws sees it: who writes the close frame
	limit    int             // bytes queued before the socket counts as slow
	timeout  time.Duration   // deadline of each write
	deadline time.Time       // the write deadline last set by the flusher
	claimed  bool            // the close frame is ours to write; see claimClose

	mu       sync.Mutex
	queue    [][]byte
	spare    [][]byte // the previous batch's slice, reused
	bytes    int
	flushing bool // a flusher goroutine owns the connection's writes
	// cut: queue[0] is the rest of a frame a non-blocking write cut short.
	// It must go out before anything else, a close included.
	cut     bool
	closing func()
	dead    bool
	taken   chan struct{} // closed when the queue is next taken (waitBelow)
}

// push queues frame. It returns false, queueing nothing, when the queue
// would pass its limit; a closing socket drops the frame quietly.
func (o *outbox) push(frame []byte) bool {
	ok, mine := o.offer(frame)
	if mine {
		go o.flush()
	}
	return ok
}

// offer is push without starting a flusher. When the socket was idle the
// caller becomes its writer (mine) and must call drain: a broadcast
// collects the members it has made busy and writes them from a few
// goroutines (fanout), not one goroutine each.
func (o *outbox) offer(frame []byte) (ok, mine bool) {
	o.mu.Lock()
	if o.dead || o.closing != nil {
		o.mu.Unlock()
		return true, false
	}
	if o.bytes+len(frame) > o.limit && o.bytes > 0 {
		o.mu.Unlock()
		return false, false
	}
	o.queue = append(o.queue, frame)
	o.bytes += len(frame)
	mine = !o.flushing
	o.flushing = true
	o.mu.Unlock()
	return true, mine
}

// drain writes what is queued on the calling goroutine, which owns the
// connection's writes (offer made it the writer), without waiting for the
// socket. What the kernel does not take, and what was queued meanwhile, go
// to a flusher goroutine; with nothing left the turn ends (and a pending
// close runs).
func (o *outbox) drain() {
	batch, last, ok := o.take()
	if !ok {
		return
	}
	if last && !o.claimClose() {
		clear(batch)
		o.fail() // gws's close went first; see flush
		return
	}
	rest, err := o.writeNoWaitGuarded(batch)
	if err != nil {
		clear(batch)
		o.fail()
		return
	}
	o.mu.Lock()
	o.requeueLocked(rest)
	clear(batch) // drop references to shared frames
	o.spare = batch[:0]
	o.handBackLocked()
}

// handBackLocked ends a turn of writes that never wait: whatever is still
// queued (what the kernel did not take, what came meanwhile) goes to a
// flusher goroutine; with nothing left the turn ends. o.mu is held on
// entry and released on return.
func (o *outbox) handBackLocked() {
	if o.dead || len(o.queue) == 0 {
		o.endTurnLocked()
		return
	}
	o.mu.Unlock()
	go o.flush()
}

// requeueLocked puts back at the head of the queue the frames a
// non-blocking write did not take (copied: they may alias the batch);
// o.mu is held.
func (o *outbox) requeueLocked(rest [][]byte) {
	if len(rest) == 0 || o.dead {
		return
	}
	o.queue = slices.Concat(rest, o.queue)
	o.bytes += sizeOf(rest)
	o.cut = true // rest[0] may be part of a frame
}

// take hands the owner of the connection's writes what is queued, and
// whether it ends with the close frames. With nothing queued (or the
// connection gone) it ends the turn instead and returns ok false.
func (o *outbox) take() (batch [][]byte, last, ok bool) {
	o.mu.Lock()
	if o.dead || len(o.queue) == 0 {
		o.endTurnLocked()
		return nil, false, false
	}
	batch = o.queue
	o.queue = o.spare[:0]
	o.bytes = 0
	o.wakeWaitersLocked()
	o.cut = false
	// Once closing, nothing is queued after the close frames: this batch
	// ends with them.
	last = o.closing != nil
	o.mu.Unlock()
	return batch, last, true
}

// pushNow is push, except that on an idle socket (nothing queued, nothing
// in flight) the frame is written at once on the calling goroutine, which
// never waits for the socket: what the kernel does not take goes to a
// flusher. The heartbeat pings thousands of idle sockets; a flusher
// goroutine each grew the runtime's stack pool, and that memory stayed
// in the process.
func (o *outbox) pushNow(frame []byte) bool {
	o.mu.Lock()
	if o.dead || o.closing != nil || o.flushing || len(o.queue) > 0 {
		o.mu.Unlock()
		return o.push(frame)
	}
	o.flushing = true
	o.mu.Unlock()
	o.writeNow(frame)
	return true
}

// writeNow writes frames on the calling goroutine, which owns the
// connection's writes (it set o.flushing), without waiting for the socket,
// and then hands the writing back: what the kernel did not take, and what
// was queued meanwhile, go to a flusher; with nothing left, a pending
// close runs here, or the next push takes over.
func (o *outbox) writeNow(frames ...[]byte) {
	rest, err := o.writeNoWaitGuarded(frames)
	if err != nil {
		o.fail()
		return
	}
	o.mu.Lock()
	o.requeueLocked(rest)
	o.handBackLocked()
}

// endTurnLocked ends the turn of the goroutine that owns the connection's
// writes, with nothing left to write: the writing passes to the next push,
// and a pending close runs (unless the connection is gone). o.mu is held
// on entry and released on return.
func (o *outbox) endTurnLocked() {
	closeFn := o.closing
	if o.dead {
		closeFn = nil
	}
	o.flushing = false
	o.mu.Unlock()
	if closeFn != nil {
		closeFn()
	}
}

// writeNoWaitGuarded is writeNoWait under the lock that orders chatd's
// writes against gws's close (see write).
func (o *outbox) writeNoWaitGuarded(frames [][]byte) ([][]byte, error) {
	locked, err := o.lockWrites(false)
	if err == errWriteBusy {
		return frames, nil // gws is writing its close: the flusher finds out
	}
	if err != nil {
		return nil, err
	}
	if locked {
		defer o.sock.mu.Unlock()
	}
	return o.writeNoWait(frames)
}

// lockWrites takes the lock that orders chatd's writes against gws's own
// close frame (sockConn), and refuses if gws's close went first: nothing
// may follow it. Once this outbox holds the close claim gws writes nothing
// more, so no lock is needed (the expiry burst's writes take none). The
// caller unlocks o.sock.mu if locked. Unless wait, it does not wait for
// the lock, whose other holder is gws writing its close, and returns
// errWriteBusy instead: the caller leaves the write to a flusher.
func (o *outbox) lockWrites(wait bool) (locked bool, err error) {
	if o.sock == nil || o.claimed {
		return false, nil
	}
	if !wait {
		if !o.sock.mu.TryLock() {
			return false, errWriteBusy
		}
	} else {
		o.sock.mu.Lock()
	}
	if o.sock.closeClaimed.Load() {
		o.sock.mu.Unlock()
		return false, errClosedByPeer
	}
	return true, nil
}

// pushForce queues frames even past the limit: for a bounded burst the
// client asked for, such as a replay. They count against the limit.
func (o *outbox) pushForce(frames ...[]byte) {
	o.mu.Lock()
	o.enqueueLocked(nil, frames...)
}

// closeAfter queues frames and runs closeFn once everything queued so far
// is written. Later pushes are dropped.
func (o *outbox) closeAfter(closeFn func(), frames ...[]byte) {
	o.mu.Lock()
	o.enqueueLocked(closeFn, frames...)
}

// closeNow drops the frames not yet written, queues frames and runs
// closeFn once they are written. Later pushes are dropped. On a socket
// with no write in flight (the usual case: an idle socket whose token
// expired) the frames are written at once on the calling goroutine, which
// never waits for the socket: an expiry burst then tells thousands of
// sockets one after another (on each of the goroutines the wheel shares
// it among) at the cost of one write each, with no goroutine started per
// socket. Whatever the kernel does not take goes to a flusher.
func (o *outbox) closeNow(closeFn func(), frames ...[]byte) {
	o.mu.Lock()
	if o.dead || o.closing != nil {
		o.mu.Unlock()
		return
	}
	keep := 0
	if o.cut {
		keep = 1 // the rest of a frame already begun on the wire
	}
	clear(o.queue[keep:])
	o.queue = o.queue[:keep]
	o.bytes = sizeOf(o.queue)
	if o.flushing {
		o.enqueueLocked(closeFn, frames...)
		return
	}
	o.flushing, o.closing = true, closeFn // later pushes are dropped
	o.mu.Unlock()

	if !o.claimClose() {
		o.fail() // gws's close went first; see flush
		return
	}
	o.writeNow(frames...)
}

// claimClose reports whether this outbox may write the connection's close
// frame (see sockConn): whether it has claimed it, or claims it now. Only
// the goroutine that owns the writes calls it.
func (o *outbox) claimClose() bool {
	if !o.claimed {
		o.claimed = o.sock == nil || o.sock.claimClose()
	}
	return o.claimed
}

// enqueueLocked appends frames unless the outbox is dead or closing, sets
// closeFn if given, and starts a flusher if none runs. o.mu is held on
// entry and released on return.
func (o *outbox) enqueueLocked(closeFn func(), frames ...[]byte) {
	if o.dead || o.closing != nil {
		o.mu.Unlock()
		return
	}
	o.queue = append(o.queue, frames...)
	o.bytes += sizeOf(frames)
	o.closing = closeFn
	start := !o.flushing
	o.flushing = true
	o.mu.Unlock()
	if start {
		go o.flush()
	}
}

// kill drops everything queued and unblocks a write in flight. It reports
// false if the outbox was already dead.
func (o *outbox) kill() bool {
	o.mu.Lock()
	if o.dead {
		o.mu.Unlock()
		return false
	}
	o.dead = true
	o.queue, o.spare, o.bytes = nil, nil, 0
	o.wakeWaitersLocked()
	o.mu.Unlock()
	// A writer blocked on a peer that does not read returns at once.
	_ = o.conn.SetWriteDeadline(time.Now())
	return true
}

// flush writes batches until the queue is empty, then runs a pending close.
func (o *outbox) flush() {
	for {
		batch, last, ok := o.take()
		if !ok {
			return
		}
		if last && !o.claimClose() {
			// gws has written a close of its own (and closes the
			// connection): nothing may follow it.
			clear(batch)
			o.fail()
			return
		}
		err := o.write(batch)

		clear(batch) // drop references to shared frames
		o.mu.Lock()
		o.spare = batch[:0]
		o.mu.Unlock()
		if err != nil {
			o.fail()
			return
		}
	}
}

// hold makes the caller the socket's writer: frames pushed from now on
// queue up, and no flusher starts until release.
func (o *outbox) hold() {
	o.mu.Lock()
	o.flushing = true
	o.mu.Unlock()
}

// release writes first (the bytes that must lead: the upgrade response,
// the welcome) on the calling goroutine, in one write, and hands the
// writing back: to a flusher goroutine if frames queued since hold, else
// to the next push.
func (o *outbox) release(first ...[]byte) {
	if len(first) > 0 && len(first[0]) == 0 {
		first = first[1:]
	}
	if err := o.write(first); err != nil {
		o.fail()
		return
	}
	o.mu.Lock()
	if len(o.queue) == 0 && o.closing == nil {
		o.flushing = false
		o.mu.Unlock()
		return
	}
	o.mu.Unlock()
	go o.flush()
}

// errClosedByPeer fails a write that would follow gws's close frame.
var errClosedByPeer = errors.New("the connection's close frame was written by gws")

// errWriteBusy is lockWrites's answer, when told not to wait, while gws
// writes its close.
var errWriteBusy = errors.New("gws is writing the connection's close frame")

// gone reports whether the connection has ended.
func (o *outbox) gone() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dead
}

// waitBelow waits until fewer than n bytes wait behind the write in flight,
// and reports whether they do; false if the socket is closing or gone, or
// timeout passed first.
func (o *outbox) waitBelow(n int, timeout time.Duration) bool {
	var deadline <-chan time.Time
	for {
		o.mu.Lock()
		if o.dead || o.closing != nil {
			o.mu.Unlock()
			return false
		}
		if o.bytes < n {
			o.mu.Unlock()
			return true
		}
		if o.taken == nil {
			o.taken = make(chan struct{})
		}
		taken := o.taken
		o.mu.Unlock()
		if deadline == nil {
			t := time.NewTimer(timeout)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-taken:
		case <-deadline:
			return false
		}
	}
}

// wakeWaitersLocked wakes a waitBelow; o.mu is held.
func (o *outbox) wakeWaitersLocked() {
	if o.taken != nil {
		close(o.taken)
		o.taken = nil
	}
}

// queued returns the bytes waiting behind the write in flight.
func (o *outbox) queued() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bytes
}

// fail ends a connection whose write failed; the read loop sees it and
// runs OnClose.
func (o *outbox) fail() {
	o.kill()
	_ = o.conn.Close()
	o.mu.Lock()
	o.flushing = false
	o.mu.Unlock()
}

// write writes one batch. Every write needs a deadline: a peer that stops
// reading would otherwise block it, and gws's own close frame behind it,
// forever. Moving the deadline costs a runtime timer update, so it is moved
// only when half of it has passed: each write gets between timeout/2 and
// timeout. Only the goroutine that owns the connection's writes touches
// deadline. gws's own close sets a deadline of its own (sockConn.Write).
func (o *outbox) write(batch [][]byte) error {
	locked, err := o.lockWrites(true)
	if err != nil {
		return err
	}
	if locked {
		defer o.sock.mu.Unlock()
	}
	// Most writes find room in the socket's buffer and need no deadline.
	batch, err = o.writeNoWait(batch)
	if err != nil || len(batch) == 0 {
		return err
	}
	if now := time.Now(); o.deadline.Sub(now) < o.timeout/2 {
		o.deadline = now.Add(o.timeout)
		if err := o.conn.SetWriteDeadline(o.deadline); err != nil {
			return err
		}
	}
	if len(batch) == 1 {
		_, err := o.conn.Write(batch[0])
		return err
	}
	// WriteTo consumes bufs and overwrites the elements it shares with
	// batch; every caller clears batch afterwards anyway.
	bufs := net.Buffers(batch)
	_, err = bufs.WriteTo(o.conn)
	return err
}

// sizeOf returns the bytes in frames.
func sizeOf(frames [][]byte) int {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	return n
}

// skipBytes returns frames without their first n bytes. A frame cut short
// goes into a new slice (an allocation, on a socket whose buffer is full
// anyway), so the caller's slice is untouched.
func skipBytes(frames [][]byte, n int) [][]byte {
	for len(frames) > 0 && n >= len(frames[0]) {
		n -= len(frames[0])
		frames = frames[1:]
	}
	if n > 0 {
		frames = slices.Concat([][]byte{frames[0][n:]}, frames[1:])
	}
	return frames
}
