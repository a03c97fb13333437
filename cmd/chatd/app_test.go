package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/rs/zerolog"
)

// testApp serves the fully wired chatd handler on 127.0.0.1.
func testApp(t *testing.T, edit func(*Config)) (*app, *httptest.Server) {
	t.Helper()
	var cfg Config
	fs := newFlagSet("chatd", &cfg)
	if err := parse(fs, []string{"--data-dir", t.TempDir(), "--bcrypt-cost", "4"}, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.handler)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		_ = a.close()
	})
	return a, srv
}

func post(t *testing.T, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// login registers name and returns a token.
func login(t *testing.T, base, name string) string {
	t.Helper()
	body := `{"username":"` + name + `","password":"password1"}`
	if code, out := post(t, base+"/register", "", body); code != 201 {
		t.Fatalf("register: %d %v", code, out)
	}
	code, out := post(t, base+"/auth", "", body)
	if code != 200 {
		t.Fatalf("auth: %d %v", code, out)
	}
	return out["token"].(string)
}

// closeWatcher records how a socket was closed.
type closeWatcher struct {
	gws.BuiltinEventHandler
	closed chan uint16
}

func (w *closeWatcher) OnClose(_ *gws.Conn, err error) {
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		w.closed <- ce.Code
		return
	}
	w.closed <- 0
}

func TestRoutes(t *testing.T) {
	_, srv := testApp(t, nil)
	cases := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/", 200, ""},
		{"GET", "/healthz", 200, ""},
		{"GET", "/readyz", 200, ""},
		{"GET", "/metrics", 200, ""},
		{"GET", "/no-such-page", 404, "not_found"},
		{"GET", "/auth", 405, "method_not_allowed"},
		{"DELETE", "/register", 405, "method_not_allowed"},
		{"POST", "/ws", 405, "method_not_allowed"},
		{"GET", "/ws", 401, "missing_token"},
		{"POST", "/healthz", 405, "method_not_allowed"},
		{"PUT", "/readyz", 405, "method_not_allowed"},
		{"POST", "/metrics", 405, "method_not_allowed"},
		{"HEAD", "/healthz", 200, ""},
		{"POST", "/no-such-page", 404, "not_found"},
		{"DELETE", "/auth/nope", 404, "not_found"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
			continue
		}
		if tc.code != "" {
			var e struct{ Error, Message string }
			if json.Unmarshal(body, &e) != nil || e.Error != tc.code || e.Message == "" {
				t.Errorf("%s %s: body %s, want error %q", tc.method, tc.path, body, tc.code)
			}
		}
		if resp.StatusCode == 405 && resp.Header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", tc.method, tc.path)
		}
	}
	resp, _ := http.Get(srv.URL + "/metrics")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "chatd_sockets") {
		t.Error("/metrics lacks chatd_sockets")
	}
}

