package authn_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/golang-jwt/jwt/v5"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

type fixture struct {
	t       *testing.T
	srv     *httptest.Server
	db      *bolt.DB
	tokens  *authn.Tokens
	revoked *authn.Revocations
	now     *clock
	mu      sync.Mutex
	revokes []string
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock() *clock               { return &clock{t: time.Now()} }
func openDB(t *testing.T, path string) *bolt.DB {
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newFixture(t *testing.T, cfg authn.ServiceConfig, tcfg authn.TokenConfig) *fixture {
	t.Helper()
	f := &fixture{t: t, now: newClock()}
	f.db = openDB(t, filepath.Join(t.TempDir(), "chatd.db"))
	t.Cleanup(func() { f.db.Close() })
	var err error
	if f.revoked, err = authn.NewRevocations(f.db, f.now.Now); err != nil {
		t.Fatal(err)
	}
	tcfg.Secret, tcfg.Revoked, tcfg.Now = secret, f.revoked, f.now.Now
	if f.tokens, err = authn.NewTokens(tcfg); err != nil {
		t.Fatal(err)
	}
	users, err := authn.NewUsers(f.db, bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Now = f.now.Now
	cfg.OnRevoke = func(jti string) { f.mu.Lock(); f.revokes = append(f.revokes, jti); f.mu.Unlock() }
	mux := http.NewServeMux()
	authn.NewService(users, f.tokens, f.revoked, cfg).Register(mux)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
}

func (f *fixture) do(method, path, ctype, body string, header ...string) reply {
	f.t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode != http.StatusNoContent {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			f.t.Fatalf("%s %s: Content-Type %q, want application/json", method, path, ct)
		}
		if err := json.NewDecoder(resp.Body).Decode(&r.body); err != nil {
			f.t.Fatalf("%s %s: body is not JSON: %v", method, path, err)
		}
	}
	return r
}

func (r reply) code() string { s, _ := r.body["error"].(string); return s }

const jsonType = "application/json"

func creds(user, pass string) string {
	b, _ := json.Marshal(map[string]string{"username": user, "password": pass})
	return string(b)
}

func (f *fixture) register(user, pass string) {
	f.t.Helper()
	if r := f.do("POST", "/register", jsonType, creds(user, pass)); r.status != http.StatusCreated {
		f.t.Fatalf("register %s: %d %v", user, r.status, r.body)
	}
}

func (f *fixture) login(user, pass string) string {
	f.t.Helper()
	r := f.do("POST", "/auth", jsonType, creds(user, pass))
	if r.status != http.StatusOK {
		f.t.Fatalf("login %s: %d %v", user, r.status, r.body)
	}
	return r.body["token"].(string)
}

func TestRegister(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: true, RequestsPerSecond: -1}, authn.TokenConfig{})
	cases := []struct {
		name, ctype, body string
		status            int
		code              string
	}{
		{"json", jsonType, creds("alice", "password1"), 201, ""},
		{"form", "application/x-www-form-urlencoded", "username=bob&password=password1", 201, ""},
		{"json with charset", "application/json; charset=utf-8", creds("carol", "password1"), 201, ""},
		{"taken", jsonType, creds("alice", "password2"), 409, "username_taken"},
		{"short name", jsonType, creds("al", "password1"), 400, "bad_request"},
		{"long name", jsonType, creds(strings.Repeat("a", 33), "password1"), 400, "bad_request"},
		{"bad chars", jsonType, creds("al ice", "password1"), 400, "bad_request"},
		{"short password", jsonType, creds("dave", "pass"), 400, "bad_request"},
		{"long password", jsonType, creds("dave", strings.Repeat("p", 257)), 400, "bad_request"},
		{"not json", jsonType, "{", 400, "bad_request"},
		{"no content type", "", creds("erin", "password1"), 415, "unsupported_media_type"},
		{"text/plain", "text/plain", creds("erin", "password1"), 415, "unsupported_media_type"},
		{"too large", jsonType, `{"username":"x","password":"` + strings.Repeat("p", 9000) + `"}`, 413, "too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do("POST", "/register", tc.ctype, tc.body)
			if r.status != tc.status || r.code() != tc.code {
				t.Fatalf("got %d %v, want %d %q", r.status, r.body, tc.status, tc.code)
			}
			if tc.status >= 400 && r.body["message"] == "" {
				t.Fatal("error without a message")
			}
		})
	}
	if r := f.do("GET", "/register", "", ""); r.status != 405 || r.header.Get("Allow") != "POST" || r.code() != "method_not_allowed" {
		t.Fatalf("GET /register: %d %v", r.status, r.header)
	}
}

