package broker

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// sockConn is the connection as gws sees it. chatd writes every frame of
// its own through the socket's outbox, on the connection underneath; gws
// writes only close frames of its own: the echo of the peer's close, or a
// close for a protocol error it found (or after a read error).
//
// Nothing may follow a close frame (RFC 6455 5.5.1), and chatd's close and
// gws's can be due at the same moment (a token expires as the peer says
// goodbye). So whichever is about to be written first claims the close,
// and the other is never written: gws's is dropped here, chatd's by the
// outbox. That is also what lets chatd send its close and simply wait for
// the peer's answer, with no half-close in between.
//
// During the upgrade it also holds back gws's 101 response, so that the
// response and the welcome frame reach the client in one write: one
// syscall and one wakeup of the client fewer per handshake.
type sockConn struct {
	net.Conn
	closeClaimed atomic.Bool   // a close frame has been (or is being) written
	writeTimeout time.Duration // bounds gws's close write
	// mu orders gws's close against the outbox's writes: no frame of
	// chatd's may follow a close frame gws has written.
	mu sync.Mutex

	// Touched only by the handshake goroutine, before the read loop starts.
	upgrading bool
	response  []byte // what gws wrote while upgrading
}

// Write implements net.Conn for gws's own writes.
func (c *sockConn) Write(p []byte) (int, error) {
	if c.upgrading {
		c.response = append(c.response, p...)
		return len(p), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.claimClose() {
		return len(p), nil // chatd's close went first
	}
	// The outbox's writes that found room set no deadline, and an old
	// one may have passed: this write gets its own, so that a peer that
	// stopped reading cannot hold it (and c.mu) for ever.
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout)); err != nil {
		return 0, err
	}
	if _, err := c.Conn.Write(plainClose(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// plainClose returns gws's close frame p with the reason PROTOCOL.md
// recommends, or one fit for the peer. gws closes 1007 and 1009 with texts
// of its own ("gws: invalid text encoding"), and 1000 with the text of
// whatever ended its read loop: for the idle timeout, "read tcp <server
// address>-><peer address>: i/o timeout", the server's own address shown
// to the world.
func plainClose(p []byte) []byte {
	if len(p) < 4 || p[0] != 0x80|opClose || p[1] > 125 || int(p[1])+2 != len(p) {
		return p // not a close frame with a code: the echo of an empty close
	}
	switch code := binary.BigEndian.Uint16(p[2:4]); code {
	case 1007:
		return closeFrame(code, "invalid UTF-8")
	case 1009:
		return closeFrame(code, "message too big")
	case 1000:
		if bytes.Contains(p[4:], []byte("timeout")) {
			return closeFrame(code, "idle timeout")
		}
		return closeFrame(code, "")
	}
	return p
}

// claimClose reports whether the caller may write the connection's close
// frame: true once only.
func (c *sockConn) claimClose() bool { return c.closeClaimed.CompareAndSwap(false, true) }

// SetDeadline implements net.Conn. gws brackets its 101 response with a
// deadline and its removal; held back, the response needs neither (the
// outbox sets its own write deadline, and start the read deadline).
func (c *sockConn) SetDeadline(t time.Time) error {
	if c.upgrading {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

// Close implements net.Conn. A refused upgrade still gets gws's answer.
func (c *sockConn) Close() error {
	if c.upgrading {
		c.upgrading = false
		if len(c.response) > 0 {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Conn.Write(c.response)
		}
	}
	return c.Conn.Close()
}

// upgraded ends the upgrade and returns the response gws wrote, for the
// caller to send ahead of the welcome.
func (c *sockConn) upgraded() []byte {
	c.upgrading = false
	r := c.response
	c.response = nil
	return r
}
