//go:build linux && (amd64 || arm64)

package load

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// fakeServer accepts WebSocket clients and lets the test write raw server
// frames to them, in whatever pieces it likes.
type fakeServer struct {
	ln net.Listener
}

func newFakeServer(t *testing.T) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &fakeServer{ln: ln}
}

func (s *fakeServer) url() string { return "ws://" + s.ln.Addr().String() + "/ws" }

// accept answers the upgrade with first (frames) in the same write as the
// 101, so that they arrive together. It runs beside the Dial, so it
// reports a failure with t.Error (the Dial then fails too) and returns nil.
func (s *fakeServer) accept(t *testing.T, first []byte) net.Conn {
	c, err := s.ln.Accept()
	if err != nil {
		t.Error(err)
		return nil
	}
	t.Cleanup(func() { c.Close() })
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		t.Error(err)
		return nil
	}
	sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n"
	if _, err := c.Write(append([]byte(resp), first...)); err != nil {
		t.Error(err)
		return nil
	}
	return c
}

// serverFrame encodes an unmasked frame.
func serverFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var f []byte
	switch n := len(payload); {
	case n < 126:
		f = []byte{b0, byte(n)}
	case n <= 0xffff:
		f = binary.BigEndian.AppendUint16([]byte{b0, 126}, uint16(n))
	default:
		f = binary.BigEndian.AppendUint64([]byte{b0, 127}, uint64(n))
	}
	return append(f, payload...)
}

// messageJSON is a chat message as chatd sends it, with text.
func messageJSON(text string) []byte {
	return []byte(`{"type":"message","room":"general","seq":1,"id":"x","from":"u","text":"` + text + `","ts":1}`)
}

// messageFrame is messageJSON in one frame.
func messageFrame(text string) []byte { return serverFrame(true, 1, messageJSON(text)) }

// readClientFrame reads one masked client frame.
func readClientFrame(t *testing.T, r io.Reader) (op byte, payload []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatal(err)
	}
	if h[1]&0x80 == 0 {
		t.Fatal("client frame not masked")
	}
	n := int(h[1] & 0x7f)
	if n >= 126 {
		t.Fatalf("unexpected long client frame (%d)", n)
	}
	var mask [4]byte
	if _, err := io.ReadFull(r, mask[:]); err != nil {
		t.Fatal(err)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		t.Fatal(err)
	}
	for i := range payload {
		payload[i] ^= mask[i%4]
	}
	return h[0] & 0x0f, payload
}

// waitFor receives from ch, or fails the test after 5 s.
func waitFor[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("timed out")
		panic("unreachable")
	}
}

type closedEvent struct {
	code uint16
	at   time.Time
}

// dialPolled dials s with a poller, the welcome arriving with the 101.
func dialPolled(t *testing.T, s *fakeServer, d *Dialer, ev *Events) (*Conn, net.Conn) {
	t.Helper()
	welcome := serverFrame(true, 1, []byte(`{"type":"welcome","user":"u","session":"s","exp":1893456000,"rooms":["general"]}`))
	srv := make(chan net.Conn, 1)
	go func() { srv <- s.accept(t, welcome) }()
	c, err := d.Dial("token", 7, 0, ev)
	if err != nil {
		t.Fatal(err)
	}
	if c.Exp != 1893456000 {
		t.Fatalf("exp %d from the welcome", c.Exp)
	}
	return c, <-srv
}

