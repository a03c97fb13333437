//go:build linux && (amd64 || arm64)

package load

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/lxzan/gws"
)

// poller reads the sockets of a Dialer from one goroutine. It keeps an
// epoll instance of its own, level-triggered: each socket with data is
// read once per round with recvmsg (keeping the kernel's receive
// timestamp, as arrivalConn does) and its frames are parsed here.
//
// A read loop per socket costs, on every wake-up of the socket, a
// goroutine switch, the read, and a second read that only says EAGAIN
// before the goroutine parks again: under fan-out, chatbench's core was
// the limit, with a third of its samples in those syscalls. Here a round
// of epoll_wait finds every socket with data, one read each takes what is
// there, and a socket with more left is simply reported again.
//
// A read takes what the socket holds, up to 64 KiB, and TCP's receive
// timestamp is that of the last segment it took: frames that arrived
// earlier in the same read count as arriving with the last. Under a
// backlog the arrival clock errs late, against the server, never for it.
//
// The epoll descriptor itself waits in Go's network poller (it is
// readable while any socket in it is), so the goroutine parks like any
// other and never holds the process's processor in a blocking syscall.
//
// Writes (a sender's messages, pongs, the close) stay gws's, and none is
// made on the poller's goroutine: a write can wait (for a full socket, or
// for a sender's write holding the socket's lock), and every socket would
// wait with it.
type poller struct {
	epoll *os.File // held: its finalizer would close the descriptor
	raw   syscall.RawConn
	epfd  int
	wait  func(fd uintptr) bool // p.round, bound once

	// mu guards socks, and is held across each read so that a socket's
	// descriptor cannot be closed (and its number reused) in between:
	// arrivalConn.Close takes it first, through forget.
	mu    sync.Mutex
	socks map[int32]*polled
	gen   uint32
	dead  error // why run stopped; add then refuses

	// Only the poller's goroutine touches these.
	events   [256]syscall.EpollEvent
	buf      [64 << 10]byte
	oob      [64]byte
	lastData time.Time // the last round that found data
}

// polled is one socket the poller reads, with what it has of a frame.
type polled struct {
	c    *Conn
	fd   int32
	gen  uint32 // tells a reused descriptor number from this socket
	rest []byte // the start of a frame not yet complete
	msg  []byte // a fragmented message's earlier fragments
	op   byte   // the fragmented message's opcode
}

// maxFrame bounds a frame the poller accepts, as gws's ReadMaxPayloadSize
// does for a read loop: chatd's largest (a history page) is far below.
const maxFrame = 16 << 20

// newPoller starts a poller.
func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile hands it to Go's network poller.
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &poller{epoll: f, raw: raw, epfd: epfd, socks: map[int32]*polled{}}
	p.wait = p.round
	go p.run()
	return p, nil
}

// add makes the poller read c, whose handshake is done and whose read
// buffer holds nothing: the welcome is still in the socket.
func (p *poller) add(c *Conn) error {
	ac, ok := c.ws.NetConn().(*arrivalConn)
	if !ok {
		return errors.New("not an arrivalConn")
	}
	fd, err := ac.descriptor()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead != nil {
		return p.dead
	}
	p.gen++
	s := &polled{c: c, fd: int32(fd), gen: p.gen}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: s.fd, Pad: int32(s.gen)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	p.socks[s.fd] = s
	// Closed by anyone but the poller (Conn.Close or Abort, a failed
	// write): stop reading it, and report the end as its read loop would
	// have, from a goroutine of its own as a read loop is one.
	forget := func() {
		if p.forget(s) {
			at := time.Now()
			go c.ended(0, at)
		}
	}
	ac.onClose.Store(&forget)
	return nil
}

// forget stops reading s: its descriptor is about to be closed. It
// reports whether s was still being read.
func (p *poller) forget(s *polled) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.socks[s.fd] != s {
		return false
	}
	delete(p.socks, s.fd)
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(s.fd), nil)
	return true
}

// run reads rounds of ready sockets for as long as the process lives.
// Should the epoll descriptor fail, later dials get read loops.
func (p *poller) run() {
	for {
		if err := p.raw.Read(p.wait); err != nil {
			p.mu.Lock()
			p.dead = fmt.Errorf("poller stopped: %w", err)
			p.mu.Unlock()
			return
		}
		// Let the senders and timers made runnable by this round go
		// before the next.
		runtime.Gosched()
	}
}

