package broker

import (
	"net"
	"syscall"
)

// tcpConn is an accepted TCP connection whose reads, like the outbox's
// writes, enter the kernel without the Go scheduler's bookkeeping where
// the platform allows it (raw_linux.go).
//
// That bookkeeping has a cost beyond its own: while every P is idle the
// runtime's monitor thread, sysmon, sleeps, and the next ordinary syscall
// wakes it; it then polls every 20 µs for a millisecond or more. On a
// server with one core each poll preempts the thread doing the work. A
// room paced at 100 messages a second woke sysmon on every message: 2,400
// wakeups a second, 6% of the core and 10,000 preemptions of the worker
// in 8 s, and the slowest deliveries paid for them (BENCHMARKS.md).
type tcpConn struct {
	*net.TCPConn
	raw  syscall.RawConn
	park *parking // set once a broker socket runs on it, if it may park (park.go)
}

// newTCPConn wraps c, or returns it as it is if it has no descriptor.
func newTCPConn(c *net.TCPConn) net.Conn {
	raw, err := c.SyscallConn()
	if err != nil {
		return c
	}
	return &tcpConn{TCPConn: c, raw: raw}
}

// SyscallConn implements syscall.Conn with the one RawConn made at
// accept (net makes a new one each call).
func (c *tcpConn) SyscallConn() (syscall.RawConn, error) { return c.raw, nil }
