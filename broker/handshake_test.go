package broker_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/chatd/chatd/broker"
	"github.com/golang-jwt/jwt/v5"
)

func TestTokenTransports(t *testing.T) {
	e := newEnv(t, broker.Options{})
	tok := e.token("alice")

	t.Run("authorization header", func(t *testing.T) {
		c, err := e.dialHeader(http.Header{"Authorization": {"Bearer " + tok}})
		if err != nil {
			t.Fatal(err)
		}
		if w := c.next(); w.str("type") != "welcome" || w.str("user") != "alice" {
			t.Fatalf("welcome = %v", w)
		}
	})
	t.Run("subprotocol", func(t *testing.T) {
		c, err := e.dialHeader(http.Header{"Sec-WebSocket-Protocol": {"chat.v1, bearer." + tok}})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.resp.Header.Get("Sec-WebSocket-Protocol"); got != "chat.v1" {
			t.Fatalf("server chose subprotocol %q, want chat.v1 alone", got)
		}
		if w := c.next(); w.str("type") != "welcome" {
			t.Fatalf("first frame = %v", w)
		}
	})
	t.Run("query", func(t *testing.T) {
		saved := e.url
		e.url += "?token=" + url.QueryEscape(tok)
		defer func() { e.url = saved }()
		c, err := e.dialHeader(nil)
		if err != nil {
			t.Fatal(err)
		}
		w := c.next()
		if w.str("type") != "welcome" || w.num("exp") == 0 || w.str("session") == "" {
			t.Fatalf("welcome = %v", w)
		}
		rooms, _ := w["rooms"].([]any)
		if len(rooms) != 1 || rooms[0] != "general" {
			t.Fatalf("welcome rooms = %v, want [general]", w["rooms"])
		}
	})
	t.Run("header wins over query", func(t *testing.T) {
		resp := e.upgradeRequest(t, http.Header{"Authorization": {"Bearer garbage"}}, "?token="+tok)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401: the header is tried first", resp.StatusCode)
		}
	})
}

func TestRefusedBeforeUpgrade(t *testing.T) {
	e := newEnv(t, broker.Options{})
	expired := claims("bob", time.Minute)
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Second))
	wrongAud := claims("bob", time.Minute)
	wrongAud.Audience = jwt.ClaimStrings{"someone-else"}
	future := claims("bob", time.Minute)
	future.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour))
	noExp := claims("bob", time.Minute)
	noExp.ExpiresAt = nil
	otherKey, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims("bob", time.Minute)).SignedString([]byte("another-secret-another-secret-123456"))
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, claims("bob", time.Minute)).SignedString(testSecret)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims("bob", time.Minute)).SignedString(jwt.UnsafeAllowNoneSignatureType)

	cases := []struct {
		name, token, code string
	}{
		{"missing", "", "missing_token"},
		{"garbage", "not-a-jwt", "invalid_token"},
		{"wrong signature", otherKey, "invalid_token"},
		{"alg none", none, "invalid_token"},
		{"other HMAC algorithm", hs512, "invalid_token"},
		{"wrong aud", sign(t, wrongAud), "invalid_token"},
		{"nbf in the future", sign(t, future), "invalid_token"},
		{"no exp", sign(t, noExp), "invalid_token"},
		{"expired", sign(t, expired), "token_expired"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.token != "" {
				h.Set("Authorization", "Bearer "+tc.token)
			}
			resp := e.upgradeRequest(t, h, "")
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", resp.StatusCode)
			}
			if resp.Header.Get("Upgrade") != "" {
				t.Fatal("a refused request was upgraded")
			}
			if code := errorBody(t, resp); code != tc.code {
				t.Fatalf("error %q, want %q", code, tc.code)
			}
		})
	}
	if n := e.broker.Sockets(); n != 0 {
		t.Fatalf("%d sockets open after refusals", n)
	}
}