// spinBeforePark is how long the poller keeps looking for data after a
// round that found some, before it parks.
//
// A parked client lets its vCPU halt, and over loopback on a VM each of
// the server's writes to a halted client must wake it: an IPI, and a VM
// exit on the server's core, at the host's pace. Real clients are on
// other machines, where the server's writes wake no vCPU of its own.
// Interleaved paced runs (100 msg/s into 1,000 sockets) without guest halt
// polling: p99 median 31.2 ms parking at once, 9.0 ms after 1 ms of this,
// 9.9 ms after 10 ms; and less steal on the server's core.
const spinBeforePark = time.Millisecond

// round is the epoll descriptor's RawConn.Read callback: it takes the
// sockets ready now and reads each once. With none ready (for
// spinBeforePark after the last data) it reports false, and the goroutine
// parks until the epoll descriptor is readable again.
func (p *poller) round(fd uintptr) bool {
	n := p.ready(fd)
	for n <= 0 && time.Since(p.lastData) < spinBeforePark {
		runtime.Gosched() // the senders and timers go first
		n = p.ready(fd)
	}
	if n <= 0 {
		return false
	}
	for _, ev := range p.events[:n] {
		p.read(ev.Fd, uint32(ev.Pad))
	}
	p.lastData = time.Now()
	return true
}

// ready fills p.events with the sockets ready now and returns how many.
func (p *poller) ready(fd uintptr) int {
	for {
		n, err := syscall.EpollWait(int(fd), p.events[:], 0)
		if err != syscall.EINTR {
			return n
		}
	}
}

// read reads the socket registered as fd (if it still is, as gen) once,
// and handles the frames that are complete.
func (p *poller) read(fd int32, gen uint32) {
	p.mu.Lock()
	s := p.socks[fd]
	if s == nil || s.gen != gen {
		p.mu.Unlock()
		return
	}
	var n, oobn int
	var err error
	for {
		n, oobn, _, _, err = syscall.Recvmsg(int(fd), p.buf[:], p.oob[:], 0)
		if err != syscall.EINTR {
			break
		}
	}
	p.mu.Unlock()
	switch {
	case err == syscall.EAGAIN:
		return
	case err != nil || n == 0:
		// Gone without a close frame, as a read loop would see it.
		p.forget(s)
		s.c.Abort()
		s.c.ended(0, time.Now())
		return
	}
	arrived := stampOf(p.oob[:oobn])
	data := p.buf[:n]
	// A frame begun in an earlier read is completed from data first, so
	// s.rest never holds more than that one frame.
	for len(s.rest) > 0 && len(data) > 0 {
		need := missing(s.rest)
		k := min(need, len(data))
		s.rest = append(slices.Grow(s.rest, need), data[:k]...) // sized once
		data = data[k:]
		if missing(s.rest) > 0 {
			continue // the header is whole now, and says how much more
		}
		if _, ok := p.frames(s, s.rest, arrived); !ok {
			s.rest = nil
			return
		}
		s.rest = s.rest[:0]
	}
	if len(s.rest) > 0 {
		return // still incomplete
	}
	used, ok := p.frames(s, data, arrived)
	if !ok {
		s.rest = nil
		return
	}
	if cap(s.rest) > keepRest {
		s.rest = nil // a rare large frame's buffer is not kept for the socket's life
	}
	if left := data[used:]; len(left) > 0 {
		s.rest = append(s.rest[:0], left...)
	}
}

// keepRest is the largest buffer for incomplete frames a socket keeps
// between frames.
const keepRest = 4 << 10

// header reads the frame header at the start of b: its length and the
// payload's, once b holds all of it (complete).
func header(b []byte) (head int, size uint64, complete bool) {
	if len(b) < 2 {
		return 0, 0, false
	}
	switch size = uint64(b[1] & 0x7f); size {
	case 126:
		if len(b) < 4 {
			return 0, 0, false
		}
		return 4, uint64(binary.BigEndian.Uint16(b[2:])), true
	case 127:
		if len(b) < 10 {
			return 0, 0, false
		}
		return 10, binary.BigEndian.Uint64(b[2:]), true
	}
	return 2, size, true
}

