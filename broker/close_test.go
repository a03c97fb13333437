package broker_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatd/chatd/broker"
)

// rawSocket is a WebSocket client written by hand, so a test can see
// exactly which frames the server writes and when it closes TCP.
type rawSocket struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

// tcpDial opens a plain TCP connection to addr, closed when t ends.
func tcpDial(t testing.TB, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// upgradeRequest is a raw upgrade request for /ws with token, speaking
// WebSocket version (13 is the only one there is).
func upgradeRequest(version, token string) string {
	return "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: " + version + "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Authorization: Bearer " + token + "\r\n\r\n"
}

// rawDial upgrades a plain TCP connection with token.
func (e *env) rawDial(t testing.TB, token string) *rawSocket {
	t.Helper()
	return rawUpgrade(t, tcpDial(t, e.srv.Listener.Addr().String()), token)
}

// deafDial upgrades a TCP connection with token that will read nothing,
// with a 4 KiB receive buffer from the start (a small window), so that
// the kernel does not take in on its behalf what is sent to it.
func (e *env) deafDial(t testing.TB, token string) *rawSocket {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	nc, err := d.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return rawUpgrade(t, nc, token)
}

// rawUpgrade upgrades nc with token.
func rawUpgrade(t testing.TB, nc net.Conn, token string) *rawSocket {
	t.Helper()
	if _, err := io.WriteString(nc, upgradeRequest("13", token)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return &rawSocket{t: t, nc: nc, br: br}
}

// next reads one server frame: its opcode and payload.
func (s *rawSocket) next(d time.Duration) (op byte, payload []byte, err error) {
	_ = s.nc.SetReadDeadline(time.Now().Add(d))
	var h [2]byte
	if _, err := io.ReadFull(s.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		s.t.Fatalf("server frame is masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		_, err = io.ReadFull(s.br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, err = io.ReadFull(s.br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	if err != nil {
		return 0, nil, err
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(s.br, payload)
	return h[0] & 0x0f, payload, err
}

// writeText sends a masked text frame.
func (s *rawSocket) writeText(text string) {
	if _, err := s.nc.Write(maskedText(text)); err != nil {
		s.t.Fatal(err)
	}
}

// maskedText is a client's text frame carrying text.
func maskedText(text string) []byte { return maskedFrame(0x81, []byte(text)) }

// maskedFrame is a client's frame: first is its first byte (FIN and
// opcode), then the masked payload.
func maskedFrame(first byte, payload []byte) []byte {
	mask := [4]byte{9, 8, 7, 6}
	f := []byte{first}
	if n := len(payload); n < 126 {
		f = append(f, 0x80|byte(n))
	} else {
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	}
	f = append(f, mask[:]...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	return f
}

// writeClose sends a masked close frame with code.
func (s *rawSocket) writeClose(code uint16) {
	if _, err := s.nc.Write(maskedFrame(0x88, binary.BigEndian.AppendUint16(nil, code))); err != nil {
		s.t.Fatal(err)
	}
}

// An expiry is the server's close: the client reads token_expired and
// close 4001, answers with its own close, and then sees the connection end
// with nothing more: no second close frame (gws would echo the client's
// close, RFC 6455 5.5.1 forbids anything after ours). With a short write
// timeout, the socket's last write deadline has long passed when its token
// expires: the close must still be written.
func TestExpiryCloseHandshake(t *testing.T) {
	t.Run("default", func(t *testing.T) { testExpiryCloseHandshake(t, broker.Options{}) })
	t.Run("write deadline passed", func(t *testing.T) {
		testExpiryCloseHandshake(t, broker.Options{WriteTimeout: 100 * time.Millisecond})
	})
}

func testExpiryCloseHandshake(t *testing.T, opts broker.Options) {
	e := newEnv(t, opts)
	tok, exp := expiringToken(t, "raw", 500*time.Millisecond)
	s := e.rawDial(t, tok)

	var told bool
	for {
		op, payload, err := s.next(5 * time.Second)
		if err != nil {
			t.Fatalf("before the close frame: %v", err)
		}
		if op == 0x1 && strings.Contains(string(payload), `"code":"token_expired"`) {
			told = true
			continue
		}
		if op != 0x8 {
			continue // welcome, presence
		}
		if !told {
			t.Fatalf("close frame %q before the token_expired error frame", payload)
		}
		if code := binary.BigEndian.Uint16(payload); code != 4001 || string(payload[2:]) != "token expired" {
			t.Fatalf("close %d %q, want 4001 token expired", code, payload[2:])
		}
		break
	}
	if time.Now().Before(exp) {
		t.Fatalf("closed before exp")
	}
	s.writeClose(4001)
	op, payload, err := s.next(time.Second)
	if err == nil {
		t.Fatalf("after the close handshake the server sent opcode %#x %q, want the connection closed", op, payload)
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("after the close handshake: %v, want the connection closed within a second", err)
	}
}

// A peer that never answers the close is dropped after the grace period,
// and one that keeps sending data frames gets nothing back but the close.
func TestCloseWithoutAnswer(t *testing.T) {
	e := newEnv(t, broker.Options{})
	tok, _ := expiringToken(t, "mute", 500*time.Millisecond)
	s := e.rawDial(t, tok)
	for {
		op, _, err := s.next(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if op == 0x8 {
			break
		}
	}
	start := time.Now()
	if _, _, err := s.next(5 * time.Second); err == nil || errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v, want the server to end the connection", err)
	}
	if d := time.Since(start); d < time.Second || d > 4*time.Second {
		t.Fatalf("server dropped the silent peer after %v, want about 2s", d)
	}
}

// A malformed opening handshake with a good token is refused by chatd,
// with a JSON body, before gws would answer it with plain text: every way
// RFC 6455 4.1 lists, and two it implies (no body, one Origin). A
// Connection header split over two lines is fine.
func TestBadHandshakes(t *testing.T) {
	e := newEnv(t, broker.Options{})
	tok := e.token("shaker")
	good := upgradeRequest("13", tok)
	for _, tc := range []struct {
		name, request string
		status        int
		code          string
	}{
		{"version 12", upgradeRequest("12", tok), 426, "bad_request"},
		{"no version", strings.Replace(good, "Sec-WebSocket-Version: 13\r\n", "", 1), 426, "bad_request"},
		{"no key", strings.Replace(good, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 1), 400, "bad_request"},
		{"a short key", strings.Replace(good, "dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", 1), 400, "bad_request"},
		{"no Connection: Upgrade", strings.Replace(good, "Connection: Upgrade", "Connection: keep-alive", 1), 400, "bad_request"},
		{"HTTP/1.0", strings.Replace(good, "HTTP/1.1", "HTTP/1.0", 1), 400, "bad_request"},
		{"a body", strings.Replace(good, "\r\n\r\n", "\r\nContent-Length: 5\r\n\r\nhello", 1), 400, "bad_request"},
		{"two Origins", strings.Replace(good, "Host: x\r\n", "Host: x\r\nOrigin: http://x\r\nOrigin: http://evil.example\r\n", 1), 403, "origin_not_allowed"},
	} {
		nc := tcpDial(t, e.srv.Listener.Addr().String())
		if _, err := io.WriteString(nc, tc.request); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatalf("%s: no answer: %v", tc.name, err)
		}
		if resp.StatusCode != tc.status || errorBody(t, resp) != tc.code {
			t.Errorf("%s: status %d, want %d %s", tc.name, resp.StatusCode, tc.status, tc.code)
		}
		if tc.status == 426 && resp.Header.Get("Sec-WebSocket-Version") != "13" {
			t.Errorf("%s: 426 without Sec-WebSocket-Version: 13", tc.name)
		}
		nc.Close()
	}

	split := strings.Replace(good, "Connection: Upgrade\r\n", "Connection: keep-alive\r\nConnection: Upgrade\r\n", 1)
	nc := tcpDial(t, e.srv.Listener.Addr().String())
	if _, err := io.WriteString(nc, split); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(nc), nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("Connection over two lines: %v %v, want 101", resp, err)
	}
	nc.Close()
}
