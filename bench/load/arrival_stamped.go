//go:build linux && (amd64 || arm64)

package load

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"syscall"
)

// arrivalConn reads with recvmsg and keeps the kernel's receive timestamp
// (SO_TIMESTAMPNS) of the last read: when the bytes reached this machine's
// TCP stack, however long the client's own core then took to get to them.
//
// That is the clock of the figures: chatbench runs thousands of sockets on
// one core, and in a burst (an expiry tick, a fan-out) the socket it
// reads last waits behind every read before it. On loopback the receive
// path runs inside the server's write, so the timestamp is the moment the
// server's frame left it.
type arrivalConn struct {
	*net.TCPConn
	raw  syscall.RawConn
	recv func(fd uintptr) bool // c.recvmsg, bound once
	oob  [64]byte
	last int64 // unix ns of the last read's data; only the read loop touches it

	// The read in progress, for recv (only the read loop reads).
	p       []byte
	n, oobn int
	err     error

	// headers: reads stop at the end of the HTTP response's headers until
	// it has been read (matched counts how much of "\r\n\r\n" the bytes
	// read so far end with). The frames behind them then stay in the
	// socket for the poller rather than in gws's read buffer. A response
	// other than 101 is read as usual: its body is the refusal's error.
	headers bool
	matched int
	status  bool // the response's first bytes have been read
	// onClose, if set, runs before the descriptor is closed: the poller
	// stops reading it (see poller.forget).
	onClose atomic.Pointer[func()]
}

// withArrival turns on receive timestamps for c, and with headers its
// reads stop at the end of the handshake's response headers. It returns c
// unchanged where the kernel refuses timestamps, and then arrival times
// are read times.
func withArrival(c net.Conn, headers bool) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return c
	}
	ac := &arrivalConn{TCPConn: tc, raw: raw, headers: headers}
	ac.recv = ac.recvmsg
	return ac
}

// Read implements net.Conn, deadlines included (RawConn.Read honours them).
func (c *arrivalConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.headers {
		return c.readHeaders(p)
	}
	c.p = p
	err := c.raw.Read(c.recv)
	c.p = nil
	if err == nil {
		err = c.err
	}
	if err != nil {
		return 0, err
	}
	if c.n == 0 {
		return 0, io.EOF
	}
	c.last = stampOf(c.oob[:c.oobn])
	return c.n, nil
}

// readHeaders reads into p what has arrived, but not past the blank line
// that ends the HTTP response's headers: it peeks first, and takes only
// up to there. The handshake is the only time it runs, so its closures
// cost nothing that matters.
func (c *arrivalConn) readHeaders(p []byte) (int, error) {
	var n int
	var err error
	recv := func(flags int) func(fd uintptr) bool {
		return func(fd uintptr) bool {
			for {
				n, _, err = syscall.Recvfrom(int(fd), p, flags)
				if err != syscall.EINTR {
					return err != syscall.EAGAIN
				}
			}
		}
	}
	if rerr := c.raw.Read(recv(syscall.MSG_PEEK)); rerr != nil {
		return 0, rerr
	}
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	if !c.status {
		// The first bytes of the response: its status line (in practice
		// whole in the first segment).
		c.status = true
		if n >= 12 && (!bytes.HasPrefix(p, []byte("HTTP/1.")) || !bytes.Equal(p[8:12], []byte(" 101"))) {
			c.headers = false
		}
	}
	for i, b := range p[:n] {
		if !c.headers {
			break
		}
		switch {
		case b == "\r\n\r\n"[c.matched]:
			c.matched++
		case b == '\r':
			c.matched = 1
		default:
			c.matched = 0
		}
		if c.matched == 4 {
			c.headers = false
			p = p[:i+1]
			break
		}
	}
	p = p[:min(n, len(p))]
	if rerr := c.raw.Read(recv(0)); rerr != nil {
		return 0, rerr
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Close implements net.Conn; onClose runs first.
func (c *arrivalConn) Close() error {
	if f := c.onClose.Load(); f != nil {
		(*f)()
	}
	return c.TCPConn.Close()
}

// descriptor returns c's file descriptor. It stays c's until Close, which
// runs onClose first: that is what makes it safe to read outside
// RawConn's callbacks.
func (c *arrivalConn) descriptor() (int, error) {
	fd := -1
	if err := c.raw.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// recvmsg is RawConn.Read's callback; recv binds it once per connection,
// as a closure per read would be an allocation per frame under fan-out.
func (c *arrivalConn) recvmsg(fd uintptr) bool {
	for {
		c.n, c.oobn, _, _, c.err = syscall.Recvmsg(int(fd), c.p, c.oob[:], 0)
		if c.err != syscall.EINTR {
			return c.err != syscall.EAGAIN
		}
	}
}

// stampOf finds SCM_TIMESTAMPNS in a control message buffer, without the
// allocations of syscall.ParseSocketControlMessage; 0 if absent (the
// frames are then timed when read). It can be absent for a while after
// the first socket of the machine turns timestamps on: the kernel turns
// them on for its receive path a little later.
func stampOf(oob []byte) int64 {
	const hdr = syscall.SizeofCmsghdr // 64-bit (see the build line): len uint64, level int32, type int32
	for len(oob) >= hdr {
		size := int(binary.NativeEndian.Uint64(oob[0:8]))
		level := int32(binary.NativeEndian.Uint32(oob[8:12]))
		typ := int32(binary.NativeEndian.Uint32(oob[12:16]))
		if size < hdr || size > len(oob) {
			break
		}
		if level == syscall.SOL_SOCKET && typ == syscall.SCM_TIMESTAMPNS && size >= hdr+16 {
			sec := int64(binary.NativeEndian.Uint64(oob[hdr : hdr+8]))
			nsec := int64(binary.NativeEndian.Uint64(oob[hdr+8 : hdr+16]))
			return sec*1e9 + nsec
		}
		oob = oob[min(len(oob), (size+7)&^7):]
	}
	return 0
}

// arrivalOf returns when the data of c's last read arrived (unix ns), or 0
// for a connection without receive timestamps.
func arrivalOf(c net.Conn) int64 {
	if ac, ok := c.(*arrivalConn); ok {
		return ac.last
	}
	return 0
}