func TestRegistrationDisabled(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: false}, authn.TokenConfig{})
	if r := f.do("POST", "/register", jsonType, creds("alice", "password1")); r.status != 403 || r.code() != "registration_disabled" {
		t.Fatalf("got %d %v", r.status, r.body)
	}
}

func TestAuth(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: true, RequestsPerSecond: -1}, authn.TokenConfig{TTL: 15 * time.Minute})
	f.register("alice", "password1")

	r := f.do("POST", "/auth", "application/x-www-form-urlencoded", "username=alice&password=password1")
	if r.status != 200 || r.body["token_type"] != "Bearer" || r.body["expires_in"] != float64(900) {
		t.Fatalf("login: %d %v", r.status, r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Error("token response is cacheable")
	}
	claims, err := f.tokens.Verify(r.body["token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if claims.Name != "alice" || claims.Subject == "" || claims.SessionID == "" || claims.ID == "" ||
		int64(r.body["expires_at"].(float64)) != claims.Expiry().Unix() {
		t.Fatalf("claims %+v", claims)
	}

	wrong := f.do("POST", "/auth", jsonType, creds("alice", "wrong-password"))
	unknown := f.do("POST", "/auth", jsonType, creds("nobody", "wrong-password"))
	if wrong.status != 401 || unknown.status != 401 || wrong.code() != "invalid_credentials" ||
		wrong.body["message"] != unknown.body["message"] || wrong.code() != unknown.code() {
		t.Fatalf("wrong password %v and unknown user %v must answer the same", wrong.body, unknown.body)
	}
	if r := f.do("POST", "/auth", jsonType, `{"username":"alice"}`); r.status != 400 {
		t.Fatalf("missing password: %d", r.status)
	}
	if r := f.do("GET", "/auth?username=alice&password=password1", "", ""); r.status != 405 || r.header.Get("Allow") != "POST" {
		t.Fatalf("GET /auth: %d %v", r.status, r.header)
	}
	if r := f.do("POST", "/auth", "text/plain", "x"); r.status != 415 {
		t.Fatalf("text/plain: %d", r.status)
	}
}

// An unknown user must cost the same bcrypt work as a wrong password, or
// timing tells which usernames exist.
func TestAuthTimingDoesNotRevealUsers(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "u.db"))
	defer db.Close()
	users, err := authn.NewUsers(db, 8) // slow enough to measure over noise
	if err != nil {
		t.Fatal(err)
	}
	if _, err := users.Add("alice", "password1"); err != nil {
		t.Fatal(err)
	}
	measure := func(name string) time.Duration {
		best := time.Hour
		for range 5 {
			start := time.Now()
			if _, err := users.Check(name, "wrong-password"); err != authn.ErrInvalidCredentials {
				t.Fatalf("Check(%s) = %v", name, err)
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	known, unknown := measure("alice"), measure("nobody")
	if ratio := float64(unknown) / float64(known); ratio < 0.5 || ratio > 2 {
		t.Fatalf("unknown user %v vs wrong password %v: timing differs", unknown, known)
	}
}

func TestLoginFailuresAreRateLimited(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: true, RequestsPerSecond: -1}, authn.TokenConfig{})
	f.register("alice", "password1")
	for i := range 10 {
		if r := f.do("POST", "/auth", jsonType, creds("alice", "nope-nope")); r.status != 401 {
			t.Fatalf("failure %d: %d", i+1, r.status)
		}
	}
	r := f.do("POST", "/auth", jsonType, creds("alice", "password1"))
	if r.status != 429 || r.code() != "rate_limited" || r.header.Get("Retry-After") == "" {
		t.Fatalf("after 10 failures: %d %v %v", r.status, r.body, r.header)
	}
	// Other users are not affected.
	f.register("bob", "password1")
	f.login("bob", "password1")
	// A minute later alice may try again.
	f.now.Add(time.Minute)
	f.login("alice", "password1")
}

// "10 failed logins within a minute" however they are spaced: failures 5 s
// apart are refused from the 11th attempt until the first leaves the
// minute.
func TestLoginFailuresOverAMinute(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: true, RequestsPerSecond: -1}, authn.TokenConfig{})
	f.register("alice", "password1")
	for i := range 10 {
		if r := f.do("POST", "/auth", jsonType, creds("alice", "nope-nope")); r.status != 401 {
			t.Fatalf("failure %d: %d", i+1, r.status)
		}
		f.now.Add(5 * time.Second)
	}
	// 50 s after the first failure: the first leaves the minute in 10 s.
	r := f.do("POST", "/auth", jsonType, creds("alice", "password1"))
	if r.status != 429 || r.code() != "rate_limited" || r.header.Get("Retry-After") != "10" {
		t.Fatalf("11th attempt within a minute: %d %v Retry-After %q, want 429 and 10", r.status, r.body, r.header.Get("Retry-After"))
	}
	f.now.Add(10*time.Second + time.Millisecond)
	f.login("alice", "password1")
	// A success is not a failure: nine failures, a success, and one more
	// failure leave alice with ten, the last still answered 401.
	if r := f.do("POST", "/auth", jsonType, creds("alice", "nope-nope")); r.status != 401 {
		t.Fatalf("failure after a success: %d", r.status)
	}
	if r := f.do("POST", "/auth", jsonType, creds("alice", "password1")); r.status != 429 {
		t.Fatalf("after ten failures within the minute: %d, want 429", r.status)
	}
}

