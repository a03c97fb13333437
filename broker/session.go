package broker

import (
	"crypto/rand"
	"encoding/hex"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/chatd/chatd/broker/wheel"
	"github.com/lxzan/gws"
	"golang.org/x/time/rate"
)

// Session is one authenticated socket.
type Session struct {
	id     string
	name   string // the token's name, shown to others
	sub    string
	broker *Broker
	conn   *gws.Conn
	sock   *sockConn // conn's connection, as gws sees it
	out    outbox

	// Touched only by the socket's read loop (and by the handler before
	// the loop starts), so they need no lock.
	rooms     map[string]membership
	allowed   []string // the token's rooms claim: nil allows any room
	limiter   *rate.Limiter
	creations *rate.Limiter // new rooms this socket may create; made on first use
	strikes   []time.Time   // recent rate_limited errors
	lastRead  time.Time     // when the read deadline was last pushed back

	mu   sync.Mutex // guards jtis: logout may look while a refresh adds
	jtis []string   // every token this socket has held

	exp        atomic.Int64 // the current token's exp, unix seconds
	closeAt    atomic.Int64 // unix nanos: exp + leeway
	expire     *wheel.Timer // the token's close; once the close frame is out, the close grace
	warn       *wheel.Timer
	closedCode atomic.Uint32 // the code the server closed with, once it did
	graceEnd   atomic.Int64  // unix nanos: the peer's close frame is awaited until then; 0 before
}

// newRoomsPerMinute bounds how many rooms that never existed one socket
// may go on creating: every room named costs the store a bucket on disk.
const newRoomsPerMinute = 30

// mayCreateRoom takes one of the socket's new-room tokens. A fresh socket
// may fill all its --max-rooms with new rooms at once; after that it names
// newRoomsPerMinute a minute. The limiter is made on first use: most
// sockets never name a new room.
func (s *Session) mayCreateRoom() bool {
	if s.creations == nil {
		burst := max(newRoomsPerMinute, s.broker.opts.MaxRooms)
		s.creations = rate.NewLimiter(rate.Every(time.Minute/newRoomsPerMinute), burst)
	}
	return s.creations.Allow()
}

// membership is a socket's place in a room.
type membership struct {
	room  *Room
	since uint64 // the room's latest seq when the socket joined: later ones came live
}

// sessionSlot is the gws SessionStorage of a connection. It holds only the
// *Session, written before the read loop starts and read only by it; the
// default storage, a map behind a mutex, would be paid on every frame.
type sessionSlot struct{ s *Session }

// Len implements gws.SessionStorage.
func (x *sessionSlot) Len() int { return 1 }

// Load implements gws.SessionStorage.
func (x *sessionSlot) Load(string) (any, bool) { return x.s, x.s != nil }

// Delete implements gws.SessionStorage; the slot is never emptied.
func (x *sessionSlot) Delete(string) {}

// Store implements gws.SessionStorage; the slot is set directly.
func (x *sessionSlot) Store(string, any) {}

// Range implements gws.SessionStorage.
func (x *sessionSlot) Range(f func(string, any) bool) { f("session", x.s) }

func sessionOf(c *gws.Conn) *Session { return c.Session().(*sessionSlot).s }

// newID returns 64 random bits in hex.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (b *Broker) newSession(conn *gws.Conn, sock *sockConn, c *authn.Claims) *Session {
	s := &Session{
		id:      newID(),
		name:    c.Name,
		sub:     c.Subject,
		broker:  b,
		conn:    conn,
		sock:    sock,
		rooms:   make(map[string]membership),
		allowed: c.Rooms, // not the whole claims: they would stay alive per socket
		limiter: rate.NewLimiter(rate.Limit(b.opts.RateLimit), max(1, int(2*b.opts.RateLimit))),
		jtis:    []string{c.ID},
	}
	w := sock.Conn
	if u, ok := w.(interface{ NetConn() net.Conn }); ok {
		w = u.NetConn() // under broker.Listener's replay wrapper: writev and an fd
	}
	s.out = outbox{conn: w, sock: sock, limit: b.opts.SendQueueBytes, timeout: b.opts.WriteTimeout}
	if sc, ok := w.(syscall.Conn); ok {
		s.out.raw, _ = sc.SyscallConn() // nil (writes go through conn) if it fails
	}
	s.expire = wheel.NewTimer(s.onExpire)
	s.warn = wheel.NewTimer(s.onWarn)
	return s
}

