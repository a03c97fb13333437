package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/assets"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The browser test drives the bundled page in Debian's headless Chromium:
// two users in two separate browser contexts register, chat, join a room,
// see each other's presence, survive a short token by refreshing it in
// place, and log out. It takes a screenshot of the chat: the README's
// docs/screenshot.png with CHATD_SCREENSHOT set to that path, else into a
// temporary dir, so that a test run leaves the tree as it was.
//
// It skips only when no Chromium is installed and CI is unset; .ci/run
// installs Chromium, so on CI it always runs.

const (
	browserTTL     = 8 * time.Second // short, so the page must refresh during the test
	browserWarning = 3 * time.Second // `expiring` comes 3 s before the close (8 s > 2*3 s, so it is sent)
	xssPayload     = `<img src=x onerror="window.pwned=1">`
)

func TestBrowserChat(t *testing.T) {
	chromium := findChromium(t)

	a, _ := testApp(t, func(c *Config) {
		c.TokenTTL = browserTTL
		c.ExpiryWarning = browserWarning
		c.SessionMax = time.Hour
	})
	// Serve the same handler behind a recorder, to see every URL the
	// browsers ask for and every WebSocket handshake.
	reqs := &requestLog{}
	srv := httptest.NewServer(reqs.wrap(a.handler))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})

	checkCSP(t, srv.URL)

	// A hang anywhere ends the test instead of the whole package run.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 700),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}

	alice := openTab(t, browserCtx, "alice")
	defer alice.close()
	bob := openTab(t, browserCtx, "bob")
	defer bob.close()

	// The page as the browser got it carries the CSP.
	resp := alice.navigate(srv.URL + "/")
	if got := header(resp.Headers, "Content-Security-Policy"); got != assets.ContentSecurityPolicy {
		t.Errorf("the browser got / with Content-Security-Policy %q, want %q", got, assets.ContentSecurityPolicy)
	}
	bob.navigate(srv.URL + "/")

	// Register (which logs in) and land in #general, connected.
	alice.register("password1")
	bob.register("password1")
	origExp := max(alice.welcomeExp(), bob.welcomeExp())

	// Presence in #general: each sees both.
	alice.waitWho("alice", "bob")
	bob.waitWho("alice", "bob")

	// Chat in #general.
	alice.send("Hi Bob! Welcome to chatd.")
	bob.waitMessage("alice", "Hi Bob! Welcome to chatd.")
	bob.send("Hey Alice, glad to be here.")
	alice.waitMessage("bob", "Hey Alice, glad to be here.")

	// Another room: alice first, then bob; alice sees bob arrive.
	alice.join("random")
	alice.waitWho("alice")
	bob.join("random")
	alice.waitWho("alice", "bob")
	bob.waitWho("alice", "bob")
	bob.send("Anyone up for lunch?")
	alice.waitMessage("bob", "Anyone up for lunch?")

	// Markup in a message is text: bob reads it from #general first (an
	// unread badge on #random), then in #random.
	bob.selectRoom("general")
	alice.send(xssPayload)
	alice.waitMessage("alice", xssPayload)
	bob.waitJS("an unread badge of 1 on #random",
		`(() => { const b = document.querySelector('#rooms li.room[data-room="random"] .unread');
			return !!b && !b.hidden && b.textContent === '1'; })()`, 5*time.Second)
	bob.selectRoom("random")
	bob.waitMessage("alice", xssPayload)
	for _, tab := range []*browserTab{alice, bob} {
		// Any <img> in the document (the page itself has none) means markup got in.
		ran := evalJS[string](tab, `JSON.stringify({pwned: typeof window.pwned, imgs: document.querySelectorAll('img').length})`)
		if ran != `{"pwned":"undefined","imgs":0}` {
			t.Errorf("%s: a message with markup was rendered as HTML: %s", tab.name, ran)
		}
	}

	// Refresh without a reconnect: each page got `expiring`, refreshed its
	// token and kept the socket it opened at login.
	for _, tab := range []*browserTab{alice, bob} {
		tab.waitJS("a token refresh", `window.chatdDebug.refreshes >= 1`, browserTTL+5*time.Second)
		tab.checkOneSocket()
	}
	alice.selectRoom("general")
	bob.selectRoom("general")
	// Past the exp of the tokens both users logged in with, the sockets
	// still carry messages both ways.
	time.Sleep(time.Until(time.Unix(origExp, 0).Add(500 * time.Millisecond)))
	alice.send("Still here after my first token expired.")
	bob.waitMessage("alice", "Still here after my first token expired.")
	bob.send("Same here, no reconnect needed.")
	alice.waitMessage("bob", "Same here, no reconnect needed.")
	for _, tab := range []*browserTab{alice, bob} {
		tab.checkOneSocket()
		if exps := tab.refreshedExps(); len(exps) == 0 || exps[len(exps)-1] <= origExp {
			t.Errorf("%s: refreshed frames with exp %v, want one past %d", tab.name, exps, origExp)
		}
	}
	if n := reqs.upgrades(); n != 2 {
		t.Errorf("the server saw %d WebSocket handshakes, want 2 (one per user, no reconnect)", n)
	}

	// The artifact: alice's chat view with messages and presence.
	alice.waitWho("alice", "bob")
	shot := os.Getenv("CHATD_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "screenshot.png")
	}
	alice.screenshot(shot)

	// Logout returns to the login form; bob sees alice leave.
	alice.logout()
	bob.waitWho("bob")
	bob.logout()

	// Tokens never travel in a URL; the page sends its token as a
	// WebSocket subprotocol instead.
	for _, u := range reqs.urls() {
		if strings.Contains(u, "token=") {
			t.Errorf("the server got a request URL with a token: %s", redact(u))
		}
	}
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	for _, tab := range []*browserTab{alice, bob} {
		tab.mu.Lock()
		urls, protos, problems := slices.Clone(tab.wsURLs), slices.Clone(tab.wsProtocols), slices.Clone(tab.problems)
		tab.mu.Unlock()
		if len(urls) != 1 || urls[0] != wsURL {
			for i := range urls {
				urls[i] = redact(urls[i])
			}
			t.Errorf("%s: the page opened WebSockets %q, want one to %s", tab.name, urls, wsURL)
		}
		for _, p := range protos {
			if !strings.Contains(p, "chat.v1") || !strings.Contains(p, "bearer.") {
				t.Errorf("%s: Sec-WebSocket-Protocol %q, want chat.v1 and a bearer.<token> entry", tab.name, p)
			}
		}
		for _, p := range problems {
			t.Errorf("%s: %s", tab.name, p)
		}
	}
}

