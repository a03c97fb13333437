package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// randomHex returns n random bytes in hex, for values a log must not hold.
func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestSIGTERMDrain: SIGTERM closes every socket with 1001 and exits 0
// within --drain-timeout, and every acked message, including those acked
// while the shutdown ran, is in the store for the next process.
func TestSIGTERMDrain(t *testing.T) {
	dir := t.TempDir()
	const drainTimeout = 5 * time.Second
	p := startChatd(t, dir, "--drain-timeout", drainTimeout.String(), "--rate-limit", "1000")

	const password = "drain-password-1"
	users := []string{"drain_alice", "drain_bob", "drain_carol"}
	tokens := make([]string, len(users))
	for i, u := range users {
		p.register(t, u, password)
		tokens[i] = p.login(t, u, password)
	}

	const (
		nSockets  = 20
		perSocket = 5 // messages before the shutdown
		streamers = 4 // sockets that keep sending through the shutdown
	)
	var (
		mu      sync.Mutex
		acked   []ack
		sent    = make(map[string]bool)
		refused []string
	)
	phase1 := make(chan struct{}, nSockets*perSocket)
	streamed := make(chan struct{}, 1<<16)
	clients := make([]*wsClient, nSockets)
	inLobby := func(i int) bool { return i%2 == 1 }
	for i := range nSockets {
		onFrame := func(f wsFrame) bool {
			switch f.typ() {
			case "ack":
				id := f.str("id")
				mu.Lock()
				acked = append(acked, ack{Room: f.str("room"), Seq: f.num("seq"), Text: id})
				mu.Unlock()
				if strings.HasPrefix(id, "p1/") {
					phase1 <- struct{}{}
				} else {
					select {
					case streamed <- struct{}{}:
					default:
					}
				}
				return true
			case "error":
				mu.Lock()
				refused = append(refused, fmt.Sprint(f))
				mu.Unlock()
				return true
			case "message", "presence":
				return true // live traffic of the shared rooms
			}
			return false
		}
		c := p.dial(t, tokens[i%len(tokens)], onFrame)
		clients[i] = c
		if inLobby(i) {
			if err := c.send(map[string]any{"type": "join", "room": "lobby"}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.expect("joined", 5*time.Second, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	roomOf := func(i, n int) string {
		if inLobby(i) && n%2 == 1 {
			return "lobby"
		}
		return "general"
	}
	send := func(c *wsClient, phase string, i, n int) error {
		text := fmt.Sprintf("%s/%d/%d", phase, i, n)
		mu.Lock()
		sent[text] = true
		mu.Unlock()
		return c.send(map[string]any{"type": "send", "room": roomOf(i, n), "text": text, "id": text})
	}
	for n := range perSocket {
		for i, c := range clients {
			if err := send(c, "p1", i, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.After(10 * time.Second)
	for range nSockets * perSocket {
		select {
		case <-phase1:
		case <-deadline:
			mu.Lock()
			n, r := len(acked), fmt.Sprint(refused)
			mu.Unlock()
			t.Fatalf("not every message was acked within 10s: %d acks, refused %s", n, r)
		}
	}

	// A few sockets keep sending while the server shuts down.
	var streaming sync.WaitGroup
	for i := range streamers {
		c := clients[i]
		streaming.Add(1)
		go func() {
			defer streaming.Done()
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-c.closed:
					return
				case <-tick.C:
				}
				if send(c, "p2", i, n) != nil {
					return
				}
			}
		}()
	}
	for range 20 {
		select {
		case <-streamed:
		case <-time.After(10 * time.Second):
			t.Fatal("the streaming sockets got no acks")
		}
	}

	// /readyz may answer 503 for the moment between the signal and the
	// listener's close; log what was seen, as that moment is short.
	readyz := make(chan []int, 1)
	go func() {
		var seen []int
		defer func() { readyz <- seen }()
		client := &http.Client{Timeout: time.Second}
		for {
			select {
			case <-p.exited:
				return
			default:
			}
			resp, err := client.Get(p.url("/readyz"))
			if err != nil {
				return
			}
			resp.Body.Close()
			if len(seen) == 0 || seen[len(seen)-1] != resp.StatusCode {
				seen = append(seen, resp.StatusCode)
			}
		}
	}()

	start := time.Now()
	p.signal(syscall.SIGTERM)
	for i, c := range clients {
		code, err := c.waitClosed(drainTimeout + time.Second)
		if err != nil {
			t.Fatalf("socket %d: %v", i, err)
		}
		if code == 1001 {
			continue
		}
		msg := fmt.Sprintf("socket %d closed with %d %q (%v), want 1001", i, code, c.closeReason, c.closeErr)
		t.Error(msg)
	}
	st, err := p.wait(drainTimeout + 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if st.ExitCode() != 0 {
		t.Errorf("chatd exited with %v after SIGTERM, want status 0", st)
	}
	// A second of slack for the signal's delivery and the process's exit.
	if took > drainTimeout+time.Second {
		t.Errorf("chatd took %v to exit after SIGTERM, over --drain-timeout %v", took, drainTimeout)
	}
	streaming.Wait()
	t.Logf("exited %v after SIGTERM; /readyz statuses seen during the drain: %v", took.Round(time.Millisecond), <-readyz)
	if _, err := p.waitLog(0, hasMessage("draining"), 0); err != nil {
		t.Errorf("no draining log line: %v", err)
	}
	if _, err := p.waitLog(0, hasMessage("stopped"), 0); err != nil {
		t.Errorf("no stopped log line: %v", err)
	}
	if line, err := p.waitLog(0, func(f map[string]any) bool { return f["level"] == "error" || f["level"] == "warn" }, 0); err == nil {
		t.Errorf("the drain logged a %v line: %v", line["level"], line)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(refused) > 0 {
		t.Errorf("sends were refused: %v", refused)
	}
	p2 := startChatd(t, dir)
	c := p2.dial(t, p2.login(t, users[0], password), nil)
	for _, room := range []string{"general", "lobby"} {
		stored, latest, err := c.replay(room)
		if err != nil {
			t.Fatalf("replay %s: %v", room, err)
		}
		checkStored(t, room, stored, acked, sent)
		if len(stored) == 0 || stored[len(stored)-1].Seq != latest {
			t.Errorf("room %s: joined says seq %d, replay ends at %v", room, latest, stored)
		}
		// Each socket's messages are stored in the order it sent them.
		lastN := make(map[string]int)
		for _, m := range stored {
			parts := strings.Split(m.Text, "/") // phase/socket/n
			if len(parts) != 3 {
				continue
			}
			key := parts[0] + "/" + parts[1]
			n, _ := strconv.Atoi(parts[2])
			if prev, ok := lastN[key]; ok && n <= prev {
				t.Errorf("room %s: %s stored after %s/%d (out of send order)", room, m.Text, key, prev)
			}
			lastN[key] = n
		}
	}
	n1, n2 := 0, 0
	for _, a := range acked {
		if strings.HasPrefix(a.Text, "p1/") {
			n1++
		} else {
			n2++
		}
	}
	t.Logf("%d acks before the shutdown and %d while streaming, all stored", n1, n2)
	p2.stop()
}

// TestSIGTERMFinishesInFlightRequests: a graceful shutdown answers the
// HTTP requests already in progress instead of dropping their connections.
func TestSIGTERMFinishesInFlightRequests(t *testing.T) {
	// A costly hash keeps the request in its handler for a while.
	p := startChatd(t, t.TempDir(), "--bcrypt-cost", "13")
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"username":"slow_sue","password":"slow-password"}`
	if _, err := fmt.Fprintf(conn, "POST /register HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", p.addr, len(body), body); err != nil {
		t.Fatal(err)
	}
	// The listener accepts in order: once a later connection is answered,
	// the first one has been accepted and belongs to the server.
	resp, err := httpClient.Get(p.url("/healthz"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	p.signal(syscall.SIGTERM)
	_ = conn.SetReadDeadline(time.Now().Add(procTimeout))
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the request in progress at SIGTERM got no response: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("the request in progress at SIGTERM got %s, want 201 (or 503)", resp.Status)
	}
	if st, err := p.wait(procTimeout); err != nil || st.ExitCode() != 0 {
		t.Errorf("chatd exited with %v (%v)", st, err)
	}
}

// TestLogsHoldNoSecrets: neither tokens (from any transport), passwords
// (right or wrong) nor the JWT secret reach the log, and a ?token= query
// is logged redacted.
func TestLogsHoldNoSecrets(t *testing.T) {
	secret := "jwt-secret-" + randomHex(t, 24)
	p := startChatd(t, t.TempDir(), "--jwt-secret", secret)

	user := "secretive_sam"
	password := "Pa55-" + randomHex(t, 12)
	wrong := "Wr0ng-" + randomHex(t, 12)
	p.register(t, user, password)
	tHeader := p.login(t, user, password)
	tProto := p.login(t, user, password)
	tQuery := p.login(t, user, password)

	status, body := postJSON(t, p.url("/auth/refresh"), nil, tHeader)
	if status != http.StatusOK {
		t.Fatalf("refresh: %d %s", status, body)
	}
	var refreshed struct{ Token string }
	if err := json.Unmarshal(body, &refreshed); err != nil || refreshed.Token == "" {
		t.Fatalf("refresh body %s: %v", body, err)
	}

	// Authorization header.
	cHeader := p.dial(t, tHeader, nil)

	// Sec-WebSocket-Protocol: the answer is chat.v1 alone.
	cProto, err := p.dialWS(t, dialOpts{header: http.Header{"Sec-WebSocket-Protocol": {"chat.v1, bearer." + tProto}}})
	if err != nil {
		t.Fatalf("dial with the token in Sec-WebSocket-Protocol: %v", err)
	}
	if got := cProto.resp.Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != "chat.v1" {
		t.Errorf("Sec-WebSocket-Protocol answered %q, want chat.v1 alone", got)
	}
	if w, err := cProto.next(5 * time.Second); err != nil || w.typ() != "welcome" {
		t.Fatalf("subprotocol socket: first frame %v (%v)", w, err)
	}

	// ?token= query, beside another parameter.
	cQuery, err := p.dialWS(t, dialOpts{query: "?token=" + url.QueryEscape(tQuery) + "&client=test"})
	if err != nil {
		t.Fatalf("dial with ?token=: %v", err)
	}
	if w, err := cQuery.next(5 * time.Second); err != nil || w.typ() != "welcome" {
		t.Fatalf("query socket: first frame %v (%v)", w, err)
	}

	// A refused query token, and credentials in the query of other paths.
	bogus := "bogus-token-" + randomHex(t, 16)
	if _, err := p.dialWS(t, dialOpts{query: "?token=" + bogus}); err == nil {
		t.Error("a bogus ?token= opened a socket")
	}
	resp, err := httpClient.Get(p.url("/healthz?access_token=" + url.QueryEscape(tQuery) + "&password=" + url.QueryEscape(password)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	// A failed login with a known wrong password, and with the right
	// password for an unknown user.
	if status, body := postJSON(t, p.url("/auth"), credentials{user, wrong}, ""); status != http.StatusUnauthorized {
		t.Errorf("login with a wrong password: %d %s", status, body)
	}
	if status, body := postJSON(t, p.url("/auth"), credentials{"nobody_here", password}, ""); status != http.StatusUnauthorized {
		t.Errorf("login of an unknown user: %d %s", status, body)
	}
	// A chat message, so the broker logs whatever it logs for one.
	if err := cQuery.send(map[string]any{"type": "send", "room": "general", "text": "hello", "id": 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := cQuery.expect("ack", 5*time.Second, func(f wsFrame) bool { return f.typ() != "error" }); err != nil {
		t.Fatal(err)
	}

	// Logout closes the header socket with 4003.
	if status, body := postJSON(t, p.url("/auth/logout"), nil, tHeader); status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", status, body)
	}
	if code, err := cHeader.waitClosed(5 * time.Second); err != nil || code != 4003 {
		t.Errorf("the logged-out socket closed with %d (%v), want 4003", code, err)
	}
	p.stop()

	logs := p.logs.String()
	secrets := map[string]string{
		"the jwt secret":            secret,
		"the password":              password,
		"the wrong password":        wrong,
		"the bogus query token":     bogus,
		"the refreshed token":       refreshed.Token,
		"the header token":          tHeader,
		"the subprotocol token":     tProto,
		"the query token":           tQuery,
		"the query token (escaped)": url.QueryEscape(tQuery),
	}
	for name, tok := range map[string]string{"header": tHeader, "subprotocol": tProto, "query": tQuery, "refreshed": refreshed.Token} {
		// The claims and the signature each identify the token; the
		// header segment is the same for every HS256 token.
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("the %s token is not a JWT: %q", name, tok)
		}
		secrets["the claims of the "+name+" token"] = parts[1]
		secrets["the signature of the "+name+" token"] = parts[2]
	}
	for _, name := range sortedKeys(secrets) {
		if strings.Contains(logs, secrets[name]) {
			t.Errorf("the log holds %s", name)
		}
	}
	for _, want := range []string{
		`"path":"/ws?client=test\u0026token=REDACTED"`,
		`"path":"/ws?token=REDACTED"`,
		`"path":"/healthz?access_token=REDACTED\u0026password=REDACTED"`,
	} {
		if !strings.Contains(logs, want) && !strings.Contains(logs, strings.ReplaceAll(want, `\u0026`, "&")) {
			t.Errorf("the log has no %s line", want)
		}
	}
	if !strings.Contains(logs, `"message":"failed login"`) {
		t.Errorf("the failed login was not logged at all")
	}
	if t.Failed() {
		t.Logf("log:\n%s", tail(logs, 6000))
	}
}

// TestSecretPersistsAcrossRestart: without --jwt-secret the generated key
// lives in the data dir, so a token outlives the process that issued it.
func TestSecretPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	p1 := startChatd(t, dir)
	p1.register(t, "restart_rita", "restart-password")
	tok := p1.login(t, "restart_rita", "restart-password")
	p1.stopWith(syscall.SIGINT) // SIGINT shuts down as gracefully as SIGTERM

	p2 := startChatd(t, dir)
	status, body := postJSON(t, p2.url("/auth/refresh"), nil, tok)
	if status != http.StatusOK {
		t.Errorf("refresh on the restarted chatd: %d %s", status, body)
	}
	p2.dial(t, tok, nil)

	// Control: a chatd with another data dir has another key.
	p3 := startChatd(t, t.TempDir())
	if status, body := postJSON(t, p3.url("/auth/refresh"), nil, tok); status != http.StatusUnauthorized {
		t.Errorf("refresh on a chatd with a fresh data dir: %d %s, want 401", status, body)
	}
	p2.stop()
	p3.stop()
}

// TestShortSecretRefused: a JWT secret under 32 bytes is refused, from the
// flag or the environment; environment variables configure chatd, and a
// flag wins over its variable.
func TestShortSecretRefused(t *testing.T) {
	dir := t.TempDir()
	const short = "tiny-s3cr3t"

	code, out := runChatd(t, nil, "", append(chatdArgs(dir), "--jwt-secret", short)...)
	requireCleanFailure(t, code, out, "32")
	if strings.Contains(out, short) {
		t.Errorf("the refusal echoes the secret: %s", out)
	}

	code, out = runChatd(t, []string{"CHATD_JWT_SECRET=" + short}, "", chatdArgs(dir)...)
	requireCleanFailure(t, code, out, "32")

	// CHATD_ADDR is read when there is no --addr...
	code, out = runChatd(t, []string{"CHATD_ADDR=bad-addr"}, "", "--data-dir", dir, "--log-level", "debug")
	requireCleanFailure(t, code, out, "bad-addr")

	// ...and the flags win over both bad variables.
	long := "a-long-enough-secret-" + randomHex(t, 16)
	p := startChatdEnv(t, dir, []string{"CHATD_ADDR=bad-addr", "CHATD_JWT_SECRET=" + short}, "--jwt-secret", long)
	p.register(t, "env_erin", "env-password")
	tok := p.login(t, "env_erin", "env-password")
	p.stop()

	// A good secret from the environment is the one used: a chatd with
	// another data dir and that secret as a flag accepts the token.
	q := startChatdEnv(t, t.TempDir(), []string{"CHATD_JWT_SECRET=" + long})
	if status, body := postJSON(t, q.url("/auth/refresh"), nil, tok); status != http.StatusOK {
		t.Errorf("refresh with the secret from CHATD_JWT_SECRET: %d %s", status, body)
	}
	q.stop()
}

// TestListeningLineAtEveryLevel: with --addr 127.0.0.1:0 the listening
// line is the only way to learn the address, so it is written whatever
// --log-level says (startChatd reads addr from it).
func TestListeningLineAtEveryLevel(t *testing.T) {
	for _, level := range []string{"warn", "error"} {
		p := startChatd(t, t.TempDir(), "--log-level", level)
		resp, err := http.Get(p.url("/healthz"))
		if err != nil {
			t.Fatalf("--log-level %s: %v", level, err)
		}
		resp.Body.Close()
		p.stop()
	}
}

// TestShortSessionMax: --session-max may be shorter than --token-ttl. It
// bounds refreshes: once it has passed, the login's token (which lives its
// full TTL) is refused by /auth/refresh with session_expired.
func TestShortSessionMax(t *testing.T) {
	p := startChatd(t, t.TempDir(), "--session-max", "1s")
	p.register(t, "short_sam", "sam-password")
	tok := p.login(t, "short_sam", "sam-password")
	// The session ends at auth_time + 1 s (auth_time is whole seconds).
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		AuthTime int64 `json:"auth_time"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.AuthTime == 0 {
		t.Fatalf("token payload %s: %v", payload, err)
	}
	time.Sleep(time.Until(time.Unix(claims.AuthTime+1, 0))) // the clock must pass the session's end
	status, body := postJSON(t, p.url("/auth/refresh"), nil, tok)
	var e struct{ Error string }
	_ = json.Unmarshal(body, &e)
	if status != http.StatusUnauthorized || e.Error != "session_expired" {
		t.Fatalf("refresh after --session-max: %d %s, want 401 session_expired", status, body)
	}
	p.stop()
}

// TestWSRateLimitFlag: --ws-rate-limit (here from its variable) reaches
// the broker: at 0.5 a second (burst 1), the second /ws request gets 429
// with Retry-After.
func TestWSRateLimitFlag(t *testing.T) {
	p := startChatdEnv(t, t.TempDir(), []string{"CHATD_WS_RATE_LIMIT=0.5"})
	var last *http.Response
	for range 2 {
		resp, err := http.Get(p.url("/ws")) // no token: 401 while allowed
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		last = resp
	}
	if last.StatusCode != http.StatusTooManyRequests || last.Header.Get("Retry-After") == "" {
		t.Fatalf("second /ws request in a burst of 1: %d, Retry-After %q; want 429", last.StatusCode, last.Header.Get("Retry-After"))
	}
	p.stop()
}

// TestEnvParseErrorIsReported: a CHATD_ variable that does not parse is
// explained, and a flag given for it wins.
func TestEnvParseErrorIsReported(t *testing.T) {
	dir := t.TempDir()
	code, out := runChatd(t, []string{"CHATD_TOKEN_TTL=bogus"}, "", chatdArgs(dir)...)
	requireCleanFailure(t, code, out, "CHATD_TOKEN_TTL")
	p := startChatdEnv(t, dir, []string{"CHATD_TOKEN_TTL=bogus"}, "--token-ttl", "1m")
	p.stop()
}

// TestCorruptDataDir: an unusable data dir stops chatd with an error
// message, not a panic.
func TestCorruptDataDir(t *testing.T) {
	garbage := make([]byte, 64<<10)
	if _, err := rand.Read(garbage); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"random bytes": garbage,
		"a text file":  []byte("this is not a chatd database\n"),
		"a page of 0xff": func() []byte {
			b := make([]byte, 4096)
			for i := range b {
				b[i] = 0xff
			}
			return b
		}(),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "chatd.db"), content, 0o600); err != nil {
				t.Fatal(err)
			}
			code, out := runChatd(t, nil, "", chatdArgs(dir)...)
			requireCleanFailure(t, code, out, "chatd.db")
		})
	}
	t.Run("data dir is a file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "not-a-dir")
		if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out := runChatd(t, nil, "", chatdArgs(file)...)
		requireCleanFailure(t, code, out, "not-a-dir")
	})
}