// The poller reads what a read loop would: frames cut anywhere, long
// lengths, fragmented messages, pings answered, and the server's close
// echoed and reported; the welcome that arrives in the same segment as
// the 101 is not lost to gws's handshake buffer.
func TestPollerFrames(t *testing.T) {
	s := newFakeServer(t)
	texts := make(chan string, 10)
	closed := make(chan closedEvent, 1)
	ev := &Events{
		Message: func(_ *Conn, text []byte, _ time.Time) { texts <- string(text) },
		Frame: func(_ *Conn, typ string, _ []byte) {
			texts <- "frame:" + typ
		},
		Closed: func(_ *Conn, code uint16, at time.Time) { closed <- closedEvent{code, at} },
	}
	d := &Dialer{URL: s.url()}
	c, srv := dialPolled(t, s, d, ev)
	if d.poll == nil {
		t.Fatal("no poller on 64-bit Linux")
	}

	msg := messageJSON
	long := strings.Repeat("y", 300) // a 16-bit length
	var stream []byte
	stream = append(stream, serverFrame(true, 1, msg("one"))...)
	stream = append(stream, serverFrame(true, 1, msg(long))...)
	whole := msg("frag")
	stream = append(stream, serverFrame(false, 1, whole[:10])...)
	stream = append(stream, serverFrame(true, 9, []byte("ping!"))...) // control frames may come between fragments
	stream = append(stream, serverFrame(false, 0, whole[10:20])...)
	stream = append(stream, serverFrame(true, 0, whole[20:])...)
	stream = append(stream, serverFrame(true, 1, []byte(`{"type":"ack","id":"1","room":"general","seq":2}`))...)
	// Written in pieces of 1, 2, 3... bytes, so frames and headers are cut
	// everywhere.
	go func() {
		for i, n := 0, 1; i < len(stream); i, n = i+n, n%7+1 {
			if _, err := srv.Write(stream[i:min(i+n, len(stream))]); err != nil {
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	for _, want := range []string{"one", long, "frag", "frame:ack"} {
		select {
		case got := <-texts:
			if got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %q", want)
		}
	}
	if op, payload := readClientFrame(t, srv); op != 0xA || string(payload) != "ping!" {
		t.Fatalf("answer to the ping: opcode %x %q, want a pong with its payload", op, payload)
	}

	// The close: echoed with its code, then reported once.
	close4001 := serverFrame(true, 8, binary.BigEndian.AppendUint16(nil, 4001))
	if _, err := srv.Write(close4001); err != nil {
		t.Fatal(err)
	}
	if op, payload := readClientFrame(t, srv); op != 8 || binary.BigEndian.Uint16(payload) != 4001 {
		t.Fatalf("answer to the close: opcode %x %q, want close 4001", op, payload)
	}
	select {
	case e := <-closed:
		if e.code != 4001 {
			t.Fatalf("closed with code %d, want 4001", e.code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Closed not called")
	}
	if !c.Closed() {
		t.Fatal("Conn not closed")
	}
	if _, err := srv.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the close the client's end is still open: %v", err)
	}
	d.poll.mu.Lock()
	defer d.poll.mu.Unlock()
	if len(d.poll.socks) != 0 {
		t.Fatalf("the poller still reads %d sockets", len(d.poll.socks))
	}
}

// A socket told its token expired answers the close only after
// LingerExpired, and the poller reads other sockets meanwhile.
func TestPollerLinger(t *testing.T) {
	s := newFakeServer(t)
	closed := make(chan closedEvent, 2)
	texts := make(chan string, 1)
	ev := &Events{
		Message: func(_ *Conn, text []byte, _ time.Time) { texts <- string(text) },
		Closed:  func(_ *Conn, code uint16, at time.Time) { closed <- closedEvent{code, at} },
	}
	const linger = 300 * time.Millisecond
	d := &Dialer{URL: s.url(), LingerExpired: linger}
	a, srvA := dialPolled(t, s, d, ev)
	_, srvB := dialPolled(t, s, d, ev)

	told := time.Now()
	var expire []byte
	expire = append(expire, serverFrame(true, 1, []byte(`{"type":"error","code":"token_expired","message":"Your token is no longer valid. Please reauthenticate."}`))...)
	expire = append(expire, serverFrame(true, 8, binary.BigEndian.AppendUint16(nil, 4001))...)
	if _, err := srvA.Write(expire); err != nil {
		t.Fatal(err)
	}
	if _, err := srvB.Write(messageFrame("still here")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-texts:
		if got != "still here" || time.Since(told) > linger/2 {
			t.Fatalf("the other socket read %q after %v", got, time.Since(told))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the other socket was not read")
	}
	if op, payload := readClientFrame(t, srvA); op != 8 || binary.BigEndian.Uint16(payload) != 4001 {
		t.Fatalf("answer to the close: opcode %x %q", op, payload)
	}
	if waited := time.Since(told); waited < linger {
		t.Fatalf("close answered after %v, before the linger of %v", waited, linger)
	}
	e := waitFor(t, closed)
	if e.code != 4001 || a.ToldExpired().IsZero() || a.ToldExpired().Before(told) {
		t.Fatalf("closed %d, told expired at %v (sent at %v)", e.code, a.ToldExpired(), told)
	}
}

// Frames that break the protocol: the client closes with the code that
// says why and reports the end (with no code: the server sent none).
func TestPollerProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		code  uint16
	}{
		{"masked", []byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}, 1002},
		{"reserved bit", []byte{0xC1, 0x02, 'h', 'i'}, 1002},
		{"fragmented ping", serverFrame(false, 9, []byte("p")), 1002},
		{"long ping", serverFrame(true, 9, make([]byte, 126)), 1002},
		{"unknown opcode", serverFrame(true, 3, nil), 1002},
		{"lone continuation", serverFrame(true, 0, []byte("x")), 1002},
		{"too large", binary.BigEndian.AppendUint64([]byte{0x81, 127}, maxFrame+1), 1009},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeServer(t)
			closed := make(chan closedEvent, 1)
			d := &Dialer{URL: s.url()}
			_, srv := dialPolled(t, s, d, &Events{Closed: func(_ *Conn, code uint16, at time.Time) { closed <- closedEvent{code, at} }})
			if _, err := srv.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			if op, payload := readClientFrame(t, srv); op != 8 || binary.BigEndian.Uint16(payload) != tc.code {
				t.Fatalf("answer: opcode %x %q, want close %d", op, payload, tc.code)
			}
			if e := waitFor(t, closed); e.code != 0 {
				t.Fatalf("closed with code %d, want 0 (the server sent none)", e.code)
			}
		})
	}
}

