package broker

// An idle socket holds no goroutine where the platform allows it
// (park_linux.go, parker_linux.go). A goroutine parked in a read costs
// its stack, 4 KiB once it has handled a frame (Go never shrinks a stack
// in use below a quarter), plus its g: about half of what an idle socket
// cost chatd. So a socket's read loop runs only while there is something
// to read. When its reads find nothing at a frame boundary, the loop
// unwinds, and a parker (one epoll instance, watched by one goroutine)
// starts it again when bytes arrive, the read deadline passes or the
// connection closes.
//
// gws has no way to return from its read loop between frames, so the
// connection's Read unwinds it with a panic (idleSignal), which read
// recovers. That is safe because gws is then at a frame boundary with an
// empty reader, in the first read of a frame header: nothing of the new
// frame is read yet, what it keeps between frames (a fragmented message's
// parts) lives in its Conn, not on the stack, and nothing on the way
// (gws's frame parsing, bufio, io.ReadFull) defers anything.
// tcpConn knows where frames end because it sees every byte gws reads
// (frameTracker); gws's reader calls Read only once it is empty.

// idleSignal is the panic a parkable connection's Read raises when there
// is nothing to read at a frame boundary; p is the socket to park.
type idleSignal struct{ p *parking }

// read runs the socket's read loop on the calling goroutine until the
// socket closes (gws has then called OnClose) or is parked.
func (s *Session) read() {
	for {
		p := s.readUntilIdle()
		if p == nil || p.park() {
			return
		}
		// The parker is closed: read on, waiting as a plain read does.
	}
}

// resume starts a parked socket's read loop again, on a new goroutine. A
// socket chatd is closing waits for the end of the wheel's burst first
// (Wheel.AfterBurst): in an expiry burst its peer's answer would otherwise
// be torn down (a read, the descriptor's close, OnClose: several times the
// cost of a close frame) in every yield of the wheel, ahead of the sockets
// still to be told, which would wait for them all. It runs with the
// parking's lock held and never blocks.
func (s *Session) resume() {
	if s.closedCode.Load() != 0 && s.broker.wheel.AfterBurst(func() { go s.read() }) {
		return
	}
	go s.read()
}

// readUntilIdle runs gws's read loop, and returns the socket to park if it
// ended for want of something to read, nil if the socket closed.
// (ReadLoop calls OnOpen each time; chatd's does nothing.)
func (s *Session) readUntilIdle() (idle *parking) {
	defer func() {
		if v := recover(); v != nil {
			sig, ok := v.(idleSignal)
			if !ok {
				panic(v)
			}
			idle = sig.p
		}
	}()
	s.conn.ReadLoop()
	return nil
}

// frameTracker follows the WebSocket frames in the bytes read from a
// connection, to tell whether they end at a frame boundary. It reads only
// lengths (RFC 6455 5.2): gws checks everything else.
type frameTracker struct {
	head [10]byte // the current frame's header up to its length
	got  uint8    // header bytes read so far; 0 between frames
	left uint64   // the current frame's bytes after that: masking key, payload
}

// atBoundary reports whether the bytes fed so far end a frame (or no frame
// has begun).
func (t *frameTracker) atBoundary() bool { return t.got == 0 && t.left == 0 }

// feed follows b, the next bytes read.
func (t *frameTracker) feed(b []byte) {
	for len(b) > 0 {
		if t.got == 0 && t.left > 0 {
			k := min(uint64(len(b)), t.left)
			t.left -= k
			b = b[k:]
			continue
		}
		t.head[t.got] = b[0]
		t.got++
		b = b[1:]
		if t.got < 2 {
			continue
		}
		// Byte 1 holds the mask bit and a 7-bit length code: the length
		// itself, or 126 (a 16-bit length follows) or 127 (64-bit).
		code := t.head[1] & 0x7f
		var n uint64
		switch {
		case code < 126:
			n = uint64(code)
		case code == 126 && t.got == 4:
			n = uint64(t.head[2])<<8 | uint64(t.head[3])
		case code == 127 && t.got == 10:
			for _, c := range t.head[2:10] {
				n = n<<8 | uint64(c)
			}
		default:
			continue // the length is not all here yet
		}
		if t.head[1]&0x80 != 0 {
			n += 4 // the masking key
		}
		t.got, t.left = 0, n
	}
}
