package broker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/bench/load"
	"github.com/chatd/chatd/broker"
	"github.com/rs/zerolog"
)

// listenerEnv serves a broker at /ws and a plain handler at /hello through
// broker.Listener, as chatd does.
func listenerEnv(t *testing.T) (e *env, addr string) {
	e = newEnv(t, broker.Options{})
	mux := http.NewServeMux()
	mux.Handle("/ws", e.broker)
	mux.HandleFunc("/hello", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hi") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(broker.NewListener(ln, mux, 5*time.Second, zerolog.Nop())) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("serve: %v", err)
		}
	})
	return e, ln.Addr().String()
}

func TestListenerUpgrades(t *testing.T) {
	e, addr := listenerEnv(t)
	d := &load.Dialer{URL: "ws://" + addr + "/ws"}
	c, err := d.Dial(e.token("fast"), 0, 0, nil)
	if err != nil {
		t.Fatalf("upgrade through the listener: %v", err)
	}
	c.Close()
}

func TestListenerRefusesWithJSON(t *testing.T) {
	_, addr := listenerEnv(t)
	resp, err := http.Get("http://" + addr + "/ws?token=garbage")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Error, Message string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("body: %v", err)
	}
	if resp.StatusCode != http.StatusUnauthorized || body.Error != "invalid_token" || body.Message == "" {
		t.Fatalf("%d %+v, want 401 invalid_token", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q", ct)
	}
}

func TestListenerHandsOtherRequestsToHTTP(t *testing.T) {
	_, addr := listenerEnv(t)
	nc := tcpDial(t, addr)
	br := bufio.NewReader(nc)
	// Two requests on one kept-alive connection, the second a refused
	// upgrade: both served by the http.Server.
	for _, path := range []string{"/hello", "/ws"} {
		if _, err := io.WriteString(nc, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch path {
		case "/hello":
			if resp.StatusCode != http.StatusOK || string(b) != "hi" {
				t.Fatalf("/hello: %d %q", resp.StatusCode, b)
			}
		case "/ws":
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("/ws after /hello: %d %q", resp.StatusCode, b)
			}
		}
	}
}

func TestListenerBadRequest(t *testing.T) {
	_, addr := listenerEnv(t)
	for _, req := range []string{"GET /ws HTTP/1.1\r\nBad Header\r\n\r\n", "GET /ws?x HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n"} {
		nc := tcpDial(t, addr)
		_, _ = io.WriteString(nc, req)
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%q: %v %v, want 400", req, resp, err)
		}
		if code := errorBody(t, resp); code != "bad_request" {
			t.Errorf("%q: error %q, want a JSON bad_request", req, code)
		}
		nc.Close()
	}
}

// Headers past the limit are refused with 431, not read into memory.
func TestListenerHeaderLimit(t *testing.T) {
	_, addr := listenerEnv(t)
	nc := tcpDial(t, addr)
	go func() {
		_, _ = io.WriteString(nc, "GET /ws HTTP/1.1\r\nHost: x\r\n")
		line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
		for range 100 {
			if _, err := io.WriteString(nc, line); err != nil {
				return
			}
		}
	}()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("%v %v, want 431", resp, err)
	}
	if code := errorBody(t, resp); code != "bad_request" {
		t.Errorf("error %q, want a JSON bad_request", code)
	}
}

// An upgrade after other requests on a kept-alive connection is served by
// the http.Server through the replayed connection, and the socket then
// works both ways: the broker writes to the TCP connection underneath.
func TestListenerUpgradeAfterKeepAlive(t *testing.T) {
	e, addr := listenerEnv(t)
	nc := tcpDial(t, addr)
	br := bufio.NewReader(nc)
	_, _ = io.WriteString(nc, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/hello: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	_, _ = io.WriteString(nc, upgradeRequest("13", e.token("kept")))
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade after keep-alive: %v %v", resp, err)
	}
	s := &rawSocket{t: t, nc: nc, br: br}
	op, payload, err := s.next(5 * time.Second)
	if err != nil || op != 0x1 || !strings.Contains(string(payload), `"type":"welcome"`) {
		t.Fatalf("first frame %#x %q %v, want the welcome", op, payload, err)
	}
	s.writeText(`{"type":"send","room":"general","text":"still here"}`)
	for {
		op, payload, err := s.next(5 * time.Second)
		if err != nil {
			t.Fatalf("no echo of the message: %v", err)
		}
		if op == 0x1 && strings.Contains(string(payload), `"text":"still here"`) {
			return
		}
	}
}
