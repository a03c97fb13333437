package broker_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/chatd/chatd/broker"
	"github.com/golang-jwt/jwt/v5"
	"github.com/lxzan/gws"
	"github.com/rs/zerolog"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test")

// env is a broker behind a real HTTP server on 127.0.0.1.
type env struct {
	t      testing.TB
	srv    *httptest.Server
	broker *broker.Broker
	tokens *authn.Tokens
	url    string // ws://host/ws
}

func newEnv(t testing.TB, opts broker.Options) *env {
	t.Helper()
	tokens, err := authn.NewTokens(authn.TokenConfig{Secret: testSecret, Leeway: opts.Leeway})
	if err != nil {
		t.Fatal(err)
	}
	if opts.Verifier == nil {
		opts.Verifier = tokens
	}
	b := broker.New(opts)
	// Served as chatd serves it: upgrades through broker.Listener (its
	// sockets, reads and writes), anything else through the http.Server.
	srv := httptest.NewUnstartedServer(b)
	srv.Listener = broker.NewListener(srv.Listener, b, 5*time.Second, zerolog.Nop())
	srv.Start()
	t.Cleanup(func() {
		b.Close()
		srv.CloseClientConnections()
		srv.Close()
	})
	return &env{t: t, srv: srv, broker: b, tokens: tokens, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"}
}

// claims returns valid claims for name, expiring after ttl.
func claims(name string, ttl time.Duration) *authn.Claims {
	now := time.Now()
	return &authn.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    "chatd",
			Audience:  jwt.ClaimStrings{"chatd"},
			Subject:   "id-" + name,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			ID:        name + "-" + now.Format("150405.000000000"),
		},
		Name:      name,
		SessionID: "sid-" + name,
	}
}

// sign signs c with the test secret.
func sign(t testing.TB, c *authn.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// token is a valid 15-minute token for name.
func (e *env) token(name string) string { return sign(e.t, claims(name, 15*time.Minute)) }

// frame is one decoded server frame.
type frame map[string]any

func (f frame) str(k string) string { s, _ := f[k].(string); return s }
func (f frame) num(k string) uint64 { n, _ := f[k].(float64); return uint64(n) }

// client is a test WebSocket client that collects what the server sends.
type client struct {
	t      testing.TB
	name   string // from the welcome
	conn   *gws.Conn
	resp   *http.Response
	frames chan frame
	closed chan closeEvent
	stall  atomic.Bool // when set, OnMessage blocks until resume closes (a reader that stops reading)
	resume chan struct{}
	pongs  atomic.Int32 // pongs received
}

type closeEvent struct {
	code   uint16
	reason string
	at     time.Time
}

func (c *client) OnOpen(*gws.Conn)                {}
func (c *client) OnPing(conn *gws.Conn, p []byte) { _ = conn.WritePong(p) }
func (c *client) OnPong(*gws.Conn, []byte)        { c.pongs.Add(1) }
func (c *client) OnClose(_ *gws.Conn, err error) {
	ev := closeEvent{at: time.Now()}
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		ev.code, ev.reason = ce.Code, string(ce.Reason)
	}
	c.closed <- ev
}
func (c *client) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	if c.stall.Load() {
		<-c.resume
	}
	var f frame
	if err := json.Unmarshal(m.Bytes(), &f); err != nil {
		c.t.Errorf("server sent a frame that is not JSON: %q", m.Bytes())
		return
	}
	c.frames <- f
}

// dial opens a socket with header h (which carries the token or not).
func (e *env) dialHeader(h http.Header) (*client, error) {
	c := &client{t: e.t, frames: make(chan frame, 4096), closed: make(chan closeEvent, 1), resume: make(chan struct{})}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{Addr: e.url, RequestHeader: h})
	c.resp = resp
	if err != nil {
		return c, err
	}
	c.conn = conn
	go conn.ReadLoop()
	e.t.Cleanup(func() { _ = conn.NetConn().Close() })
	return c, nil
}

// dial opens a socket for token and reads its welcome.
func (e *env) dial(token string) *client {
	e.t.Helper()
	c, err := e.dialHeader(http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	w := c.next()
	if w.str("type") != "welcome" {
		e.t.Fatalf("first frame = %v, want welcome", w)
	}
	c.name = w.str("user")
	return c
}

// send writes v as a JSON text frame.
func (c *client) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.conn.WriteMessage(gws.OpcodeText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the next frame, failing the test after 5s.
func (c *client) next() frame {
	c.t.Helper()
	select {
	case f := <-c.frames:
		return f
	case ev := <-c.closed:
		c.closed <- ev
		c.t.Fatalf("socket closed (%d %s) while waiting for a frame", ev.code, ev.reason)
	case <-time.After(5 * time.Second):
		c.t.Fatal("no frame within 5s")
	}
	return nil
}

// expect returns the next frame of type typ, skipping presence events
// (which race with everything in multi-socket tests).
func (c *client) expect(typ string) frame {
	c.t.Helper()
	for {
		f := c.next()
		if f.str("type") == typ {
			return f
		}
		if f.str("type") != "presence" || f["users"] != nil {
			c.t.Fatalf("got %v, want a %s frame", f, typ)
		}
	}
}

// waitClose returns the close the server sent, failing after d.
func (c *client) waitClose(d time.Duration) closeEvent {
	c.t.Helper()
	select {
	case ev := <-c.closed:
		return ev
	case <-time.After(d):
		c.t.Fatalf("socket not closed within %v", d)
	}
	return closeEvent{}
}

// upgradeRequest sends a raw upgrade request and returns the response.
func (e *env) upgradeRequest(t testing.TB, h http.Header, query string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/ws"+query, nil)
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// errorBody decodes an HTTP error body.
func errorBody(t testing.TB, resp *http.Response) string {
	t.Helper()
	var body struct{ Error, Message string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("error body is not JSON: %v", err)
	}
	if body.Message == "" {
		t.Errorf("error body has no message")
	}
	return body.Error
}