// findChromium returns the path of a Chromium or Chrome binary. Without
// one it skips, unless CI is set: CI installs Chromium, so there a missing
// browser is a failure.
func findChromium(t *testing.T) string {
	t.Helper()
	names := []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "" {
		t.Skipf("browser test skipped: none of %v is on PATH (install Debian's chromium package to run it; with CI set this is a failure)", names)
	}
	t.Fatalf("CI is set but none of %v is on PATH; .ci/run must install chromium", names)
	return ""
}

// checkCSP asserts that a plain GET / carries the page's CSP.
func checkCSP(t *testing.T, base string) {
	t.Helper()
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != 200 || csp == "" {
		t.Fatalf("GET /: %d with Content-Security-Policy %q", resp.StatusCode, csp)
	}
	for _, weak := range []string{"unsafe-inline", "unsafe-eval", "*"} {
		if strings.Contains(csp, weak) {
			t.Errorf("GET /: Content-Security-Policy %q allows %s", csp, weak)
		}
	}
}

// requestLog records what reaches the server.
type requestLog struct {
	mu       sync.Mutex
	uris     []string
	wsUpgrds int
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.uris = append(l.uris, r.URL.RequestURI())
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			l.wsUpgrds++
		}
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (l *requestLog) urls() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.uris)
}

func (l *requestLog) upgrades() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.wsUpgrds
}

// browserTab is one user's page, in a browser context of its own (its own
// cookies, storage and JS state).
type browserTab struct {
	t      *testing.T
	name   string
	ctx    context.Context
	cancel context.CancelFunc

	mu          sync.Mutex
	wsURLs      []string
	wsProtocols []string
	welcome     int64   // exp of the welcome frame
	refreshed   []int64 // exp of each refreshed frame
	problems    []string
}

