package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/rs/zerolog"
)

// Listener serves the WebSocket upgrade without net/http's connection
// machinery, and hands every other connection to an http.Server.
//
// A connection whose first request is GET /ws is read here: the request is
// parsed with http.ReadRequest into the small reader the socket keeps for
// life, and served by the same handler as everything else (access log and
// all) through a minimal ResponseWriter. net/http would have spent, per
// handshake, a connection struct, a 4 KiB reader, a 4 KiB writer and the
// 4 KiB writer Hijack makes: all garbage once the socket is upgraded, and
// at thousands of handshakes a second, collecting it (and scanning the
// open sockets' stacks each time) was a fifth of chatd's CPU.
//
// Any other connection goes, with the bytes already read, to whoever
// calls Accept: the http.Server. So does a /ws request that comes after
// others on a kept-alive connection; the handler serves both paths.
type Listener struct {
	net.Listener
	handler http.Handler
	timeout time.Duration  // to read the request line and headers
	log     zerolog.Logger // a handler's panic

	conns chan net.Conn
	done  chan struct{}
	err   error // why the accept loop ended, once done is closed
}

// NewListener starts accepting on ln. h serves the upgrade requests it
// takes; headerTimeout bounds reading them (as http.Server's
// ReadHeaderTimeout does). A panic in h is logged to log, with the field
// component=listener.
func NewListener(ln net.Listener, h http.Handler, headerTimeout time.Duration, log zerolog.Logger) *Listener {
	l := &Listener{
		Listener: ln, handler: h, timeout: headerTimeout,
		log:   log.With().Str("component", "listener").Logger(),
		conns: make(chan net.Conn), done: make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

// Accept implements net.Listener: the next connection that is not an
// upgrade.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close implements net.Listener.
func (l *Listener) Close() error {
	err := l.Listener.Close()
	<-l.done
	return err
}

func (l *Listener) acceptLoop() {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				// Out of file descriptors, a connection reset before it
				// was accepted and the like: back off as http.Server
				// does, rather than spin or stop serving.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			l.err = err
			close(l.done)
			return
		}
		delay = 0
		if tc, ok := c.(*net.TCPConn); ok {
			c = newTCPConn(tc)
		}
		go l.route(c)
	}
}

// socketSendBuffer is the kernel's send buffer of a WebSocket (it doubles
// the value: 256 KiB). Left to grow, it reached 4 MiB for a slow reader,
// and the kernel wakes a blocked writer only once about half of its
// buffer is free: a client reading at 70 KB/s then left a write waiting
// longer than the write timeout, and was dropped though it kept up; and a
// reader that stopped took megabytes into the kernel before its send
// queue (--send-queue-bytes) filled and closed it 4008. With this buffer a
// write waits for about 85 KiB to drain.
const socketSendBuffer = 128 << 10

// upgradePrefix is how an upgrade request starts ("GET /ws " or "GET /ws?").
const upgradePrefix = "GET /ws"

// route serves c's first request here if it is GET /ws, else hands c over.
func (l *Listener) route(c net.Conn) {
	if l.timeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(l.timeout))
	}
	limited := &headerLimit{Conn: c, left: maxHeaderBytes}
	br := bufio.NewReaderSize(limited, readBufferSize)
	head, _ := br.Peek(len(upgradePrefix) + 1)
	if len(head) == len(upgradePrefix)+1 && string(head[:len(upgradePrefix)]) == upgradePrefix && (head[len(head)-1] == ' ' || head[len(head)-1] == '?') {
		if tc, ok := c.(interface{ SetWriteBuffer(int) error }); ok {
			_ = tc.SetWriteBuffer(socketSendBuffer)
		}
		l.serveUpgrade(c, br, limited)
		return
	}
	limited.lift()                     // the http.Server has its own limit
	_ = c.SetReadDeadline(time.Time{}) // and its own deadlines
	select {
	case l.conns <- &replayConn{Conn: limited, r: br}:
	case <-l.done:
		c.Close()
	}
}

// replayConn is a connection whose first bytes were read into r.
type replayConn struct {
	net.Conn
	r *bufio.Reader
}