// A 64-bit length is read, and a frame may take many reads.
func TestPollerLongFrame(t *testing.T) {
	s := newFakeServer(t)
	texts := make(chan string, 1)
	d := &Dialer{URL: s.url()}
	_, srv := dialPolled(t, s, d, &Events{Message: func(_ *Conn, text []byte, _ time.Time) { texts <- string(text) }})
	long := strings.Repeat("z", 200_000)
	f := messageFrame(long)
	if f[1] != 127 {
		t.Fatalf("not a 64-bit length: %x", f[:2])
	}
	if _, err := srv.Write(f); err != nil {
		t.Fatal(err)
	}
	if got := waitFor(t, texts); got != long {
		t.Fatalf("got %d bytes, want %d", len(got), len(long))
	}
}

// A refused handshake still reports the error code of its JSON body: the
// reads stop at the end of the headers only for a 101.
func TestPollerRefusedHandshake(t *testing.T) {
	s := newFakeServer(t)
	go func() {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		body := `{"error":"invalid_token","message":"the token is not valid"}`
		_, _ = c.Write([]byte("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: " +
			strconv.Itoa(len(body)) + "\r\n\r\n" + body))
		_, _ = io.Copy(io.Discard, c)
	}()
	_, err := (&Dialer{URL: s.url()}).Dial("token", 0, 0, nil)
	var se *ErrStatus
	if !errors.As(err, &se) || se.Status != 401 || se.Code != "invalid_token" {
		t.Fatalf("dial: %v, want 401 invalid_token", err)
	}
}

