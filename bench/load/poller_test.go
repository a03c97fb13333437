//go:build linux && (amd64 || arm64)

package load

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// fakeServer accepts one WebSocket client and lets the test write raw
// server frames to it, in whatever pieces it likes.
type fakeServer struct {
	ln   net.Listener
	conn chan net.Conn
}

func newFakeServer(t *testing.T) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &fakeServer{ln: ln, conn: make(chan net.Conn, 1)}
}

func (s *fakeServer) url() string { return "ws://" + s.ln.Addr().String() + "/ws" }

// accept answers the upgrade with first (frames) in the same write as the
// 101, so that they arrive together.
func (s *fakeServer) accept(t *testing.T, first []byte) net.Conn {
	c, err := s.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n"
	if _, err := c.Write(append([]byte(resp), first...)); err != nil {
		t.Fatal(err)
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

	msg := func(text string) []byte {
		return []byte(`{"type":"message","room":"general","seq":1,"id":"x","from":"u","text":"` + text + `","ts":1}`)
	}
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
	if _, err := srvB.Write(serverFrame(true, 1, []byte(`{"type":"message","room":"general","seq":1,"id":"x","from":"u","text":"still here","ts":1}`))); err != nil {
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
	e := <-closed
	if e.code != 4001 || a.ToldExpired().IsZero() || a.ToldExpired().Before(told) {
		t.Fatalf("closed %d, told expired at %v (sent at %v)", e.code, a.ToldExpired(), told)
	}
}

// A masked frame from the server breaks the protocol: the client closes
// with 1002 and reports the end.
func TestPollerProtocolError(t *testing.T) {
	s := newFakeServer(t)
	closed := make(chan closedEvent, 1)
	d := &Dialer{URL: s.url()}
	_, srv := dialPolled(t, s, d, &Events{Closed: func(_ *Conn, code uint16, at time.Time) { closed <- closedEvent{code, at} }})
	if _, err := srv.Write([]byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}); err != nil {
		t.Fatal(err)
	}
	if op, payload := readClientFrame(t, srv); op != 8 || binary.BigEndian.Uint16(payload) != 1002 {
		t.Fatalf("answer: opcode %x %q, want close 1002", op, payload)
	}
	select {
	case e := <-closed:
		if e.code != 0 {
			t.Fatalf("closed with code %d, want 0 (the server sent none)", e.code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Closed not called")
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
	if code := <-closed; code != 0 {
		t.Fatalf("dropped socket closed with %d, want 0", code)
	}
	b.Close()
	if op, _ := readClientFrame(t, srvB); op != 8 {
		t.Fatalf("client close: opcode %x", op)
	}
	if _, err := io.Copy(io.Discard, srvB); err != nil {
		t.Fatal(err)
	}
	if code := <-closed; code != 0 {
		t.Fatalf("socket closed by the client reported with %d, want 0", code)
	}
	d.poll.mu.Lock()
	n := len(d.poll.socks)
	d.poll.mu.Unlock()
	if n != 0 {
		t.Fatalf("the poller still reads %d sockets", n)
	}
}
