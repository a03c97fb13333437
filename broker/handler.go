package broker

import (
	"bufio"
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/chatd/chatd/authn"
)

// ServeHTTP upgrades GET /ws. Everything that can refuse the request is
// checked before the upgrade, so a refusal is a plain HTTP status with a
// JSON body, never a 400 from inside gws.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		authn.WriteMethodNotAllowed(w, http.MethodGet)
		return
	}
	if b.draining.Load() {
		w.Header().Set("Retry-After", "5")
		authn.WriteError(w, http.StatusServiceUnavailable, "overloaded", "the server is shutting down")
		b.metrics.handshakes.WithLabelValues("draining").Inc()
		return
	}
	if !b.checkOrigin(r) {
		authn.WriteError(w, http.StatusForbidden, "origin_not_allowed", "this origin may not open sockets here")
		b.metrics.handshakes.WithLabelValues("origin_not_allowed").Inc()
		return
	}
	// After the origin: a page elsewhere, in a visitor's browser, must not
	// spend the visitor's allowance. Before the token: a flood costs no HMAC.
	if b.upgrades != nil {
		if ok, wait := b.upgrades.Allow(authn.ClientKey(r), time.Now()); !ok {
			authn.WriteRetry(w, wait, "too many socket requests from this address; slow down")
			b.metrics.handshakes.WithLabelValues("rate_limited").Inc()
			return
		}
	}
	token, offersChat := handshakeToken(r)
	claims, err := b.opts.Verifier.Verify(token)
	if err != nil {
		authn.WriteTokenError(w, err)
		b.metrics.handshakes.WithLabelValues(authn.Code(err)).Inc()
		return
	}
	if limit := b.opts.MaxSockets; limit > 0 && b.registry.len() >= limit {
		w.Header().Set("Retry-After", "1")
		authn.WriteError(w, http.StatusServiceUnavailable, "overloaded", "too many open sockets; try again")
		b.metrics.handshakes.WithLabelValues("overloaded").Inc()
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		authn.WriteError(w, http.StatusUpgradeRequired, "bad_request", "this endpoint only speaks WebSocket")
		b.metrics.handshakes.WithLabelValues("bad_handshake").Inc()
		return
	}
	if status, why := badHandshake(r); status != 0 {
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Sec-WebSocket-Version", "13") // RFC 6455 4.4
		}
		authn.WriteError(w, status, "bad_request", why)
		b.metrics.handshakes.WithLabelValues("bad_handshake").Inc()
		return
	}

	// gws reads the first header line only; a client may split its
	// subprotocols, or its Connection tokens, over several.
	for _, name := range []string{"Sec-WebSocket-Protocol", "Connection"} {
		if vals := r.Header.Values(name); len(vals) > 1 {
			r.Header.Set(name, strings.Join(vals, ", "))
		}
	}
	upgrader := b.upgrader
	if offersChat {
		upgrader = b.chatv1
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		b.metrics.handshakes.WithLabelValues("bad_handshake").Inc()
		authn.WriteError(w, http.StatusInternalServerError, CodeInternalError, "this connection cannot be upgraded")
		return
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		b.metrics.handshakes.WithLabelValues("bad_handshake").Inc()
		return
	}
	sc := &sockConn{Conn: nc, upgrading: true, writeTimeout: b.opts.WriteTimeout}
	br := brw.Reader
	if br.Size() > readBufferSize && br.Buffered() == 0 {
		// net/http's reader is 4 KiB; the socket keeps its reader for life,
		// so it gets a small one unless frames arrived with the request.
		// (Listener's is small already.)
		br = bufio.NewReaderSize(sc, readBufferSize)
	}
	conn, err := upgrader.UpgradeFromConn(sc, br, r)
	if err != nil {
		// gws has already answered and closed the connection.
		b.metrics.handshakes.WithLabelValues("bad_handshake").Inc()
		return
	}
	b.metrics.upgraded.Inc()
	s := b.newSession(conn, sc, claims)
	conn.Session().(*sessionSlot).s = s
	// Before start publishes the session: from then on other goroutines
	// may set the connection's deadlines or close it.
	tc, parkable := nc.(*tcpConn)
	parkable = parkable && tc.enableParking(b.parker, br, s.resume)
	b.start(s, claims, sc.upgraded())
	if parkable && br.Buffered() == 0 && tc.park.park() {
		return // nothing to read yet: the parker starts the read loop
	}
	// The read loop runs on its own goroutine; holding the handler's
	// instead would pin the request's memory.
	go s.read()
}

// handshakeToken finds the token in contract order: the Authorization
// header, a `bearer.<token>` subprotocol entry, then the ?token= query.
// It also reports whether the client offered the chat.v1 subprotocol.
func handshakeToken(r *http.Request) (token string, offersChat bool) {
	var fromProtocol string
	for _, header := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(header, ",") {
			p = strings.TrimSpace(p)
			if p == SubProtocol {
				offersChat = true
			} else if t, ok := strings.CutPrefix(p, "bearer."); ok && fromProtocol == "" {
				fromProtocol = t
			}
		}
	}
	if t := authn.BearerToken(r.Header.Get("Authorization")); t != "" {
		return t, offersChat
	}
	if fromProtocol != "" {
		return fromProtocol, offersChat
	}
	return r.URL.Query().Get("token"), offersChat
}

// badHandshake checks what RFC 6455 4.1 asks of an opening handshake that
// gws would otherwise refuse with a plain-text 400 (or not at all), and
// returns the status and reason to refuse it with, or 0.
func badHandshake(r *http.Request) (int, string) {
	switch {
	case !r.ProtoAtLeast(1, 1) || r.Host == "":
		return http.StatusBadRequest, "a WebSocket handshake is HTTP/1.1 with a Host header"
	case r.ContentLength != 0 || len(r.TransferEncoding) > 0:
		// The protocol switches after the request, so a body would be
		// read as frames.
		return http.StatusBadRequest, "a WebSocket handshake has no body"
	case !headerHasToken(r.Header, "Connection", "upgrade"):
		return http.StatusBadRequest, "Connection must include Upgrade"
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return http.StatusUpgradeRequired, "Sec-WebSocket-Version must be 13"
	}
	// 16 bytes are 24 base64 characters; decoded on the stack, as this runs
	// on every handshake.
	var key [18]byte
	k := r.Header.Get("Sec-WebSocket-Key")
	if n, err := base64.StdEncoding.Decode(key[:], []byte(k)); len(k) != 24 || err != nil || n != 16 {
		return http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64"
	}
	return 0, ""
}

// headerHasToken reports whether a comma-separated header holds token, in
// any case (Connection: keep-alive, Upgrade).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
