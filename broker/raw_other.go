//go:build !linux

package broker

// Read implements net.Conn.
func (c *tcpConn) Read(p []byte) (int, error) { return c.TCPConn.Read(p) }

// writeNoWait leaves every write to the flusher goroutines where chatd
// has no raw non-blocking write (raw_linux.go).
func (o *outbox) writeNoWait(frames [][]byte) (rest [][]byte, err error) {
	return frames, nil
}