// TestUserAdd: `chatd user add` creates an account a server on the same
// data dir accepts, and refuses what /register would refuse.
func TestUserAdd(t *testing.T) {
	dir := t.TempDir()
	add := func(name, stdin string) (int, string) {
		return runChatd(t, nil, stdin, "user", "add", "--data-dir", dir, "--bcrypt-cost", "4", name)
	}
	if code, out := add("carol_ops", "correct horse battery\r\nthe second line is not read\n"); code != 0 {
		t.Fatalf("user add carol_ops: status %d: %s", code, out)
	}
	if code, out := add("dave", "no-final-newline"); code != 0 {
		t.Fatalf("user add dave (password without a newline): status %d: %s", code, out)
	}
	for _, bad := range []string{"no", "bad name", "x/../y", strings.Repeat("a", 33)} {
		code, out := add(bad, "a-good-password\n")
		requireCleanFailure(t, code, out)
		if !strings.Contains(strings.ToLower(out), "user") {
			t.Errorf("user add %q: the refusal does not say what is wrong: %s", bad, out)
		}
	}
	code, out := add("erin", "short\n")
	requireCleanFailure(t, code, out, "password")
	code, out = add("erin", "")
	requireCleanFailure(t, code, out, "password")
	code, out = add("carol_ops", "another-password\n")
	requireCleanFailure(t, code, out, "carol_ops")

	p := startChatd(t, dir)
	tok := p.login(t, "carol_ops", "correct horse battery")
	p.dial(t, tok, nil)
	p.login(t, "dave", "no-final-newline")
	if status, body := postJSON(t, p.url("/auth"), credentials{"carol_ops", "correct horse battery\r"}, ""); status != http.StatusUnauthorized {
		t.Errorf("the line ending became part of the password: %d %s", status, body)
	}
	if status, _ := postJSON(t, p.url("/auth"), credentials{"erin", "a-good-password"}, ""); status != http.StatusUnauthorized {
		t.Errorf("the refused user erin can log in: %d", status)
	}

	// While the server holds the data dir, user add hands the user to it,
	// flags after the name included, and the server refuses what it must.
	if code, out := runChatd(t, nil, "frank-password\n", "user", "add", "frank", "--data-dir", dir); code != 0 {
		t.Fatalf("user add frank beside the running chatd: status %d: %s", code, out)
	}
	p.login(t, "frank", "frank-password")
	code, out = add("frank", "other-password\n")
	requireCleanFailure(t, code, out, "taken")
	code, out = add("grace", "short\n")
	requireCleanFailure(t, code, out, "password")
	p.stop()

	// A socket file a crashed chatd left behind is not a server: user add
	// opens the store itself.
	if err := os.WriteFile(filepath.Join(dir, "admin", "chatd.sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := add("heidi", "heidi-password\n"); code != 0 {
		t.Fatalf("user add with a stale socket file: status %d: %s", code, out)
	}
}

// TestNATSNotBuilt: cluster mode is refused at start with a clear message.
func TestNATSNotBuilt(t *testing.T) {
	code, out := runChatd(t, nil, "", append(chatdArgs(t.TempDir()), "--nats", "nats://127.0.0.1:4222")...)
	requireCleanFailure(t, code, out, "cluster mode is not built yet")
	code, out = runChatd(t, []string{"CHATD_NATS=nats://127.0.0.1:4222"}, "", chatdArgs(t.TempDir())...)
	requireCleanFailure(t, code, out, "cluster mode is not built yet")
}

// sortedKeys is for stable failure messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
