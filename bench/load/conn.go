// Package load drives chatd with real WebSocket clients over loopback: it
// opens and holds authenticated sockets, sends timestamped chat messages,
// and measures what comes back (deliveries, latency, handshakes, expiry
// lateness) in HDR histograms that merge across processes.
//
// It is shared by the go test benchmarks in bench/ and by cmd/chatbench.
package load

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// Dialer opens client sockets to one chatd /ws URL.
type Dialer struct {
	// URL is the WebSocket endpoint, e.g. ws://127.0.0.1:3000/ws.
	URL string
	// SourceIPs are local addresses used in turn, to spread sockets past
	// one address's ephemeral ports. Empty: the kernel chooses.
	SourceIPs []net.IP
	// ReadBufferSize is each socket's read buffer (default 1024): the
	// handshake's, and with ReadLoops the read loop's, where a larger one
	// reads more frames per syscall under fan-out load. The poller reads
	// into one buffer of its own.
	ReadBufferSize int
	// Timeout bounds the dial plus the handshake plus the welcome (5s).
	Timeout time.Duration
	// LingerExpired, if set, makes a socket that reads token_expired wait
	// this long before it answers the close (a read loop parks for it; the
	// poller reads on and answers later). On one client core, each
	// socket's close handshake would otherwise delay the next socket's
	// read and be counted as the server's lateness; real clients, each on
	// its own machine, do not wait for each other.
	LingerExpired time.Duration
	// ReadClock times frames when the client reads them. By default they
	// are timed by their arrival: the kernel's receive timestamp, which
	// leaves out how long this process's own core took to get to each
	// socket (see arrivalConn). ToldExpiredRead has the read time always.
	ReadClock bool
	// ReadLoops reads each socket from a goroutine of its own, as most
	// clients do. By default, on 64-bit Linux, one goroutine woken by epoll
	// reads them all (see poller): a half to two thirds of the client's
	// CPU per delivery under fan-out. Elsewhere, and for a socket the poller
	// cannot take, it is a read loop each anyway.
	ReadLoops bool

	next     atomic.Uint64
	pollOnce sync.Once
	poll     *poller
}

// Events receives what happens on the sockets of a Dialer. Message and
// Frame run on the goroutine that reads the socket (its read loop, or the
// Dialer's poller, which reads them all) and must be quick. With a read
// loop, Closed runs there too, last; under the poller it may run on
// another goroutine (the one that closed the socket, or a linger's
// timer), even while frames read before the end are still being handled.
// Any may be nil.
type Events struct {
	// Message is called for every `message` frame with its text.
	Message func(c *Conn, text []byte, now time.Time)
	// Frame is called for every other frame after the welcome, with its type.
	Frame func(c *Conn, typ string, frame []byte)
	// Closed is called once when the socket ends, with the close code the
	// server sent (0 if none) and when the read loop saw it.
	Closed func(c *Conn, code uint16, at time.Time)
}

// Conn is one open client socket.
type Conn struct {
	ID    int   // the caller's index for it
	Shard int   // which Recorder shard it records into
	Exp   int64 // the token's exp from the welcome frame (unix seconds)

	sender atomic.Pointer[Sender]

	ws       *gws.Conn
	events   *Events
	welcome  chan error
	welcomed bool // touched only by the read loop
	closed   atomic.Bool
	// expiredAt is when the token_expired error frame arrived, and
	// expiredRead when it was read (unix ns).
	expiredAt   atomic.Int64
	expiredRead atomic.Int64
	linger      time.Duration // see Dialer.LingerExpired
	readClock   bool          // see Dialer.ReadClock
}

// ErrStatus is a refused handshake: the HTTP status and the error code of
// the JSON body, when there was one.
type ErrStatus struct {
	Status int
	Code   string
}

// Error says what the server answered instead of 101.
func (e *ErrStatus) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("handshake refused: %d %s", e.Status, e.Code)
	}
	return fmt.Sprintf("handshake refused: %d", e.Status)
}