// send queues frame, or on an idle socket writes it at once; a socket
// whose queue is full is evicted.
func (s *Session) send(frame []byte) {
	if !s.out.pushNow(frame) {
		s.slow()
	}
}

// slow evicts a socket that does not keep up: close 4008, dropping the
// frames not yet written. The write in flight gets a second more; only if
// it completes does the close frame follow it (never into the middle of a
// frame), and a peer that reads nothing just sees the connection end.
func (s *Session) slow() {
	if s.close(CloseSlowConsumer, true, nil) {
		_ = s.sock.SetWriteDeadline(time.Now().Add(time.Second))
	}
}

// closeGrace is how long a closing socket waits for the peer's close
// frame before the connection is dropped.
const closeGrace = 2 * time.Second

// Close codes the server sends, with their reasons (PROTOCOL.md).
const (
	CloseGoingAway    = 1001
	CloseUnsupported  = 1003
	ClosePolicy       = 1008
	CloseTokenExpired = 4001
	CloseTokenRevoked = 4003
	CloseSlowConsumer = 4008
)

// closeReasons are the texts of the close frames the server sends.
func closeReasons() map[uint16]string {
	return map[uint16]string{
		CloseGoingAway:    "server shutting down",
		CloseUnsupported:  "binary frames not supported",
		ClosePolicy:       "policy violation",
		CloseTokenExpired: "token expired",
		CloseTokenRevoked: "token revoked",
		CloseSlowConsumer: "slow consumer",
	}
}

// close sends last (if not nil), then the close frame with code, and then
// waits for the peer's close frame. With drop, the frames not yet written
// are dropped first (an expired or revoked token must not wait behind a
// backlog), and on an idle socket the frames are written on the calling
// goroutine at once; without, they go out after the backlog. Only the
// first close counts; it reports whether this one was it.
func (s *Session) close(code uint16, drop bool, last []byte) bool {
	if s.out.gone() || !s.closedCode.CompareAndSwap(0, uint32(code)) {
		return false // already gone (a timer that fired as it closed), or closing
	}
	b := s.broker
	c := b.closings[code]
	c.count.Inc()
	bye := c.frame
	frames := [][]byte{bye}
	if last != nil {
		frames = [][]byte{last, bye}
	}
	if drop {
		s.out.closeNow(s.awaitClose, frames...)
	} else {
		s.out.closeAfter(s.awaitClose, frames...)
	}
	return true
}

// awaitClose runs once the close frame is written. The connection stays
// open for the peer's close frame: when it comes, gws closes the
// connection (its echo is dropped by sockConn, ours went first). Closing at
// once would make the kernel answer a peer still sending with a reset,
// which can destroy our close frame before the peer reads it; and a FIN
// now would cost every socket of an expiry burst a second packet before
// the next socket is told. A peer that never answers is dropped after
// closeGrace, by s.expire (onExpire): the token's timer has no more use,
// and a wheel timer costs a burst of closes less than two runtime timers
// for a read deadline (the poller's and the parked socket's) would. Like
// every wheel timer it runs on the wall clock: a step of the clock
// shortens or stretches the grace (the idle deadline still bounds it).
func (s *Session) awaitClose() {
	end := time.Now().Add(closeGrace)
	s.graceEnd.Store(end.UnixNano())
	s.broker.wheel.Schedule(s.expire, end)
	if s.out.gone() {
		s.broker.wheel.Cancel(s.expire) // OnClose ran meanwhile: nothing to wait for
	}
}

// scheduleExpire sets s.expire for the token's close at closeAt, unless
// a close frame has gone out: then s.expire is the close grace, and that
// stands. (awaitClose stores graceEnd before it schedules, so whichever
// of the two schedules last, the grace wins.)
func (s *Session) scheduleExpire(closeAt time.Time) {
	b := s.broker
	b.wheel.Schedule(s.expire, closeAt)
	if end := s.graceEnd.Load(); end != 0 {
		b.wheel.Schedule(s.expire, time.Unix(0, end))
	}
}

// abort drops the connection without a close frame (drain timeout).
func (s *Session) abort() {
	s.out.kill()
	_ = s.sock.Close()
}

// sendError sends an `error` frame answering a request with id.
func (s *Session) sendError(code, message string, id []byte) {
	s.broker.metrics.errorFrames.WithLabelValues(code).Inc()
	s.send(textFrame(errorFrame{Type: "error", Code: code, Message: message, ID: id}))
}

