//go:build linux && (amd64 || arm64)

package load

import (
	"encoding/binary"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// The server's close codes are answered as gws answers them.
func TestCloseReply(t *testing.T) {
	for _, tc := range []struct {
		payload     []byte
		code, reply uint16
	}{
		{nil, 0, 1000},
		{[]byte{3}, 3, 1002},
		{binary.BigEndian.AppendUint16(nil, 1000), 1000, 1000},
		{binary.BigEndian.AppendUint16(nil, 1001), 1001, 1000},
		{binary.BigEndian.AppendUint16(nil, 1005), 1005, 1002},
		{binary.BigEndian.AppendUint16(nil, 2000), 2000, 1002},
		{binary.BigEndian.AppendUint16(nil, 4001), 4001, 4001},
		{binary.BigEndian.AppendUint16(nil, 5000), 5000, 1002},
	} {
		if code, reply := closeReply(tc.payload); code != tc.code || reply != tc.reply {
			t.Errorf("closeReply(%v) = %d, %d; want %d, %d", tc.payload, code, reply, tc.code, tc.reply)
		}
	}
}

// missing says how many more bytes complete a frame's header, then the
// frame; 0 for a frame that is whole or that frames will refuse.
func TestMissing(t *testing.T) {
	long := serverFrame(true, 1, make([]byte, 300))    // 16-bit length
	huge := serverFrame(true, 1, make([]byte, 70_000)) // 64-bit length
	for _, tc := range []struct {
		b    []byte
		want int
	}{
		{nil, 2},
		{[]byte{0x81}, 1},
		{[]byte{0x81, 5}, 5},
		{[]byte{0x81, 5, 'a', 'b'}, 3},
		{serverFrame(true, 1, []byte("hello")), 0},
		{long[:3], 1},
		{long[:4], 300},
		{long[:100], 204},
		{huge[:2], 8},
		{huge[:10], 70_000},
		{[]byte{0x81, 0x85}, 0},        // masked: refused
		{[]byte{0x81, 0xFE}, 2},        // masked, but its length comes first
		{huge[:5], 5},                  // a 64-bit length half read
		{serverFrame(true, 1, nil), 0}, // empty
		{binary.BigEndian.AppendUint64([]byte{0x81, 127}, maxFrame+1), 0}, // too large: refused
	} {
		if got := missing(tc.b); got != tc.want {
			t.Errorf("missing(% x...) = %d, want %d", tc.b[:min(len(tc.b), 4)], got, tc.want)
		}
	}
}

// pairHarness feeds one poller socket from the other end of a socket
// pair and reads it by hand (p.read), so that every read ends exactly
// where the test says. The socket's Conn is a real one, dialled to a fake
// server, so that its answers (pongs, closes) can be written.
type pairHarness struct {
	t      *testing.T
	p      *poller
	s      *polled
	peer   int // the end the test writes
	texts  []string
	closed chan uint16
}

func newPairHarness(t *testing.T) *pairHarness {
	h := &pairHarness{t: t, closed: make(chan uint16, 1)}
	srv := newFakeServer(t)
	d := &Dialer{URL: srv.url()}
	c, _ := dialPolled(t, srv, d, &Events{
		Message: func(_ *Conn, text []byte, _ time.Time) { h.texts = append(h.texts, string(text)) },
		Closed:  func(_ *Conn, code uint16, _ time.Time) { h.closed <- code },
	})
	// The Dialer's poller lets go of it (as it would of a socket it
	// closes itself), so that only the harness reports its end.
	d.poll.mu.Lock()
	var mine *polled
	for _, s := range d.poll.socks {
		mine = s
	}
	d.poll.mu.Unlock()
	d.poll.forget(mine)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fds[0]); syscall.Close(fds[1]) })
	h.peer = fds[1]
	h.s = &polled{c: c, fd: int32(fds[0]), gen: 1}
	h.p = &poller{socks: map[int32]*polled{h.s.fd: h.s}}
	return h
}

// feed writes b to the socket and reads it until it is empty or no
// longer read.
func (h *pairHarness) feed(b []byte) {
	h.t.Helper()
	for len(b) > 0 {
		n, err := syscall.Write(h.peer, b)
		if err != nil {
			h.t.Fatal(err)
		}
		b = b[n:]
	}
	for h.p.socks[h.s.fd] == h.s && h.queued() > 0 {
		h.p.read(h.s.fd, h.s.gen)
	}
}

// queued returns the bytes waiting in the socket (FIONREAD).
func (h *pairHarness) queued() int {
	var n int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(h.s.fd), syscall.TIOCINQ, uintptr(unsafe.Pointer(&n))); errno != 0 {
		h.t.Fatal(errno)
	}
	return int(n)
}

// A stream cut at every point near each frame's start and end (all three
// header sizes) reads the same as whole, and the close frame ends the
// socket from either position: completing a pending frame, or in place.
func TestPollerSplits(t *testing.T) {
	texts := []string{"a", strings.Repeat("b", 300), strings.Repeat("c", 70_000), "d"}
	var stream []byte
	var edges []int
	for _, text := range texts {
		edges = append(edges, len(stream))
		stream = append(stream, messageFrame(text)...)
	}
	edges = append(edges, len(stream))
	closeFrame := serverFrame(true, 8, binary.BigEndian.AppendUint16(nil, 4001))
	stream = append(stream, closeFrame...)
	var cuts []int
	for _, e := range edges {
		for k := max(e-3, 1); k <= min(e+11, len(stream)-1); k++ {
			cuts = append(cuts, k)
		}
	}
	for _, cut := range cuts {
		h := newPairHarness(t)
		h.feed(stream[:cut])
		h.feed(stream[cut:])
		if len(h.texts) != len(texts) {
			t.Fatalf("cut at %d: %d messages, want %d", cut, len(h.texts), len(texts))
		}
		for i, want := range texts {
			if h.texts[i] != want {
				t.Fatalf("cut at %d: message %d is %d bytes, want %d", cut, i, len(h.texts[i]), len(want))
			}
		}
		if code := waitFor(t, h.closed); code != 4001 {
			t.Fatalf("cut at %d: closed %d, want 4001", cut, code)
		}
		if h.p.socks[h.s.fd] != nil || h.s.rest != nil {
			t.Fatalf("cut at %d: still read (%v) or holding %d bytes", cut, h.p.socks[h.s.fd] != nil, len(h.s.rest))
		}
	}
}

// A large frame's buffer is not kept once it is handled, even when the
// read that completes it ends in the middle of the next frame.
func TestPollerDropsLargeRest(t *testing.T) {
	h := newPairHarness(t)
	big := messageFrame(strings.Repeat("e", 100_000))
	small := messageFrame("f")
	h.feed(big[:1000])
	h.feed(append(big[1000:], small[:5]...))
	if len(h.texts) != 1 || len(h.s.rest) != 5 || cap(h.s.rest) > keepRest {
		t.Fatalf("%d messages; holding %d bytes in a buffer of %d", len(h.texts), len(h.s.rest), cap(h.s.rest))
	}
	h.feed(small[5:])
	if len(h.texts) != 2 || h.texts[1] != "f" {
		t.Fatalf("messages %d", len(h.texts))
	}
}
