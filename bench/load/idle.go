package load

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"
)

// DialIdle opens a socket with the least client-side state there can be:
// it does the handshake by hand, reads the welcome frame, and returns the
// bare TCP connection, with no goroutine and no buffer behind it. Memory
// measurements in one process use it so the client ends weigh (almost)
// nothing next to the server's. The socket must not stay open past the
// server's idle timeout: nothing answers its pings.
func DialIdle(wsURL, token string, local net.IP, timeout time.Duration) (net.Conn, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, errors.New("DialIdle speaks ws:// only")
	}
	d := net.Dialer{Timeout: timeout}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	conn, err := d.Dial("tcp", u.Host)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	var key [16]byte
	for i := range key {
		key[i] = byte(i * 7)
	}
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
		base64.StdEncoding.EncodeToString(key[:]) + "\r\nAuthorization: Bearer " + token + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, err
	}
	// A small reader: the 101 response and the welcome frame fit, and
	// nothing read past them can be lost because the server sends nothing
	// more to an idle socket.
	br := bufio.NewReaderSize(conn, 1024)
	status, err := br.ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, err
	}
	if len(status) < 12 || status[9:12] != "101" {
		conn.Close()
		return nil, fmt.Errorf("handshake refused: %q", bytes.TrimSpace([]byte(status)))
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			conn.Close()
			return nil, err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
	}
	// The welcome: one unmasked text frame.
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		conn.Close()
		return nil, err
	}
	n := int(hdr[1] & 0x7f)
	if n == 126 {
		var ext [2]byte
		if _, err := io.ReadFull(br, ext[:]); err != nil {
			conn.Close()
			return nil, err
		}
		n = int(ext[0])<<8 | int(ext[1])
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		conn.Close()
		return nil, err
	}
	if !bytes.HasPrefix(payload, []byte(`{"type":"welcome"`)) {
		conn.Close()
		return nil, fmt.Errorf("first frame is not a welcome: %.100s", payload)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}