func TestOrigins(t *testing.T) {
	tok := ""
	cases := []struct {
		name    string
		allowed []string
		origin  string
		want    int
	}{
		{"no origin header", nil, "", http.StatusSwitchingProtocols},
		{"same host", nil, "http://HOST", http.StatusSwitchingProtocols},
		{"other host", nil, "http://evil.example", http.StatusForbidden},
		{"other port", nil, "http://127.0.0.1:1", http.StatusForbidden},
		{"listed", []string{"https://chat.example"}, "https://chat.example", http.StatusSwitchingProtocols},
		{"wrong scheme", []string{"https://chat.example"}, "http://chat.example", http.StatusForbidden},
		{"null", []string{"https://chat.example"}, "null", http.StatusForbidden},
		{"any", []string{"*"}, "http://anything.example", http.StatusSwitchingProtocols},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, broker.Options{AllowedOrigins: tc.allowed})
			tok = e.token("carol")
			h := http.Header{"Authorization": {"Bearer " + tok}}
			if tc.origin != "" {
				origin := tc.origin
				if origin == "http://HOST" {
					origin = e.srv.URL
				}
				h.Set("Origin", origin)
			}
			resp := e.upgradeRequest(t, h, "")
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want == http.StatusForbidden {
				if code := errorBody(t, resp); code != "origin_not_allowed" {
					t.Fatalf("error %q", code)
				}
			}
		})
	}
}

func TestBroadcastAndPlainText(t *testing.T) {
	e := newEnv(t, broker.Options{})
	alice, bob := e.dial(e.token("alice")), e.dial(e.token("bob"))
	alice.expect("presence") // bob joined general

	alice.send(map[string]any{"type": "send", "room": "general", "text": "hi <b>bob</b>", "id": "a1"})
	for _, c := range []*client{alice, bob} {
		m := c.expect("message")
		if m.str("from") != "alice" || m.str("text") != "hi <b>bob</b>" || m.str("room") != "general" ||
			m.num("seq") != 1 || m.str("id") == "" || m.num("ts") == 0 {
			t.Fatalf("message = %v", m)
		}
	}
	if ack := alice.expect("ack"); ack.str("id") != "a1" || ack.num("seq") != 1 || ack.str("room") != "general" {
		t.Fatalf("ack = %v", ack)
	}

	// A frame that is not a JSON object is chat text for general, so wscat
	// and the original tutorial's page can chat.
	if err := bob.conn.WriteString("hello from wscat"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{alice, bob} {
		m := c.expect("message")
		if m.str("from") != "bob" || m.str("text") != "hello from wscat" || m.num("seq") != 2 {
			t.Fatalf("message = %v", m)
		}
	}
}

// Subprotocols split over two header lines still negotiate chat.v1.
func TestSubprotocolOnSeveralLines(t *testing.T) {
	e := newEnv(t, broker.Options{})
	c, err := e.dialHeader(http.Header{"Sec-WebSocket-Protocol": {"bearer." + e.token("alice"), "chat.v1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.resp.Header.Get("Sec-WebSocket-Protocol"); got != "chat.v1" {
		t.Fatalf("subprotocol %q", got)
	}
	c.expect("welcome")
}

func TestOverloaded(t *testing.T) {
	e := newEnv(t, broker.Options{MaxSockets: 1})
	e.dial(e.token("first"))
	resp := e.upgradeRequest(t, http.Header{"Authorization": {"Bearer " + e.token("second")}}, "")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code := errorBody(t, resp); code != "overloaded" {
		t.Fatalf("error %q", code)
	}
}

// With UpgradeRate, an address that asks for sockets faster than that is
// answered 429 rate_limited with Retry-After, before its token is looked
// at; the sockets it already has are untouched.
func TestUpgradeRateLimit(t *testing.T) {
	e := newEnv(t, broker.Options{UpgradeRate: 0.5}) // burst 1, a request back every 2 s
	first := e.dial(e.token("alice"))
	for _, tok := range []string{e.token("alice"), "not-a-token"} {
		resp := e.upgradeRequest(t, http.Header{"Authorization": {"Bearer " + tok}}, "")
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("request past a burst of 1: status %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if code := errorBody(t, resp); code != "rate_limited" {
			t.Fatalf("error %q, want rate_limited", code)
		}
	}
	first.send(map[string]any{"type": "send", "room": "general", "text": "still here"})
	first.expect("message")
}