func openTab(t *testing.T, browserCtx context.Context, name string) *browserTab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	b := &browserTab{t: t, name: name, ctx: ctx, cancel: cancel}
	// The first run creates the tab; it must not carry a timeout.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1000, 700)); err != nil {
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	if err := chromedp.Listen(ctx, b.onEvent); err != nil {
		t.Fatalf("%s: listen: %v", name, err)
	}
	return b
}

func (b *browserTab) close() { b.cancel() }

// onEvent runs in the tab's read loop: record and return.
func (b *browserTab) onEvent(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventWebSocketCreated:
		b.wsURLs = append(b.wsURLs, ev.URL)
	case *network.EventWebSocketWillSendHandshakeRequest:
		if ev.Request != nil {
			b.wsProtocols = append(b.wsProtocols, header(ev.Request.Headers, "Sec-WebSocket-Protocol"))
		}
	case *network.EventWebSocketFrameReceived:
		if ev.Response == nil {
			return
		}
		var f struct {
			Type string `json:"type"`
			Exp  int64  `json:"exp"`
		}
		if json.Unmarshal(ev.Response.PayloadData, &f) != nil {
			return
		}
		switch f.Type {
		case "welcome":
			b.welcome = f.Exp
		case "refreshed":
			b.refreshed = append(b.refreshed, f.Exp)
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			text += " " + d.Exception.Description
		}
		b.problems = append(b.problems, fmt.Sprintf("uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, text))
	case *cdplog.EventEntryAdded:
		if e := ev.Entry; e != nil && e.Level == cdplog.EntryLevelError {
			b.problems = append(b.problems, fmt.Sprintf("console error (%s): %s %s", e.Source, e.Text, e.URL))
		}
	}
}

func (b *browserTab) refreshedExps() []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.refreshed)
}

// welcomeExp is the exp of the token the socket was opened with.
func (b *browserTab) welcomeExp() int64 {
	b.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		exp := b.welcome
		b.mu.Unlock()
		if exp != 0 {
			return exp
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: no welcome frame seen", b.name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// do runs steps with a deadline and fails the test with the page's state.
func (b *browserTab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %s: %v\npage: %s", b.name, what, err, b.state())
	}
}

// waitJS waits until the JS expression is truthy.
func (b *browserTab) waitJS(what, expr string, timeout time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		b.t.Fatalf("%s: waiting for %s: %v\npage: %s", b.name, what, err, b.state())
	}
}

func evalJS[T any](b *browserTab, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("%s: evaluate %s: %v", b.name, expr, err)
	}
	return v
}

