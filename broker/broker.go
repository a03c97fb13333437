// Package broker decides who hears what: it upgrades authenticated
// requests to WebSockets (github.com/lxzan/gws), keeps the sessions in a
// sharded registry, runs rooms with sequenced history and fan-out, closes
// every socket when its token expires, and enforces per-socket limits.
package broker

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/chatd/chatd/broker/wheel"
	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// Verifier checks tokens; authn.Tokens is one.
type Verifier interface {
	// Verify parses and checks a token (authn's errors tell why not).
	Verify(token string) (*authn.Claims, error)
	// Revoked reports whether the token jti was revoked. The broker asks
	// again once a socket is indexed under a jti: a logout between Verify
	// and then would otherwise miss the socket.
	Revoked(jti string) bool
}

// Options configure a Broker. Zero fields take the defaults noted.
type Options struct {
	Verifier Verifier // required
	History  History  // default: NewMemoryHistory(1000, 0)

	// AllowedOrigins lists the origins (scheme://host[:port]) allowed to
	// open sockets. Empty means the request's own host; "*" allows any.
	// A request without Origin (not a browser) is always allowed.
	AllowedOrigins []string

	MaxMessageBytes int           // largest inbound message; 16384 (close 1009 beyond)
	RateLimit       float64       // messages per second per socket; 20, burst twice that
	SendQueueBytes  int           // queued bytes before close 4008; 1 MiB
	ExpiryWarning   time.Duration // `expiring` this long before the close; 30s, negative: none
	Leeway          time.Duration // sockets close at exp + Leeway
	MaxRooms        int           // rooms one socket may be in; 100
	// PresenceLimit is the largest room whose members are told of every
	// join and leave (default 1000). In a larger room each arrival would
	// cost a frame to every member, quadratic in the room's size; `who`
	// still answers there. Negative: no room is told.
	PresenceLimit int
	MaxSockets    int // open sockets before 503 overloaded; 0 = no limit
	// UpgradeRate bounds /ws requests per second per client address, burst
	// twice that; past it they are answered 429 rate_limited before the
	// token is even verified. 0 = no limit (load tests open thousands a
	// second from one address).
	UpgradeRate  float64
	PingInterval time.Duration // server pings this often; 25s
	IdleTimeout  time.Duration // no frame from the peer for this long closes it; 60s
	WriteTimeout time.Duration // one write to a socket; 10s
	WheelTick    time.Duration // expiry precision; 5ms

	Log     zerolog.Logger
	Metrics prometheus.Registerer // nil: no metrics registered
}

func (o *Options) defaults() {
	if o.History == nil {
		o.History = NewMemoryHistory(1000, 0)
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 16384
	}
	if o.RateLimit <= 0 {
		o.RateLimit = 20
	}
	if o.SendQueueBytes <= 0 {
		o.SendQueueBytes = 1 << 20
	}
	if o.ExpiryWarning == 0 {
		o.ExpiryWarning = 30 * time.Second
	}
	if o.PresenceLimit == 0 {
		o.PresenceLimit = 1000
	}
	if o.MaxRooms <= 0 {
		o.MaxRooms = 100
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 25 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
}

// Broker serves GET /ws and everything that happens on the sockets.
type Broker struct {
	opts     Options
	log      zerolog.Logger
	metrics  *metrics
	upgrader *gws.Upgrader // no subprotocol
	chatv1   *gws.Upgrader // answers chat.v1
	registry *registry
	rooms    *rooms
	wheel    *wheel.Wheel
	parker   *parker             // holds idle sockets' read loops; nil where it cannot
	upgrades *authn.KeyedLimiter // /ws requests per client address; nil: no limit

	draining atomic.Bool
	gone     chan struct{} // a socket closed; the drain re-counts
	stop     chan struct{}
	stopOnce sync.Once
	nextMsg  atomic.Uint64
	msgBase  string

	// Frames every socket may get, encoded once.
	closings     map[uint16]closing
	expiredFrame []byte
}

// closing is what the server sends and counts for one close code, made
// once: an expiry burst closes thousands of sockets with the same code.
type closing struct {
	frame []byte             // the close frame
	count prometheus.Counter // chatd_server_closes_total{code}
}

// New returns a Broker; call Close (or Shutdown) to stop its goroutines.
func New(opts Options) *Broker {
	opts.defaults()
	b := &Broker{
		opts:     opts,
		log:      opts.Log.With().Str("component", "broker").Logger(),
		registry: newRegistry(),
		rooms:    newRooms(opts.History),
		wheel:    wheel.New(opts.WheelTick, 0),
		parker:   newParker(),
		stop:     make(chan struct{}),
		gone:     make(chan struct{}, 1),
		msgBase:  newID()[:8],
	}
	b.metrics = newMetrics(opts.Metrics, b.parker.len)
	if opts.UpgradeRate > 0 {
		b.upgrades = authn.NewKeyedLimiter(rate.Limit(opts.UpgradeRate), max(1, int(2*opts.UpgradeRate)))
	}
	b.closings = make(map[uint16]closing)
	for code, reason := range closeReasons() {
		b.closings[code] = closing{
			frame: closeFrame(code, reason),
			count: b.metrics.closes.WithLabelValues(strconv.Itoa(int(code))),
		}
	}
	b.expiredFrame = textFrame(errorFrame{Type: "error", Code: CodeTokenExpired, Message: ExpiredMessage})
	b.upgrader = gws.NewUpgrader(b, b.serverOption(nil))
	b.chatv1 = gws.NewUpgrader(b, b.serverOption([]string{SubProtocol}))
	go b.heartbeat()
	return b
}

// readBufferSize is the size of each socket's read buffer, held for its
// lifetime: chat frames are small.
const readBufferSize = 512

// SubProtocol is the WebSocket subprotocol chatd speaks.
const SubProtocol = "chat.v1"

func (b *Broker) serverOption(subprotocols []string) *gws.ServerOption {
	return &gws.ServerOption{
		ReadMaxPayloadSize: b.opts.MaxMessageBytes,
		ReadBufferSize:     readBufferSize,
		CheckUtf8Enabled:   true, // invalid UTF-8 closes 1007 (RFC 6455 8.1)
		Recovery:           gws.Recovery,
		SubProtocols:       subprotocols,
		Logger:             gwsLogger{b.log},
		HandshakeTimeout:   5 * time.Second,
		// One value per connection, read only by its own read loop: a map
		// behind a mutex (the default) would be paid on every message.
		NewSession: func() gws.SessionStorage { return new(sessionSlot) },
	}
}

// Sockets returns the number of open sockets.
func (b *Broker) Sockets() int { return b.registry.len() }

// Draining reports whether Shutdown has begun.
func (b *Broker) Draining() bool { return b.draining.Load() }

// Revoke closes, with 4003, every socket that has held the token jti.
func (b *Broker) Revoke(jti string) {
	for _, s := range b.registry.withJTI(jti) {
		s.close(CloseTokenRevoked, true, nil)
	}
}

// Shutdown stops accepting sockets, closes every open one with 1001 and
// waits until they are gone or ctx ends, then force-closes what is left
// and waits for them at most abortGrace more. It does not close the
// History: its owner flushes it after Shutdown.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.draining.Store(true)
	b.registry.each(func(s *Session) { s.close(CloseGoingAway, false, nil) })
	var err error
	var abortEnd <-chan time.Time
	for b.registry.len() > 0 {
		select {
		case <-b.gone:
		case <-ctx.Done():
			err = ctx.Err()
			b.registry.each(func(s *Session) { s.abort() })
			ctx = context.Background()        // aborted sockets close at once,
			abortEnd = time.After(abortGrace) // and a process waiting to exit is not held past this
		case <-abortEnd:
			b.log.Warn().Int("sockets", b.registry.len()).Msg("sockets still open after the drain")
			b.Close()
			return err
		}
	}
	b.Close()
	return err
}