func TestPerIPLimit(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: true, RequestsPerSecond: 1, Burst: 3}, authn.TokenConfig{})
	for range 3 {
		f.do("POST", "/auth", jsonType, creds("nobody", "password1"))
	}
	if r := f.do("POST", "/register", jsonType, creds("alice", "password1")); r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Fatalf("4th request in a burst of 3: %d", r.status)
	}
}

func TestRefresh(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: true, RequestsPerSecond: -1},
		authn.TokenConfig{TTL: 10 * time.Minute, SessionMax: 25 * time.Minute})
	f.register("alice", "password1")
	tok := f.login("alice", "password1")
	first, _ := f.tokens.Verify(tok)

	if r := f.do("POST", "/auth/refresh", "", ""); r.status != 401 || r.code() != "missing_token" {
		t.Fatalf("no token: %d %v", r.status, r.body)
	}
	if r := f.do("POST", "/auth/refresh", "", "", "Authorization", "Bearer junk"); r.status != 401 || r.code() != "invalid_token" ||
		!strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("junk: %d %v", r.status, r.body)
	}
	if r := f.do("GET", "/auth/refresh", "", ""); r.status != 405 {
		t.Fatalf("GET: %d", r.status)
	}

	f.now.Add(8 * time.Minute)
	r := f.do("POST", "/auth/refresh", "", "", "Authorization", "Bearer "+tok)
	if r.status != 200 {
		t.Fatalf("refresh: %d %v", r.status, r.body)
	}
	second, err := f.tokens.Verify(r.body["token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if second.SessionID != first.SessionID || second.ID == first.ID || !second.Expiry().After(first.Expiry()) {
		t.Fatalf("refreshed claims %+v from %+v", second, first)
	}

	// The chain cannot pass session-max (25m after login): at 16m a refresh
	// is capped at 25m; at 25m it is refused.
	f.now.Add(8 * time.Minute)
	r = f.do("POST", "/auth/refresh", "", "", "Authorization", "Bearer "+r.body["token"].(string))
	third, _ := f.tokens.Verify(r.body["token"].(string))
	if end := time.Unix(first.AuthTime, 0).Add(25 * time.Minute); r.status != 200 || !third.Expiry().Equal(end) {
		t.Fatalf("capped refresh: %d exp %v, want %v", r.status, third.Expiry(), end)
	}
	f.now.Add(9 * time.Minute)
	tok3 := r.body["token"].(string)
	// Leeway-free: at the session end the token itself has expired too.
	if r := f.do("POST", "/auth/refresh", "", "", "Authorization", "Bearer "+tok3); r.status != 401 || r.code() != "token_expired" {
		t.Fatalf("expired token: %d %v", r.status, r.body)
	}
}