// Dial opens a socket with token, waits for the welcome frame and returns
// the socket being read (by the Dialer's poller, or a read loop of its
// own). id and shard are stored in Conn.
func (d *Dialer) Dial(token string, id, shard int, ev *Events) (*Conn, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	rbuf := d.ReadBufferSize
	if rbuf <= 0 {
		rbuf = 1024
	}
	var local net.Addr
	if n := len(d.SourceIPs); n > 0 {
		local = &net.TCPAddr{IP: d.SourceIPs[int(d.next.Add(1))%n]}
	}
	c := &Conn{ID: id, Shard: shard, events: ev, welcome: make(chan error, 1), linger: d.LingerExpired, readClock: d.ReadClock}
	// gws fills defaults into the option it is given: a fresh one per dial.
	opt := &gws.ClientOption{
		Addr:             d.URL,
		RequestHeader:    http.Header{"Authorization": {"Bearer " + token}},
		ReadBufferSize:   rbuf,
		HandshakeTimeout: timeout,
		// Compression stays off: each compressing client costs a flate
		// state, and chatd's frames are small.
		NewDialer: func() (gws.Dialer, error) {
			return arrivalDialer{&net.Dialer{Timeout: timeout, LocalAddr: local}, !d.ReadLoops}, nil
		},
		NewSession: func() gws.SessionStorage { return noSession{} },
	}
	ws, resp, err := gws.NewClient((*handler)(c), opt)
	if err != nil {
		if resp != nil {
			se := &ErrStatus{Status: resp.StatusCode}
			if resp.Body != nil {
				var body struct{ Error string }
				_ = json.NewDecoder(resp.Body).Decode(&body)
				se.Code = body.Error
				resp.Body.Close()
			}
			return nil, se
		}
		return nil, err
	}
	c.ws = ws
	if p := d.poller(); p == nil || p.add(c) != nil {
		go ws.ReadLoop()
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-c.welcome:
		if err != nil {
			c.Abort()
			return nil, err
		}
		return c, nil
	case <-t.C:
		c.Abort()
		return nil, errors.New("no welcome frame within " + timeout.String())
	}
}

// Sender returns the Sender driving c, or nil.
func (c *Conn) Sender() *Sender { return c.sender.Load() }

// Write sends one text frame.
func (c *Conn) Write(frame []byte) error { return c.ws.WriteMessage(gws.OpcodeText, frame) }

// Close sends a normal close frame and ends the socket.
func (c *Conn) Close() { _ = c.ws.WriteClose(1000, nil) }

// Abort drops the TCP connection without a close frame.
func (c *Conn) Abort() { _ = c.ws.NetConn().Close() }

// Closed reports whether the socket has ended.
func (c *Conn) Closed() bool { return c.closed.Load() }

// LocalAddr returns the client end's address.
func (c *Conn) LocalAddr() net.Addr { return c.ws.NetConn().LocalAddr() }

// handler is Conn's gws.Event; a distinct type keeps the callbacks off
// Conn's documented methods.
type handler Conn

func (h *handler) OnOpen(*gws.Conn) {}

func (h *handler) OnPing(c *gws.Conn, p []byte) { _ = c.WritePong(p) }

func (h *handler) OnPong(*gws.Conn, []byte) {}

func (h *handler) OnClose(_ *gws.Conn, err error) {
	var code uint16
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	(*Conn)(h).ended(code, time.Now())
}

// ended reports, once, that the socket has ended with the server's close
// code (0 if it sent none): to a Dial still waiting for the welcome, and
// to Events.Closed.
func (c *Conn) ended(code uint16, at time.Time) {
	if c.closed.Swap(true) {
		return
	}
	select {
	case c.welcome <- fmt.Errorf("closed before the welcome (code %d)", code):
	default:
	}
	if c.events != nil && c.events.Closed != nil {
		c.events.Closed(c, code, at)
	}
}