// NetConn returns the connection underneath, for writes: the broker's
// outbox needs its writev and file descriptor.
func (c *replayConn) NetConn() net.Conn { return c.Conn.(*headerLimit).Conn }

// CloseWrite lets net/http close a connection gracefully (its lingering
// close after an early error response).
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.NetConn().(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// maxHeaderBytes bounds an upgrade request's line and headers, as
// http.Server's MaxHeaderBytes (16 KiB in chatd) does for the rest;
// http.ReadRequest alone reads headers of any size.
const maxHeaderBytes = 20 << 10

// headerLimit is the reader under a connection's bufio.Reader: it refuses
// more than left bytes until lifted.
type headerLimit struct {
	net.Conn
	left int64
}

var errHeaderTooLarge = errors.New("request header too large")

// Read implements net.Conn.
func (h *headerLimit) Read(p []byte) (int, error) {
	if h.left <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > h.left {
		p = p[:h.left]
	}
	n, err := h.Conn.Read(p)
	h.left -= int64(n)
	return n, err
}

// lift removes the limit: the request has been read.
func (h *headerLimit) lift() { h.left = math.MaxInt64 }

// Read implements net.Conn: the bytes already read, then the connection.
func (c *replayConn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}

// serveUpgrade serves one request and keeps the connection only if the
// handler hijacked it.
func (l *Listener) serveUpgrade(c net.Conn, br *bufio.Reader, limited *headerLimit) {
	r, err := http.ReadRequest(br)
	limited.lift()
	if err != nil {
		// Every error body is JSON (PROTOCOL.md), even for a request that
		// never parsed.
		status, body := "400 Bad Request", `{"error":"bad_request","message":"the request is malformed"}`
		if errors.Is(err, errHeaderTooLarge) {
			status, body = "431 Request Header Fields Too Large", `{"error":"bad_request","message":"the request's headers are over 20 KiB"}`
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write([]byte("HTTP/1.1 " + status + "\r\nContent-Type: application/json\r\nContent-Length: " +
			strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body))
		c.Close()
		return
	}
	r.RemoteAddr = c.RemoteAddr().String()
	w := &upgradeResponse{conn: c, br: br, header: make(http.Header)}
	defer func() {
		// As net/http does: a handler's panic ends its connection, not
		// the server. (gws recovers the socket's own callbacks.)
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			l.log.Error().Str("remote", r.RemoteAddr).Str("stack", string(debug.Stack())).Msgf("panic serving /ws: %v", v)
		}
		if !w.hijacked {
			w.finish()
			c.Close()
		}
	}()
	l.handler.ServeHTTP(w, r)
}

// upgradeResponse is the ResponseWriter of serveUpgrade: it answers a
// refused upgrade (status, headers, a short body) and closes, or hands
// the connection over.
type upgradeResponse struct {
	conn     net.Conn
	br       *bufio.Reader
	header   http.Header
	status   int
	body     bytes.Buffer
	hijacked bool
}

// Header implements http.ResponseWriter.
func (w *upgradeResponse) Header() http.Header { return w.header }

// WriteHeader implements http.ResponseWriter.
func (w *upgradeResponse) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

// Write implements http.ResponseWriter.
func (w *upgradeResponse) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// Hijack implements http.Hijacker. The reader holds what the client sent
// after the request, and is small enough for the socket to keep; there is
// no buffered writer (the broker writes through its outbox).
func (w *upgradeResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	_ = w.conn.SetDeadline(time.Time{})
	return w.conn, bufio.NewReadWriter(w.br, nil), nil
}

// finish writes the response of a request that was not upgraded.
func (w *upgradeResponse) finish() {
	w.WriteHeader(http.StatusOK)
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", w.status, http.StatusText(w.status))
	w.header.Set("Content-Length", strconv.Itoa(w.body.Len()))
	w.header.Set("Connection", "close")
	if w.header.Get("Date") == "" {
		w.header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	_ = w.header.Write(&b)
	b.WriteString("\r\n")
	b.Write(w.body.Bytes())
	_ = w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = w.conn.Write(b.Bytes())
}