// Refresh and logout read no body, but a body they are sent is held to
// every POST's rules: 413 over 8 KiB, 415 when neither JSON nor a form.
func TestBearerPostsCheckTheirBody(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: true, RequestsPerSecond: -1}, authn.TokenConfig{})
	f.register("alice", "password1")
	tok := f.login("alice", "password1")
	for _, path := range []string{"/auth/refresh", "/auth/logout"} {
		for _, tc := range []struct {
			name, ctype, body string
			status            int
			code              string
		}{
			{"too large", jsonType, `{"pad":"` + strings.Repeat("p", 9000) + `"}`, 413, "too_large"},
			{"text/plain", "text/plain", "hello", 415, "unsupported_media_type"},
			{"no content type", "", "hello", 415, "unsupported_media_type"},
		} {
			r := f.do("POST", path, tc.ctype, tc.body, "Authorization", "Bearer "+tok)
			if r.status != tc.status || r.code() != tc.code {
				t.Errorf("%s, %s: got %d %v, want %d %s", path, tc.name, r.status, r.body, tc.status, tc.code)
			}
		}
	}
	// An empty body, or a small JSON one, is fine: the token still works.
	if r := f.do("POST", "/auth/refresh", "", "", "Authorization", "Bearer "+tok); r.status != 200 {
		t.Fatalf("refresh, no body: %d %v", r.status, r.body)
	}
	if r := f.do("POST", "/auth/logout", jsonType, "{}", "Authorization", "Bearer "+tok); r.status != 204 {
		t.Fatalf("logout, {}: %d %v", r.status, r.body)
	}
}

func TestRefreshPastSessionMax(t *testing.T) {
	// With leeway a token may still verify after its session ended; the
	// refresh must then say session_expired.
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: true, RequestsPerSecond: -1},
		authn.TokenConfig{TTL: 10 * time.Minute, SessionMax: 10 * time.Minute, Leeway: 5 * time.Minute})
	f.register("alice", "password1")
	tok := f.login("alice", "password1")
	f.now.Add(11 * time.Minute)
	if r := f.do("POST", "/auth/refresh", "", "", "Authorization", "Bearer "+tok); r.status != 401 || r.code() != "session_expired" {
		t.Fatalf("got %d %v, want 401 session_expired", r.status, r.body)
	}
}

// --session-max bounds refreshes, not the login's own token: with a TTL
// longer than the session, that token outlives it, and a refresh with it
// after the session's end is session_expired (no leeway needed).
func TestLoginTokenOutlivesAShortSession(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: true, RequestsPerSecond: -1},
		authn.TokenConfig{TTL: time.Hour, SessionMax: 10 * time.Minute})
	f.register("alice", "password1")
	r := f.do("POST", "/auth", jsonType, creds("alice", "password1"))
	if r.status != 200 || r.body["expires_in"].(float64) != 3600 {
		t.Fatalf("login: %d %v, want a token for the full hour", r.status, r.body)
	}
	tok := r.body["token"].(string)
	f.now.Add(5 * time.Minute)
	r = f.do("POST", "/auth/refresh", "", "", "Authorization", "Bearer "+tok)
	if r.status != 200 || r.body["expires_in"].(float64) != 300 {
		t.Fatalf("refresh 5 min in: %d %v, want a token to the session's end, 300 s away", r.status, r.body)
	}
	f.now.Add(5 * time.Minute)
	if r := f.do("POST", "/auth/refresh", "", "", "Authorization", "Bearer "+tok); r.status != 401 || r.code() != "session_expired" {
		t.Fatalf("refresh at the session's end: %d %v, want 401 session_expired", r.status, r.body)
	}
}