func (h *handler) OnMessage(ws *gws.Conn, m *gws.Message) {
	defer m.Close()
	c := (*Conn)(h)
	if c.handleText(m.Bytes(), arrivalOf(ws.NetConn())) && c.linger > 0 {
		time.Sleep(c.linger) // parks only this socket's read loop
	}
}

// ToldExpired returns when the token_expired error frame arrived (zero if
// it did not): the kernel's receive timestamp where there is one (see
// arrivalConn). Expiry lateness is measured there rather than at OnClose:
// the server writes that frame and the close frame together, and by
// OnClose the client has also read every socket before this one and done
// its own close handshake, which on a one-core client piles up socket
// after socket and would be measured as the server's lateness.
func (c *Conn) ToldExpired() time.Time {
	if ns := c.expiredAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// lingerLeft returns how much of LingerExpired is still to come since the
// socket read token_expired (0 if it has not, or has no linger).
func (c *Conn) lingerLeft() time.Duration {
	read := c.expiredRead.Load()
	if read == 0 || c.linger <= 0 {
		return 0
	}
	return time.Until(time.Unix(0, read).Add(c.linger))
}

// ToldExpiredRead returns when the client read the token_expired frame.
func (c *Conn) ToldExpiredRead() time.Time {
	if ns := c.expiredRead.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// arrival returns when a frame that arrived at arrived (unix ns, 0 if
// unknown) counts as received, by the Dialer's clock.
func (c *Conn) arrival(arrived int64) time.Time {
	if !c.readClock && arrived != 0 {
		return time.Unix(0, arrived)
	}
	return time.Now()
}

// arrivalDialer dials with receive timestamps on (see arrivalConn); for a
// poller, the handshake's reads stop at the end of the response headers.
type arrivalDialer struct {
	d       *net.Dialer
	headers bool
}

// Dial implements gws.Dialer.
func (a arrivalDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := a.d.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	return withArrival(c, a.headers), nil
}

// poller returns the Dialer's poller, started on first use, or nil.
func (d *Dialer) poller() *poller {
	if d.ReadLoops {
		return nil
	}
	d.pollOnce.Do(func() { d.poll, _ = newPoller() })
	return d.poll
}

// noSession is a SessionStorage that stores nothing: the harness keeps its
// state in Conn, and gws's default map costs memory per socket.
type noSession struct{}

func (noSession) Len() int                     { return 0 }
func (noSession) Load(string) (any, bool)      { return nil, false }
func (noSession) Delete(string)                {}
func (noSession) Store(string, any)            {}
func (noSession) Range(func(string, any) bool) {}

// Loopback reports whether every address host resolves to is on this
// machine (127.0.0.0/8 or ::1), so load never leaves it by accident.
func Loopback(rawURL string) (bool, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false, err
	}
	host := u.Hostname()
	if host == "" {
		return false, fmt.Errorf("%q has no host", rawURL)
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback(), nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return false, err
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false, nil
		}
	}
	return len(ips) > 0, nil
}

// ParseIPRange parses "127.0.0.2-127.0.0.9", a comma list, or one address.
func ParseIPRange(s string) ([]net.IP, error) {
	var out []net.IP
	for _, part := range bytes.Split([]byte(s), []byte(",")) {
		p := string(bytes.TrimSpace(part))
		if p == "" {
			continue
		}
		lo, hi, isRange := bytes.Cut([]byte(p), []byte("-"))
		a := net.ParseIP(string(lo)).To4()
		if a == nil {
			return nil, fmt.Errorf("source IP %q: not an IPv4 address", lo)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b := net.ParseIP(string(hi)).To4()
		if b == nil || !bytes.Equal(a[:3], b[:3]) || b[3] < a[3] {
			return nil, fmt.Errorf("source IP range %q: give A.B.C.x-A.B.C.y with x <= y", p)
		}
		for x := int(a[3]); x <= int(b[3]); x++ {
			out = append(out, net.IPv4(a[0], a[1], a[2], byte(x)).To4())
		}
	}
	return out, nil
}
