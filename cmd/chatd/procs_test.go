package main

// Helpers for the tests that run chatd as a child process (process_test.go,
// crash_test.go): the binary is built once in TestMain, each test starts it
// on 127.0.0.1:0 with its own data dir, reads the chosen address from the
// JSON log on stderr and talks to it over real HTTP and WebSockets.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// chatdBin is the chatd binary built by TestMain.
var chatdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatd-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir for the chatd binary:", err)
		os.Exit(1)
	}
	chatdBin = filepath.Join(dir, "chatd")
	build := exec.Command("go", "build", "-o", chatdBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build chatd:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// procTimeout bounds every wait on a child process, so a hung chatd fails
// the test instead of the whole run.
const procTimeout = 15 * time.Second

// childEnv is the test's environment without any CHATD_ variable (which
// would silently configure the child), plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHATD_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// logLines collects a child's stderr and lets tests wait for a line.
type logLines struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	lines   []string
	changed chan struct{} // closed and replaced whenever a line arrives
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	l.partial = append(l.partial, p...)
	grew := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		grew = true
	}
	if grew {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// String returns everything written so far.
func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// find returns the first JSON log line from index from on whose fields
// satisfy match, its index, and a channel that is closed when more lines
// arrive (for a caller that found nothing yet).
func (l *logLines) find(from int, match func(map[string]any) bool) (map[string]any, int, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := from; i < len(l.lines); i++ {
		var fields map[string]any
		if json.Unmarshal([]byte(l.lines[i]), &fields) == nil && match(fields) {
			return fields, i, nil
		}
	}
	return nil, len(l.lines), l.changed
}

// hasMessage matches a log line by its message field.
func hasMessage(msg string) func(map[string]any) bool {
	return func(f map[string]any) bool { return f["message"] == msg }
}

// chatdProc is one running chatd.
type chatdProc struct {
	t       testing.TB
	cmd     *exec.Cmd
	addr    string // host:port it listens on
	dataDir string
	logs    *logLines
	exited  chan struct{} // closed once the process has exited and stderr is drained
	state   *os.ProcessState
}

// chatdArgs are the flags every served test process gets before its own.
func chatdArgs(dataDir string) []string {
	return []string{"--addr", "127.0.0.1:0", "--data-dir", dataDir, "--bcrypt-cost", "4", "--log-level", "debug"}
}

// launch starts chatd with args and env (added to the test's, minus CHATD_
// variables) without waiting for anything.
func launch(t testing.TB, env []string, args ...string) *chatdProc {
	t.Helper()
	p := &chatdProc{t: t, logs: newLogLines(), exited: make(chan struct{})}
	p.cmd = exec.Command(chatdBin, args...)
	p.cmd.Env = childEnv(env...)
	p.cmd.Stderr = p.logs
	p.cmd.Stdout = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start chatd: %v", err)
	}
	go func() {
		_ = p.cmd.Wait() // the exit status is read from ProcessState
		p.state = p.cmd.ProcessState
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("chatd (pid %d) stderr:\n%s", p.cmd.Process.Pid, tail(p.logs.String(), 8000))
		}
	})
	return p
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// startChatd starts chatd serving dataDir on a free port, with args after
// the common ones (a later flag wins), and waits until it listens.
func startChatd(t testing.TB, dataDir string, args ...string) *chatdProc {
	t.Helper()
	return startChatdEnv(t, dataDir, nil, args...)
}

// startChatdEnv is startChatd with extra environment variables.
func startChatdEnv(t testing.TB, dataDir string, env []string, args ...string) *chatdProc {
	t.Helper()
	p := launch(t, env, append(chatdArgs(dataDir), args...)...)
	p.dataDir = dataDir
	line, err := p.waitLog(0, hasMessage("chatd listening"), procTimeout)
	if err != nil {
		t.Fatalf("chatd did not start: %v\nstderr:\n%s", err, tail(p.logs.String(), 4000))
	}
	p.addr, _ = line["addr"].(string)
	if p.addr == "" || strings.HasSuffix(p.addr, ":0") {
		t.Fatalf("the listening line has no usable addr: %v", line)
	}
	return p
}

