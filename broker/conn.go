package broker

import (
	"net"
	"sync/atomic"
)

// sockConn is the connection as gws sees it. chatd writes every frame of
// its own through the socket's outbox, on the connection underneath; gws
// writes only close frames of its own: the echo of the peer's close, or a
// close for a protocol error it found. Once chatd has sent its close
// frame, nothing may follow it (RFC 6455 5.5.1), so from then on gws's
// writes are dropped here. That is what lets chatd send its close and
// simply wait for the peer's answer, with no half-close in between.
type sockConn struct {
	net.Conn
	closeSent atomic.Bool // chatd's close frame is written or on its way
}

// Write implements net.Conn for gws's own writes.
func (c *sockConn) Write(p []byte) (int, error) {
	if c.closeSent.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}
