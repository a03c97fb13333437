//go:build linux

package broker

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Read implements net.Conn. Each attempt is one non-blocking read(2) made
// with RawSyscall (see tcpConn); when there is nothing to read, RawConn
// parks the goroutine on the netpoller, honouring the read deadline, as
// net.TCPConn.Read does. A broker socket that may park, at a frame
// boundary, unwinds its read loop instead (park.go).
func (c *tcpConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r := rawReaders.Get().(*rawReader)
	r.p, r.park = p, c.park
	err := c.raw.Read(r.read)
	n, errno, idle := r.n, r.errno, r.idle
	r.p, r.n, r.errno, r.park, r.idle = nil, 0, 0, nil, false
	rawReaders.Put(r)
	switch {
	case idle:
		panic(idleSignal{c.park}) // see park.go: the read loop unwinds
	case n > 0 && c.park != nil:
		c.park.frames.feed(p[:n])
	case err != nil:
		if oe, ok := err.(*net.OpError); ok {
			oe.Op = "read" // not "raw-read": net/http tells common read errors by it
		}
		return 0, err
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", errno)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// rawReader holds one read's buffer and result, with the callback for
// RawConn.Read bound once, so that a read allocates nothing.
type rawReader struct {
	p     []byte
	park  *parking // the connection's, if it may park
	n     int
	errno syscall.Errno
	idle  bool // nothing to read, and the socket may park instead of waiting
	read  func(fd uintptr) bool
}

var rawReaders = sync.Pool{New: func() any {
	r := new(rawReader)
	r.read = r.readFD
	return r
}}

// readFD reads into r.p once, and reports false (wait, then call again)
// when there is nothing to read yet.
func (r *rawReader) readFD(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.p))), uintptr(len(r.p)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if r.park != nil && r.park.idle() {
				r.idle = true
				return true
			}
			return false
		case 0:
			r.n = int(n)
		}
		r.errno = e
		return true
	}
}

// writeNoWait writes as much of frames as the kernel takes at once and
// returns the rest, never waiting for the socket.
//
// It enters the kernel with RawSyscall: the socket is non-blocking, so the
// call cannot block, and the scheduler need not hear of it. A fan-out makes
// one such call per member, and the ordinary path costs the runtime's
// bookkeeping on either side of each, plus poll.FD's locks and a deadline.
//
// Control, not RawConn.Write: Write would refuse once the write deadline
// last set by a flusher has passed, and Control still holds the
// descriptor open while it is used. (The race detector does not see the
// kernel read these buffers; frames are immutable once queued.) The caller
// owns the connection's writes (its outbox is marked flushing), so nothing
// else writes to it meanwhile.
func (o *outbox) writeNoWait(frames [][]byte) (rest [][]byte, err error) {
	if o.raw == nil {
		return frames, nil // not a socket: the flusher writes it
	}
	w := rawWriters.Get().(*rawWriter)
	w.frames = frames
	err = o.raw.Control(w.write)
	rest, errno := w.frames, w.errno
	w.frames, w.errno = nil, 0
	rawWriters.Put(w)
	switch {
	case err != nil:
		return nil, err
	case errno == syscall.EAGAIN:
		return rest, nil
	case errno != 0:
		return nil, os.NewSyscallError("write", errno)
	}
	return rest, nil
}

// rawWriter holds one non-blocking write's arguments and results, with the
// callback for RawConn.Control bound once, so that a write allocates
// nothing (unless the kernel cuts a frame short).
type rawWriter struct {
	frames [][]byte
	errno  syscall.Errno
	iov    [64]syscall.Iovec
	write  func(fd uintptr)
}

var rawWriters = sync.Pool{New: func() any {
	w := new(rawWriter)
	w.write = w.writeFD
	return w
}}

// writeFD writes w.frames to fd until the kernel takes no more, leaving
// what it did not take in w.frames and the error that stopped it in
// w.errno.
func (w *rawWriter) writeFD(fd uintptr) {
	for len(w.frames) > 0 {
		var n uintptr
		var e syscall.Errno
		if len(w.frames) == 1 {
			b := w.frames[0]
			n, _, e = syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
		} else {
			m := min(len(w.frames), len(w.iov))
			for i, b := range w.frames[:m] {
				w.iov[i].Base = unsafe.SliceData(b)
				w.iov[i].SetLen(len(b))
			}
			n, _, e = syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(m))
			clear(w.iov[:m]) // keep no frame alive in the pool
		}
		switch e {
		case 0:
			w.frames = skipBytes(w.frames, int(n))
		case syscall.EINTR:
		default:
			w.errno = e
			return
		}
	}
}