// abortGrace is how long Shutdown waits for the sockets it force-closed.
const abortGrace = 250 * time.Millisecond

// Close stops the broker's goroutines. Open sockets are not touched; use
// Shutdown for that.
func (b *Broker) Close() {
	b.stopOnce.Do(func() {
		close(b.stop)
		b.wheel.Stop()
		if b.parker != nil {
			b.parker.close()
		}
	})
}

// heartbeat pings every socket each PingInterval; the read deadline set on
// each frame received closes sockets whose peer has gone silent. It pings
// one registry shard per step, spread over the interval: pinging every idle
// socket at once would be a burst of thousands of writes. An idle socket's
// ping is written by this goroutine itself (outbox.pushNow).
func (b *Broker) heartbeat() {
	t := time.NewTicker(max(b.opts.PingInterval/registryShards, time.Millisecond))
	defer t.Stop()
	ping := frame(opPing, nil)
	for shard := 0; ; shard = (shard + 1) % registryShards {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.registry.eachIn(shard, func(s *Session) {
				if !s.out.pushNow(ping) {
					s.slow()
				}
			})
		}
	}
}

// checkOrigin applies AllowedOrigins to r.
func (b *Broker) checkOrigin(r *http.Request) bool {
	if len(r.Header.Values("Origin")) > 1 {
		return false // which one would the browser have meant?
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if len(b.opts.AllowedOrigins) == 0 {
		return sameHost(origin, r.Host)
	}
	for _, allowed := range b.opts.AllowedOrigins {
		if allowed == "*" || strings.EqualFold(allowed, origin) {
			return true
		}
	}
	return false
}

// sameHost reports whether a web page at origin (http or https) is served
// by host, the request's Host: the same name and the same port, where a
// port left out is its scheme's default (http://example.com is
// example.com:80). A Host without a port matches the origin's default
// port, whichever scheme it has: behind a proxy that ends TLS, chatd does
// not know which one the browser used.
func sameHost(origin, host string) bool {
	scheme, rest, ok := strings.Cut(origin, "://")
	var defaultPort string
	switch strings.ToLower(scheme) {
	case "http":
		defaultPort = "80"
	case "https":
		defaultPort = "443"
	default:
		return false
	}
	oName, oPort := splitHostPort(rest)
	hName, hPort := splitHostPort(host)
	if !ok || oName == "" || !strings.EqualFold(oName, hName) {
		return false
	}
	if oPort == "" {
		oPort = defaultPort
	}
	if hPort == "" {
		return oPort == defaultPort
	}
	return oPort == hPort
}

// splitHostPort splits "name[:port]", where name may be a bracketed IPv6
// address, into the name without brackets and the port ("" if none).
func splitHostPort(s string) (name, port string) {
	if i := strings.LastIndexByte(s, ':'); i > strings.LastIndexByte(s, ']') {
		name, port = s[:i], s[i+1:]
	} else {
		name = s
	}
	return strings.TrimSuffix(strings.TrimPrefix(name, "["), "]"), port
}

// gwsLogger sends gws's own error lines (recovered panics) to zerolog.
type gwsLogger struct{ log zerolog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error().Msg(strings.TrimSpace(fmt.Sprintln(v...))) }