// A token signed with the secret elsewhere, without auth_time, is bounded
// by --session-max from its iat: its refresh chain ends too.
func TestRefreshWithoutAuthTime(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{RequestsPerSecond: -1},
		authn.TokenConfig{TTL: 10 * time.Minute, SessionMax: time.Hour})
	mint := func(iat time.Time) string {
		c := &authn.Claims{
			RegisteredClaims: jwt.RegisteredClaims{
				Issuer: "chatd", Audience: jwt.ClaimStrings{"chatd"}, Subject: "u1", ID: iat.String(),
				IssuedAt: jwt.NewNumericDate(iat), ExpiresAt: jwt.NewNumericDate(f.now.Now().Add(time.Minute)),
			},
			Name: "alice", SessionID: "s1",
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if r := f.do("POST", "/auth/refresh", "", "", "Authorization", "Bearer "+mint(f.now.Now().Add(-2*time.Hour))); r.status != 401 || r.code() != "session_expired" {
		t.Fatalf("refresh 2 h after iat: %d %v, want 401 session_expired", r.status, r.body)
	}
	r := f.do("POST", "/auth/refresh", "", "", "Authorization", "Bearer "+mint(f.now.Now().Add(-55*time.Minute)))
	if r.status != 200 || r.body["expires_in"].(float64) != 300 {
		t.Fatalf("refresh 55 min after iat: %d %v, want a token to the session's end, 300 s away", r.status, r.body)
	}
	f.now.Add(4 * time.Minute)
	if r := f.do("POST", "/auth/refresh", "", "", "Authorization", "Bearer "+r.body["token"].(string)); r.status != 200 || r.body["expires_in"].(float64) != 60 {
		t.Fatalf("refresh of the refreshed token: %d %v, want a token to the same session end, 60 s away", r.status, r.body)
	}
}

func TestLogoutRevokes(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: true, RequestsPerSecond: -1}, authn.TokenConfig{})
	f.register("alice", "password1")
	tok, other := f.login("alice", "password1"), f.login("alice", "password1")
	claims, _ := f.tokens.Verify(tok)

	if r := f.do("POST", "/auth/logout", "", "", "Authorization", "Bearer "+tok); r.status != 204 {
		t.Fatalf("logout: %d %v", r.status, r.body)
	}
	if len(f.revokes) != 1 || f.revokes[0] != claims.ID {
		t.Fatalf("OnRevoke calls %v, want [%s]", f.revokes, claims.ID)
	}
	for _, path := range []string{"/auth/logout", "/auth/refresh"} {
		if r := f.do("POST", path, "", "", "Authorization", "Bearer "+tok); r.status != 401 || r.code() != "token_revoked" {
			t.Fatalf("%s with a revoked token: %d %v", path, r.status, r.body)
		}
	}
	if _, err := f.tokens.Verify(other); err != nil {
		t.Fatalf("the user's other token was revoked too: %v", err)
	}

	// The revocation survives a restart: a new denylist on the same file.
	again, err := authn.NewRevocations(f.db, f.now.Now)
	if err != nil {
		t.Fatal(err)
	}
	if !again.IsRevoked(claims.ID) {
		t.Fatal("revocation forgotten after reload")
	}
	// And is pruned once the token could no longer verify anyway.
	f.now.Add(48 * time.Hour)
	if err := again.Prune(); err != nil || again.IsRevoked(claims.ID) {
		t.Fatalf("not pruned after exp: %v", err)
	}
}

func TestSecretIsGeneratedOnce(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "s.db"))
	defer db.Close()
	a, err := authn.LoadOrCreateSecret(db)
	if err != nil || len(a) != 32 {
		t.Fatalf("secret %d bytes, %v", len(a), err)
	}
	b, _ := authn.LoadOrCreateSecret(db)
	if string(a) != string(b) {
		t.Fatal("a second load generated a new secret")
	}
	if _, err := authn.NewTokens(authn.TokenConfig{Secret: []byte("short")}); err == nil {
		t.Fatal("a 5-byte secret was accepted")
	}
}

// bcrypt reads at most 72 bytes; the contract allows 256.
func TestLongPassword(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: true, RequestsPerSecond: -1}, authn.TokenConfig{})
	long := strings.Repeat("p", 256)
	f.register("alice", long)
	f.login("alice", long)
	// Two passwords sharing their first 72 bytes are still different.
	if r := f.do("POST", "/auth", jsonType, creds("alice", long[:255]+"q")); r.status != 401 {
		t.Fatalf("a different 256-byte password: %d", r.status)
	}
}

// Concurrent wrong guesses cannot slip past the failure limit.
func TestConcurrentFailuresAreLimited(t *testing.T) {
	f := newFixture(t, authn.ServiceConfig{OpenRegistration: true, RequestsPerSecond: -1}, authn.TokenConfig{})
	f.register("alice", "password1")
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := f.do("POST", "/auth", jsonType, creds("alice", "wrong-guess"))
			mu.Lock()
			counts[r.status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts[401] != 10 || counts[429] != 20 {
		t.Fatalf("statuses %v, want 10 checked (401) and 20 refused (429)", counts)
	}
}

// Rate limits key an IPv6 client by its /64: one host usually holds a
// whole /64 and could otherwise take a bucket per address.
func TestClientKey(t *testing.T) {
	for _, tc := range []struct{ remote, key string }{
		{"192.0.2.7:4000", "192.0.2.7"},
		{"[2001:db8:1:2:3:4:5:6]:4000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::9]:4001", "2001:db8:1:2::/64"},
		{"[2001:db8:1:3::1]:4000", "2001:db8:1:3::/64"},
		{"not an address", "not an address"},
	} {
		r := httptest.NewRequest("GET", "/ws", nil)
		r.RemoteAddr = tc.remote
		if got := authn.ClientKey(r); got != tc.key {
			t.Errorf("ClientKey(%s) = %q, want %q", tc.remote, got, tc.key)
		}
	}
}