// waitLog waits for a log line from index from on that matches.
func (p *chatdProc) waitLog(from int, match func(map[string]any) bool, d time.Duration) (map[string]any, error) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		line, next, more := p.logs.find(from, match)
		if line != nil {
			return line, nil
		}
		from = next
		select {
		case <-more:
		case <-p.exited:
			// Lines written just before the exit are in by now.
			if line, _, _ := p.logs.find(from, match); line != nil {
				return line, nil
			}
			return nil, fmt.Errorf("chatd exited (%v) first", p.state)
		case <-deadline.C:
			return nil, fmt.Errorf("no such log line within %v", d)
		}
	}
}

// signal sends sig to the process.
func (p *chatdProc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits up to d for the process to exit and returns its state.
func (p *chatdProc) wait(d time.Duration) (*os.ProcessState, error) {
	select {
	case <-p.exited:
		return p.state, nil
	case <-time.After(d):
		return nil, fmt.Errorf("chatd still running after %v", d)
	}
}

// stop shuts the process down with SIGTERM and requires a clean exit.
func (p *chatdProc) stop() {
	p.t.Helper()
	p.stopWith(syscall.SIGTERM)
}

// stopWith shuts the process down with sig and requires a clean exit.
func (p *chatdProc) stopWith(sig os.Signal) {
	p.t.Helper()
	p.signal(sig)
	st, err := p.wait(procTimeout)
	if err != nil {
		p.t.Fatal(err)
	}
	if st.ExitCode() != 0 {
		p.t.Fatalf("chatd exited with %v after SIGTERM", st)
	}
}

func (p *chatdProc) url(path string) string { return "http://" + p.addr + path }
func (p *chatdProc) wsURL() string          { return "ws://" + p.addr + "/ws" }

// runChatd runs chatd to completion (it must not serve) with stdin and
// extra environment, and returns its exit code and combined output.
func runChatd(t testing.TB, env []string, stdin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, chatdBin, args...)
	cmd.Env = childEnv(env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("chatd %q did not exit within %v; output:\n%s", args, procTimeout, out.String())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run chatd: %v", err)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// requireCleanFailure checks that a chatd run failed the way a person can
// act on: a non-zero exit and an error line, not a panic or a stack dump.
func requireCleanFailure(t testing.TB, code int, out string, mentions ...string) {
	t.Helper()
	if code == 0 {
		t.Fatalf("chatd exited 0; output:\n%s", out)
	}
	for _, bad := range []string{"panic", "goroutine ", "runtime error", "SIGSEGV"} {
		if strings.Contains(out, bad) {
			t.Fatalf("chatd output contains %q (a crash, not an error message):\n%s", bad, out)
		}
	}
	for _, m := range mentions {
		if !strings.Contains(out, m) {
			t.Errorf("chatd output does not mention %q:\n%s", m, out)
		}
	}
}

// HTTP

var httpClient = &http.Client{Timeout: 10 * time.Second}

// postJSON posts body as JSON with the given Authorization (if any) and
// returns the status and response body.
func postJSON(t testing.TB, url string, body any, bearer string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(http.MethodPost, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read body: %v", url, err)
	}
	return resp.StatusCode, out
}

type credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// register creates an account and requires 201.
func (p *chatdProc) register(t testing.TB, user, password string) {
	t.Helper()
	status, body := postJSON(t, p.url("/register"), credentials{user, password}, "")
	if status != http.StatusCreated {
		t.Fatalf("register %s: %d %s", user, status, body)
	}
}

// login returns a token for user, requiring 200.
func (p *chatdProc) login(t testing.TB, user, password string) string {
	t.Helper()
	status, body := postJSON(t, p.url("/auth"), credentials{user, password}, "")
	if status != http.StatusOK {
		t.Fatalf("login %s: %d %s", user, status, body)
	}
	var tok struct {
		Token     string `json:"token"`
		TokenType string `json:"token_type"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.Token == "" {
		t.Fatalf("login %s: body %s: %v", user, body, err)
	}
	return tok.Token
}
