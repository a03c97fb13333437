package assets

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, body
}

func checkSecurityHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
			"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
		"Cache-Control":          "no-cache",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestHandlerServesPages(t *testing.T) {
	srv := newServer(t)
	tests := []struct {
		path, contentType, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script src="/app.js" defer></script>`},
		{"/index.html", "text/html; charset=utf-8", `id="login-form"`},
		{"/app.js", "text/javascript; charset=utf-8", "new WebSocket("},
		{"/style.css", "text/css; charset=utf-8", ".messages"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := do(t, http.MethodGet, srv.URL+tc.path, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d, want 200", resp.StatusCode)
			}
			checkSecurityHeaders(t, resp)
			if got := resp.Header.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type = %q, want %q", got, tc.contentType)
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("body does not contain %q", tc.contains)
			}
		})
	}
}

func TestHandlerHeadAndRevalidation(t *testing.T) {
	srv := newServer(t)

	resp, body := do(t, http.MethodHead, srv.URL+"/", nil)
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("HEAD / = %d with %d body bytes, want 200 and none", resp.StatusCode, len(body))
	}
	if resp.ContentLength <= 0 {
		t.Errorf("HEAD / Content-Length = %d, want the page size", resp.ContentLength)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on /")
	}

	resp, body = do(t, http.MethodGet, srv.URL+"/", http.Header{"If-None-Match": {etag}})
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Errorf("GET / with matching If-None-Match = %d, want 304 without body", resp.StatusCode)
	}
	checkSecurityHeaders(t, resp)

	resp, _ = do(t, http.MethodGet, srv.URL+"/", http.Header{"If-None-Match": {`"stale"`}})
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET / with stale If-None-Match = %d, want 200", resp.StatusCode)
	}
}

func decodeError(t *testing.T, resp *http.Response, body []byte) (code, message string) {
	t.Helper()
	if got := resp.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", got)
	}
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	return e.Error, e.Message
}

func TestHandlerUnknownPathIs404JSON(t *testing.T) {
	srv := newServer(t)
	for _, path := range []string{"/nope", "/app.js/", "/assets.go", "/favicon.ico", "/../go.mod"} {
		t.Run(path, func(t *testing.T) {
			if resp, _ := do(t, http.MethodPost, srv.URL+path, nil); resp.StatusCode != http.StatusNotFound {
				t.Fatalf("POST: status = %d, want 404 (not 405: there is no such path)", resp.StatusCode)
			}
			resp, body := do(t, http.MethodGet, srv.URL+path, nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("status = %d, want 404", resp.StatusCode)
			}
			checkSecurityHeaders(t, resp)
			code, msg := decodeError(t, resp, body)
			if code != "not_found" || msg == "" {
				t.Errorf("error = %q, message = %q; want not_found with a message", code, msg)
			}
		})
	}
}

func TestHandlerRejectsOtherMethods(t *testing.T) {
	srv := newServer(t)
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		t.Run(method, func(t *testing.T) {
			resp, body := do(t, method, srv.URL+"/", nil)
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("status = %d, want 405", resp.StatusCode)
			}
			if got := resp.Header.Get("Allow"); got != "GET, HEAD" {
				t.Errorf("Allow = %q, want %q", got, "GET, HEAD")
			}
			checkSecurityHeaders(t, resp)
			if code, _ := decodeError(t, resp, body); code != "method_not_allowed" {
				t.Errorf("error = %q, want method_not_allowed", code)
			}
		})
	}
}

func readEmbedded(t *testing.T, name string) string {
	t.Helper()
	b, err := files.ReadFile(name)
	if err != nil {
		t.Fatalf("read embedded %s: %v", name, err)
	}
	return string(b)
}

// TestPageHasNoInlineCode keeps the page within its own CSP: no inline
// script, style or event handler, and no third-party resource.
func TestPageHasNoInlineCode(t *testing.T) {
	html := readEmbedded(t, "index.html")

	scripts := regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script\s*>`).FindAllStringSubmatch(html, -1)
	if len(scripts) == 0 {
		t.Error("index.html loads no script")
	}
	for _, s := range scripts {
		if !strings.Contains(s[1], `src=`) || strings.TrimSpace(s[2]) != "" {
			t.Errorf("inline script in index.html: %q", s[0])
		}
	}
	forbidden := map[string]*regexp.Regexp{
		"<style> element":       regexp.MustCompile(`(?i)<style\b`),
		"style attribute":       regexp.MustCompile(`(?i)\sstyle\s*=`),
		"event handler":         regexp.MustCompile(`(?i)\son[a-z]+\s*=`),
		"javascript: URL":       regexp.MustCompile(`(?i)javascript:`),
		"remote resource":       regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`),
		"remote CSS import/url": regexp.MustCompile(`(?i)url\(\s*["']?(https?:)?//`),
	}
	for what, re := range forbidden {
		if loc := re.FindStringIndex(html); loc != nil {
			t.Errorf("index.html has a %s: %q", what, html[loc[0]:loc[1]])
		}
	}
	if css := readEmbedded(t, "style.css"); forbidden["remote CSS import/url"].MatchString(css) || strings.Contains(css, "@import") {
		t.Error("style.css loads a remote resource")
	}
}

// TestScriptNeverWritesMarkup checks that app.js builds the page only with
// DOM calls, so user data can never be parsed as HTML.
func TestScriptNeverWritesMarkup(t *testing.T) {
	js := readEmbedded(t, "app.js")
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "createContextualFragment"} {
		if strings.Contains(js, sink) {
			t.Errorf("app.js uses %s", sink)
		}
	}
	for _, want := range []string{"textContent", "'chat.v1'", "'bearer.' +", "window.chatdDebug"} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
	if strings.Contains(js, "?token=") {
		t.Error("app.js puts the token in a URL")
	}
}

// TestPageHasTestIDs guards the element ids browser tests rely on.
func TestPageHasTestIDs(t *testing.T) {
	html := readEmbedded(t, "index.html")
	seen := map[string]int{}
	for _, m := range regexp.MustCompile(`\sid="([^"]+)"`).FindAllStringSubmatch(html, -1) {
		seen[m[1]]++
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("id %q appears %d times", id, n)
		}
	}
	for _, id := range []string{
		"login-form", "username", "password", "login-btn", "register-btn", "auth-error",
		"chat", "rooms", "join-room", "join-btn", "leave-btn", "messages", "message-input",
		"send-btn", "who", "countdown", "status", "logout-btn", "notice",
	} {
		if seen[id] == 0 {
			t.Errorf("index.html lacks id %q", id)
		}
	}
	for _, label := range []string{`for="username"`, `for="password"`, `for="message-input"`, `for="join-room"`} {
		if !strings.Contains(html, label) {
			t.Errorf("index.html lacks <label %s>", label)
		}
	}
	if !regexp.MustCompile(`id="chat"[^>]*\shidden`).MatchString(html) {
		t.Error("#chat is not hidden before login")
	}
}

func ExampleHandler() {
	mux := http.NewServeMux()
	// "/" is the catch-all: API routes registered beside it take precedence.
	mux.Handle("/", Handler())

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))

	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/missing", nil))
	fmt.Println(rec.Code, rec.Body.String())
	// Output:
	// 200 text/html; charset=utf-8
	// 404 {"error":"not_found","message":"no such page"}
}