// Logout revokes the token at once: its sockets close 4003, /ws refuses it,
// and the user's other token keeps working.
func TestLogoutClosesSockets(t *testing.T) {
	_, srv := testApp(t, nil)
	tok := login(t, srv.URL, "alice")
	code, out := post(t, srv.URL+"/auth", "", `{"username":"alice","password":"password1"}`)
	if code != 200 {
		t.Fatal(code)
	}
	other := out["token"].(string)
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	dial := func(token string) *closeWatcher {
		w := &closeWatcher{closed: make(chan uint16, 1)}
		conn, _, err := gws.NewClient(w, &gws.ClientOption{Addr: wsURL, RequestHeader: http.Header{"Authorization": {"Bearer " + token}}})
		if err != nil {
			t.Fatal(err)
		}
		go conn.ReadLoop()
		t.Cleanup(func() { conn.NetConn().Close() })
		return w
	}
	s1, s2, kept := dial(tok), dial(tok), dial(other)

	if code, _ := post(t, srv.URL+"/auth/logout", tok, ""); code != 204 {
		t.Fatalf("logout: %d", code)
	}
	for _, w := range []*closeWatcher{s1, s2} {
		select {
		case c := <-w.closed:
			if c != 4003 {
				t.Fatalf("closed %d, want 4003", c)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("socket of the revoked token still open")
		}
	}
	select {
	case c := <-kept.closed:
		t.Fatalf("the other token's socket closed too (%d)", c)
	default:
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/ws", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Error string }
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 401 || e.Error != "token_revoked" {
		t.Fatalf("/ws with a revoked token: %d %s", resp.StatusCode, e.Error)
	}
}

// While draining, /readyz says so and /ws refuses new sockets with 503;
// /healthz still answers.
func TestDrainingRoutes(t *testing.T) {
	a, srv := testApp(t, nil)
	tok := login(t, srv.URL, "alice")
	if err := a.broker.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	get := func(path string, header ...string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp, e.Error
	}
	if resp, _ := get("/readyz"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining: %d", resp.StatusCode)
	}
	if resp, _ := get("/healthz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz while draining: %d", resp.StatusCode)
	}
	resp, code := get("/ws", "Authorization", "Bearer "+tok, "Connection", "Upgrade", "Upgrade", "websocket",
		"Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if resp.StatusCode != http.StatusServiceUnavailable || code != "overloaded" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("/ws while draining: %d %q", resp.StatusCode, code)
	}
}

// Zero means "none" where that makes sense (--expiry-warning,
// --presence-limit) and is refused where it does not; a negative value is
// always refused, never silently the default.
func TestConfigZeroAndNegative(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--expiry-warning", "0"}, true},
		{[]string{"--presence-limit", "0"}, true},
		{[]string{"--expiry-warning", "-1s"}, false},
		{[]string{"--presence-limit", "-1"}, false},
		{[]string{"--max-rooms", "0"}, false},
		{[]string{"--max-sockets", "-1"}, false},
		{[]string{"--ping-interval", "0"}, false},
		{[]string{"--idle-timeout", "-1s"}, false},
		{[]string{"--ping-interval", "30s", "--idle-timeout", "30s"}, false},
		{[]string{"--drain-timeout", "0"}, false},
		{[]string{"--history-per-room", "0"}, false},
		{[]string{"--history-max-age", "-1h"}, false},
		{[]string{"--token-ttl", "500ms"}, false}, // exp is whole seconds
		{[]string{"--token-ttl", "1s"}, true},
		{[]string{"--rate-limit", "NaN"}, false},
		{[]string{"--auth-rate", "Inf"}, false},
		{[]string{"--ws-rate-limit", "NaN"}, false},
		{[]string{"--ping-interval", "1ns", "--idle-timeout", "2ns"}, false},
		{[]string{"--bcrypt-cost", "17"}, false},
		{[]string{"--allowed-origins", "foo"}, false},
		{[]string{"--allowed-origins", "https://chat.example, *"}, true},
		{[]string{"--data-dir", ""}, false},
	} {
		var cfg Config
		fs := newFlagSet("chatd", &cfg)
		if err := parse(fs, tc.args, func(string) string { return "" }); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if err := cfg.validate(); (err == nil) != tc.ok {
			t.Errorf("%v: validate() = %v, want ok %v", tc.args, err, tc.ok)
		}
	}

	for level, ok := range map[string]bool{"debug": true, "error": true, "panic": false, "disabled": false, "5": false, "": false} {
		if _, err := newLogger(level, "json", io.Discard); (err == nil) != ok {
			t.Errorf("--log-level %q: %v, want ok %v", level, err, ok)
		}
	}

	// The broker's zero option is its default: 0 on the command line must
	// reach it as "none".
	var cfg Config
	fs := newFlagSet("chatd", &cfg)
	if err := parse(fs, []string{"--expiry-warning", "0", "--presence-limit", "0"}, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if o := cfg.brokerOptions(); o.ExpiryWarning >= 0 || o.PresenceLimit >= 0 {
		t.Errorf("0 reached the broker as ExpiryWarning %v, PresenceLimit %d: want both negative (none)", o.ExpiryWarning, o.PresenceLimit)
	}
	if err := parse(fs, []string{"--expiry-warning", "5s", "--presence-limit", "7"}, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if o := cfg.brokerOptions(); o.ExpiryWarning != 5*time.Second || o.PresenceLimit != 7 {
		t.Errorf("ExpiryWarning %v, PresenceLimit %d: want 5s and 7", o.ExpiryWarning, o.PresenceLimit)
	}
}
