//go:build linux

package broker

import (
	"bufio"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// parking is what a parkable connection keeps for the parker.
type parking struct {
	conn   *tcpConn
	parker *parker
	fd     int32
	// resume starts the read loop again on a new goroutine (a closing
	// socket's after the wheel's burst of closes). It runs with mu held
	// and must not block.
	resume func()

	// frames is fed by the read loop only.
	frames frameTracker
	// deadline mirrors the connection's read deadline, on the monotonic
	// clock as the runtime's is (monotonic(t); 0 for none): a parked
	// socket's loop must run when it passes.
	deadline atomic.Int64
	// disabled: the parker has closed, reads wait as plain ones do.
	disabled atomic.Bool

	mu         sync.Mutex
	parked     bool
	closed     bool
	registered bool        // added to the epoll set (one-shot: armed only while parked)
	timer      *time.Timer // wakes the socket at its read deadline
	timerAt    int64       // the deadline timer is armed for; 0 when not armed
}

// clockBase anchors monotonic.
var clockBase = time.Now()

// monotonic returns t on the monotonic clock, in nanoseconds since
// clockBase (at least 1), or 0 for the zero time. A wall clock stepped
// back must not hold a parked socket past its deadline.
func monotonic(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(1, int64(t.Sub(clockBase)))
}

// enableParking makes c parkable by p: from now on its read loop may
// unwind when idle, and resume restarts it. br is the reader gws reads c
// through; what it holds already is fed to the frame tracker.
func (c *tcpConn) enableParking(p *parker, br *bufio.Reader, resume func()) bool {
	if p == nil {
		return false
	}
	var fd int32 = -1
	_ = c.raw.Control(func(d uintptr) { fd = int32(d) })
	if fd < 0 {
		return false
	}
	q := &parking{conn: c, parker: p, fd: fd, resume: resume}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		q.frames.feed(b)
	}
	c.park = q
	return true
}

// idle reports whether a read that found nothing may park the socket
// instead of waiting: at a frame boundary, before the read deadline.
func (q *parking) idle() bool {
	if q.disabled.Load() || !q.frames.atBoundary() {
		return false
	}
	d := q.deadline.Load()
	return d == 0 || monotonic(time.Now()) < d
}

// park hands the socket to the parker; its read loop has unwound. It
// reports false when the socket cannot be parked, and the loop must go on.
func (q *parking) park() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false // the read will find the connection closed
	}
	if !q.parker.add(q) {
		q.disabled.Store(true)
		return false
	}
	q.parked = true
	q.armTimer(q.deadline.Load())
	// Armed last: the event may come at once, and then finds q parked
	// (wake waits for q.mu). epoll_ctl checks readiness as it arms, so
	// bytes that came since the read found none wake the socket.
	var errno syscall.Errno
	err := q.conn.raw.Control(func(fd uintptr) {
		errno = q.parker.watch(int(fd), q.fd, !q.registered)
	})
	if err != nil || errno != 0 {
		// Closed meanwhile, or the kernel refused: read on.
		q.parked = false
		q.parker.forget(q)
		if errno != 0 {
			q.disabled.Store(true)
		}
		return false
	}
	q.registered = true
	return true
}

// wake starts a parked socket's read loop again.
func (q *parking) wake() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.wakeLocked()
}

// wakeLocked is wake with q.mu held. The deadline timer stays armed: the
// socket will most likely park again with the same deadline (the idle
// deadline moves only every quarter of the timeout), and a timer that
// fires for a socket not parked does nothing.
func (q *parking) wakeLocked() {
	if !q.parked {
		return
	}
	q.parked = false
	q.parker.forget(q)
	q.resume()
}

// deadlinePassed runs on the timer's goroutine.
func (q *parking) deadlinePassed() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.timerAt = 0
	q.wakeLocked()
}

// setDeadline follows a new read deadline; a parked socket's timer moves.
func (q *parking) setDeadline(t time.Time) {
	d := monotonic(t)
	q.deadline.Store(d)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.parked {
		q.armTimer(d)
	}
}

// closeConn wakes a parked socket whose connection has closed: its read
// loop ends with the read error, as a waiting read's would.
func (q *parking) closeConn() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.wakeLocked()
	if q.timer != nil {
		q.timer.Stop()
	}
}

// armTimer makes the deadline timer fire at d (0: not at all), unless it
// is armed for d already.
func (q *parking) armTimer(d int64) {
	switch {
	case d == q.timerAt:
	case d == 0:
		q.timer.Stop()
		q.timerAt = 0
	case q.timer == nil:
		q.timer = time.AfterFunc(time.Duration(d-monotonic(time.Now())), q.deadlinePassed)
		q.timerAt = d
	default:
		q.timer.Reset(time.Duration(d - monotonic(time.Now())))
		q.timerAt = d
	}
}

// SetReadDeadline implements net.Conn; a parked socket wakes at it.
func (c *tcpConn) SetReadDeadline(t time.Time) error {
	err := c.TCPConn.SetReadDeadline(t)
	if c.park != nil {
		c.park.setDeadline(t)
	}
	return err
}

// SetDeadline implements net.Conn; a parked socket wakes at it.
func (c *tcpConn) SetDeadline(t time.Time) error {
	err := c.TCPConn.SetDeadline(t)
	if c.park != nil {
		c.park.setDeadline(t)
	}
	return err
}

// Close implements net.Conn; a parked socket's read loop runs to its end.
func (c *tcpConn) Close() error {
	err := c.TCPConn.Close()
	if c.park != nil {
		c.park.closeConn()
	}
	return err
}
