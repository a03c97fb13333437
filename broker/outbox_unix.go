//go:build unix

package broker

import (
	"bytes"
	"syscall"
)

// writeNoWait makes one attempt to write frames and returns what the
// kernel did not take, never waiting for the socket to become writable.
func (o *outbox) writeNoWait(frames [][]byte) (rest []byte, err error) {
	buf := bytes.Join(frames, nil)
	sc, ok := o.conn.(syscall.Conn)
	if !ok {
		return buf, nil // the flusher writes it
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	// Control, not Write: RawConn.Write would refuse once the write
	// deadline last set by the flusher has passed, and it is not moved
	// here (that costs a timer update per socket). The caller owns the
	// connection's writes: its outbox is marked flushing, and gws's own
	// writes are dropped once the close is under way (sockConn).
	n := 0
	var werr error
	err = raw.Control(func(fd uintptr) {
		n, werr = syscall.Write(int(fd), buf)
	})
	switch {
	case err != nil:
		return nil, err
	case werr == syscall.EAGAIN || werr == syscall.EINTR:
		return buf, nil
	case werr != nil:
		return nil, werr
	}
	return buf[n:], nil
}