// maxJTIs bounds the tokens one socket remembers for logout; a socket
// refreshed more often than that forgets its oldest refreshed tokens (long
// expired, with any sane TTL), never the one it was opened with.
const maxJTIs = 16

// addJTI records a token the socket now holds, for logout.
func (s *Session) addJTI(jti string) {
	s.mu.Lock()
	if slices.Contains(s.jtis, jti) {
		s.mu.Unlock()
		return
	}
	s.jtis = append(s.jtis, jti)
	var forget []string
	if len(s.jtis) > maxJTIs {
		// Keep the token the socket was opened with: logging it out must
		// still close the socket. Forget the oldest refresh instead.
		forget = []string{s.jtis[1]}
		s.jtis = slices.Delete(s.jtis, 1, 2)
	}
	s.mu.Unlock()
	s.broker.registry.addJTI(s, jti)
	if forget != nil {
		s.broker.registry.removeJTIs(s, forget)
	}
}

func (s *Session) heldJTIs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.jtis...)
}

// schedule puts the socket's close at exp + leeway on the wheel, and the
// `expiring` warning before it when there is time for one to be useful.
func (s *Session) schedule(exp time.Time) {
	b := s.broker
	closeAt := exp.Add(b.opts.Leeway)
	if last := time.Unix(0, math.MaxInt64); closeAt.After(last) {
		// closeAt holds unix nanoseconds, which end in 2262: a later exp
		// ("never expires", 9999999999) would overflow into the past and
		// close the socket at once.
		closeAt = last
	}
	s.exp.Store(exp.Unix())
	s.closeAt.Store(closeAt.UnixNano())
	s.scheduleExpire(closeAt)
	if warn := b.opts.ExpiryWarning; warn > 0 && time.Until(closeAt) > 2*warn {
		b.wheel.Schedule(s.warn, closeAt.Add(-b.opts.ExpiryWarning))
	} else {
		b.wheel.Cancel(s.warn)
	}
}

// expired reports whether the socket's close time has come.
func (s *Session) expired(now time.Time) bool { return now.UnixNano() >= s.closeAt.Load() }

// onExpire runs on the wheel's goroutine (or one the wheel shares a burst
// with, beside other sockets' onExpire). It never waits for the socket:
// the close frames go out in one non-blocking write (outbox.closeNow).
// After a close frame it is the close grace's end instead (awaitClose):
// the read deadline becomes now, and the read loop ends the connection as
// on any timed-out read (closing it here could wait for a reader to let
// go of the descriptor).
func (s *Session) onExpire() {
	now := time.Now()
	if end := s.graceEnd.Load(); end != 0 {
		if now.UnixNano() < end {
			s.broker.wheel.Schedule(s.expire, time.Unix(0, end)) // the clock stepped back
			return
		}
		_ = s.sock.SetReadDeadline(now) // the peer never answered the close
		return
	}
	if s.closedCode.Load() != 0 {
		return // closing for another reason; its close frame is not out yet
	}
	if !s.expired(now) {
		// A refresh moved the close after the wheel picked this up (or the
		// clock stepped back): make sure the timer stands at the new time.
		s.scheduleExpire(time.Unix(0, s.closeAt.Load()))
		return
	}
	s.close(CloseTokenExpired, true, s.broker.expiredFrame)
}

// onWarn runs on the wheel's goroutine (or one the wheel shares a burst
// with); send never waits for the socket.
func (s *Session) onWarn() {
	left := time.Until(time.Unix(0, s.closeAt.Load()))
	if left > s.broker.opts.ExpiryWarning+time.Second {
		return // stale: a refresh moved the close
	}
	secs := int64((left + time.Second/2) / time.Second)
	s.send(textFrame(expiringFrame{Type: "expiring", Exp: s.exp.Load(), In: max(0, secs)}))
}

// touch pushes the read deadline back: a peer that sends nothing, not even
// a pong, for IdleTimeout is gone. It is paid on every frame, so it moves
// the deadline only when a quarter of the timeout has passed.
func (s *Session) touch(now time.Time) {
	if s.closedCode.Load() != 0 {
		// Closing: the close grace decides (awaitClose), and the last
		// idle deadline stands behind it.
		return
	}
	if now.Sub(s.lastRead) < s.broker.opts.IdleTimeout/4 {
		return
	}
	s.lastRead = now
	_ = s.conn.SetReadDeadline(now.Add(s.broker.opts.IdleTimeout))
}