// state describes the page for a failure message.
func (b *browserTab) state() string {
	ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		auth: !document.getElementById('auth').hidden,
		authError: document.getElementById('auth-error').textContent,
		notice: document.getElementById('notice').textContent,
		status: document.getElementById('status').textContent,
		room: document.getElementById('room-title').textContent,
		rooms: [...document.querySelectorAll('#rooms li.room')].map(li =>
			li.dataset.room + (li.classList.contains('active') ? '*' : '') + ' ' + li.querySelector('.unread').textContent),
		who: [...document.querySelectorAll('#who li')].map(li => li.textContent),
		messages: [...document.querySelectorAll('#messages li.msg')].map(li =>
			li.dataset.seq + ' ' + li.querySelector('.from').textContent + ': ' + li.querySelector('.text').textContent),
		debug: window.chatdDebug && {socketOpens: chatdDebug.socketOpens, refreshes: chatdDebug.refreshes},
	})`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return s
}

func (b *browserTab) navigate(url string) *network.Response {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		b.t.Fatalf("%s: open %s: %v", b.name, url, err)
	}
	if resp.Status != 200 {
		b.t.Fatalf("%s: open %s: HTTP %d", b.name, url, resp.Status)
	}
	return resp
}

// register signs the user up with the form; the page then logs in.
func (b *browserTab) register(password string) {
	b.t.Helper()
	b.do("register",
		chromedp.WaitVisible(chromedp.ID("login-form")),
		chromedp.SendKeys(chromedp.ID("username"), b.name),
		chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("register-btn")),
	)
	b.waitJS("the chat view, connected, in #general", fmt.Sprintf(`
		!document.getElementById('chat').hidden && document.getElementById('auth').hidden &&
		document.getElementById('status').dataset.state === 'connected' &&
		document.getElementById('whoami').textContent === %s &&
		document.getElementById('room-title').textContent === '#general' &&
		window.chatdDebug.socketOpens === 1`, jsString(b.name)), 10*time.Second)
}

// send types text into the composer and presses Send.
func (b *browserTab) send(text string) {
	b.t.Helper()
	b.do("send "+text,
		chromedp.SendKeys(chromedp.ID("message-input"), text),
		chromedp.Click(chromedp.ID("send-btn")),
	)
	b.waitJS("the composer to empty after sending", `document.getElementById('message-input').value === ''`, 5*time.Second)
}

// waitMessage waits for a message from `from` with exactly this text, shown
// in the current room.
func (b *browserTab) waitMessage(from, text string) {
	b.t.Helper()
	b.waitJS(fmt.Sprintf("the message %q from %s", text, from), fmt.Sprintf(`
		[...document.querySelectorAll('#messages li.msg[data-seq]')].some(li =>
			li.querySelector('.from')?.textContent === %s && li.querySelector('.text')?.textContent === %s &&
			li.querySelector('.time')?.textContent !== '')`, jsString(from), jsString(text)), 10*time.Second)
}

// waitWho waits until the presence list of the current room is exactly users.
func (b *browserTab) waitWho(users ...string) {
	b.t.Helper()
	want, _ := json.Marshal(users)
	b.waitJS(fmt.Sprintf("presence %s", want), fmt.Sprintf(`
		JSON.stringify([...document.querySelectorAll('#who li')].map(li => li.textContent).sort()) === %s`,
		jsString(string(want))), 10*time.Second)
}

func (b *browserTab) join(room string) {
	b.t.Helper()
	b.do("join "+room,
		chromedp.SendKeys(chromedp.ID("join-room"), room),
		chromedp.Click(chromedp.ID("join-btn")),
	)
	b.waitCurrent(room)
}

func (b *browserTab) selectRoom(room string) {
	b.t.Helper()
	b.do("select "+room, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#rooms li.room[data-room=%q] button`, room))))
	b.waitCurrent(room)
}

func (b *browserTab) waitCurrent(room string) {
	b.t.Helper()
	b.waitJS("room #"+room, fmt.Sprintf(`
		document.querySelector('#rooms li.room.active')?.dataset.room === %s &&
		document.getElementById('room-title').textContent === %s`, jsString(room), jsString("#"+room)), 10*time.Second)
}

// checkOneSocket asserts that the page is connected on the one socket it
// opened at login.
func (b *browserTab) checkOneSocket() {
	b.t.Helper()
	got := evalJS[string](b, `JSON.stringify({opens: chatdDebug.socketOpens, status: document.getElementById('status').dataset.state})`)
	if got != `{"opens":1,"status":"connected"}` {
		b.t.Errorf("%s: %s, want one socket, still connected (refreshed without a reconnect)\npage: %s", b.name, got, b.state())
	}
}

func (b *browserTab) screenshot(path string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("%s: screenshot: %v", b.name, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.t.Fatal(err)
	}
	// Write and rename, so a reader never sees half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("wrote %s (%d bytes)", path, len(png))
}

// logout presses Logout and waits for the login form.
func (b *browserTab) logout() {
	b.t.Helper()
	b.do("logout", chromedp.Click(chromedp.ID("logout-btn")))
	b.waitJS("the login form after logout", `
		document.getElementById('chat').hidden && !document.getElementById('auth').hidden &&
		document.getElementById('login-form').offsetParent !== null &&
		document.querySelectorAll('#messages li').length === 0 &&
		document.getElementById('notice').textContent === 'You have logged out.'`, 10*time.Second)
}

// header looks a header up case-insensitively in a CDP header map.
func header(h network.Headers, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			s, _ := v.(string)
			return s
		}
	}
	return ""
}

// redact cuts a token out of a URL for a failure message.
func redact(u string) string {
	if i := strings.Index(u, "token="); i >= 0 {
		return u[:i+len("token=")] + "..."
	}
	return u
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