// missing returns how many more bytes b, the start of a frame, needs to
// be whole (enough to complete its header, first). It is 0 once b is
// whole, and once its header shows a frame that frames will refuse.
func missing(b []byte) int {
	head, size, complete := header(b)
	switch {
	case !complete && len(b) < 2:
		return 2 - len(b)
	case !complete && b[1]&0x7f == 126:
		return 4 - len(b)
	case !complete:
		return 10 - len(b)
	case b[1]&0x80 != 0 || size > maxFrame:
		return 0
	}
	return max(head+int(size)-len(b), 0)
}

// frames handles the complete frames at the start of data and returns how
// many bytes they took; ok is false once the socket has ended.
func (p *poller) frames(s *polled, data []byte, arrived int64) (used int, ok bool) {
	for {
		b := data[used:]
		head, size, complete := header(b)
		if !complete {
			return used, true
		}
		if b[1]&0x80 != 0 {
			return used, p.fail(s, 1002) // a server never masks
		}
		if size > maxFrame {
			return used, p.fail(s, 1009)
		}
		if uint64(len(b)-head) < size {
			return used, true
		}
		payload := b[head : head+int(size)]
		used += head + int(size)
		if !p.frame(s, b[0], payload, arrived) {
			return used, false
		}
	}
}

// frame handles one frame; it reports false once the socket has ended.
func (p *poller) frame(s *polled, b0 byte, payload []byte, arrived int64) bool {
	fin, op := b0&0x80 != 0, b0&0x0f
	if b0&0x70 != 0 {
		return p.fail(s, 1002) // no extension was agreed
	}
	if op >= 0x8 && (!fin || len(payload) > 125) {
		return p.fail(s, 1002) // control frames are whole and short
	}
	switch op {
	case 0x1, 0x2: // text, binary
		if len(s.msg) > 0 || s.op != 0 {
			return p.fail(s, 1002) // a new message inside a fragmented one
		}
		if !fin {
			s.op, s.msg = op, append(s.msg[:0], payload...)
			return true
		}
		s.c.handleText(payload, arrived)
	case 0x0: // continuation
		if s.op == 0 {
			return p.fail(s, 1002)
		}
		s.msg = append(s.msg, payload...)
		if len(s.msg) > maxFrame {
			return p.fail(s, 1009)
		}
		if fin {
			s.c.handleText(s.msg, arrived)
			s.op, s.msg = 0, s.msg[:0]
		}
	case 0x8: // close
		p.closed(s, payload)
		return false
	case 0x9: // ping
		s.c.ws.WriteAsync(gws.OpcodePong, bytes.Clone(payload), nil)
	case 0xA: // pong
	default:
		return p.fail(s, 1002)
	}
	return true
}

// closed answers the server's close frame with closeReply's code, and
// reports the end with the server's. A socket lingering after
// token_expired answers when its linger is over, as a read loop parked
// for it would.
func (p *poller) closed(s *polled, payload []byte) {
	code, reply := closeReply(payload)
	p.end(s, reply, code, s.c.lingerLeft())
}

// end stops reading s and, off the poller's goroutine after wait, writes
// a close frame of reply, which closes the connection, and reports the
// end with code.
func (p *poller) end(s *polled, reply, code uint16, wait time.Duration) {
	p.forget(s)
	c := s.c
	answer := func() {
		_ = c.ws.WriteClose(reply, nil)
		c.ended(code, time.Now())
	}
	if wait > 0 {
		time.AfterFunc(wait, answer)
		return
	}
	go answer()
}

// closeReply returns the code of a close frame's payload (0 if none) and
// the code to answer with, as gws's read loop chooses it: the
// application's codes (3000-4999) echoed, the other valid ones answered
// with 1000, invalid ones with 1002 (protocol error). An empty close is
// answered with 1000 (gws answers with an empty one).
func closeReply(payload []byte) (code, reply uint16) {
	switch len(payload) {
	case 0:
		return 0, 1000
	case 1:
		return uint16(payload[0]), 1002
	}
	code = binary.BigEndian.Uint16(payload)
	switch {
	case code >= 3000 && code < 5000:
		return code, code
	case code < 1000 || code > 1015 || code == 1004 || code == 1005 || code == 1006 || code == 1014 || code == 1015:
		return code, 1002
	}
	return code, 1000
}

// fail ends a socket that broke the protocol with a close frame of code;
// the end is reported with none (the server sent none).
func (p *poller) fail(s *polled, code uint16) bool {
	p.end(s, code, 0, 0)
	return false
}