// A socket whose writes are stuck (the server reads nothing from it) holds
// up no other: its pong is written off the poller's goroutine.
func TestPollerStuckWriter(t *testing.T) {
	s := newFakeServer(t)
	texts := make(chan string, 1)
	d := &Dialer{URL: s.url()}
	ev := &Events{Message: func(_ *Conn, text []byte, _ time.Time) { texts <- string(text) }}
	a, srvA := dialPolled(t, s, d, ev)
	_, srvB := dialPolled(t, s, d, ev)
	// A write far larger than the socket's buffers, which the server never
	// reads: it holds A's write lock for good. Once its first bytes are in
	// the send queue, it has the lock.
	ac := a.ws.NetConn().(*arrivalConn)
	if err := ac.SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.Write(make([]byte, 1<<20)) }()
	for deadline := time.Now().Add(5 * time.Second); sendQueue(t, ac) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the write never started")
		}
	}
	if _, err := srvA.Write(serverFrame(true, 9, []byte("ping"))); err != nil {
		t.Fatal(err)
	}
	if _, err := srvB.Write(messageFrame("for B")); err != nil {
		t.Fatal(err)
	}
	if got := waitFor(t, texts); got != "for B" {
		t.Fatalf("B got %q", got)
	}
	a.Abort()
}

// sendQueue returns the bytes in c's send queue not yet acknowledged.
func sendQueue(t *testing.T, c *arrivalConn) int {
	var n int32
	var errno syscall.Errno
	if err := c.raw.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
	}); err != nil || errno != 0 {
		t.Fatalf("SIOCOUTQ: %v %v", err, errno)
	}
	return int(n)
}

// A Dial that gives up on the welcome while the poller is handling it
// leaves the poller reading the other sockets: the welcome is not waited
// for any more, and is dropped.
func TestPollerDialGivesUp(t *testing.T) {
	s := newFakeServer(t)
	texts := make(chan string, 2)
	ev := &Events{Message: func(_ *Conn, text []byte, _ time.Time) {
		if string(text) == "slow" {
			time.Sleep(300 * time.Millisecond) // past the Dial's timeout
			return
		}
		texts <- string(text)
	}}
	d := &Dialer{URL: s.url()}
	_, srvB := dialPolled(t, s, d, ev)

	d.Timeout = 100 * time.Millisecond
	msg := messageFrame
	// A message the poller takes 300 ms over, and behind it the welcome.
	first := append(msg("slow"), serverFrame(true, 1, []byte(`{"type":"welcome","exp":1893456000}`))...)
	go s.accept(t, first)
	if _, err := d.Dial("token", 8, 0, ev); err == nil {
		t.Fatal("the dial did not give up")
	}
	if _, err := srvB.Write(msg("for B")); err != nil {
		t.Fatal(err)
	}
	if got := waitFor(t, texts); got != "for B" {
		t.Fatalf("B got %q", got)
	}
}

// A socket the server drops without a close frame is reported closed
// with no code, and one the client closes itself stops being read.
func TestPollerEOFAndClientClose(t *testing.T) {
	s := newFakeServer(t)
	closed := make(chan uint16, 2)
	d := &Dialer{URL: s.url()}
	ev := &Events{Closed: func(_ *Conn, code uint16, _ time.Time) { closed <- code }}
	_, srvA := dialPolled(t, s, d, ev)
	b, srvB := dialPolled(t, s, d, ev)

	srvA.Close()
	if code := waitFor(t, closed); code != 0 {
		t.Fatalf("dropped socket closed with %d, want 0", code)
	}
	b.Close()
	if op, _ := readClientFrame(t, srvB); op != 8 {
		t.Fatalf("client close: opcode %x", op)
	}
	if _, err := io.Copy(io.Discard, srvB); err != nil {
		t.Fatal(err)
	}
	if code := waitFor(t, closed); code != 0 {
		t.Fatalf("socket closed by the client reported with %d, want 0", code)
	}
	d.poll.mu.Lock()
	n := len(d.poll.socks)
	d.poll.mu.Unlock()
	if n != 0 {
		t.Fatalf("the poller still reads %d sockets", n)
	}
}
