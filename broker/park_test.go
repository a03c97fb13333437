package broker_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatd/chatd/broker"
)

// parkedEnv is a broker whose chatd_parked_sockets gauge parked reads.
func parkedEnv(t *testing.T, opts broker.Options) (e *env, parked func() int) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("sockets park on linux only")
	}
	reg := prometheus.NewRegistry()
	opts.Metrics = reg
	e = newEnv(t, opts)
	return e, func() int {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == "chatd_parked_sockets" {
				return int(f.GetMetric()[0].GetGauge().GetValue())
			}
		}
		t.Fatal("no chatd_parked_sockets")
		return 0
	}
}

// An idle socket holds no goroutine in the server: its read loop is
// parked, and comes back for each frame the peer sends.
func TestIdleSocketsHoldNoGoroutine(t *testing.T) {
	e, parked := parkedEnv(t, broker.Options{})
	const n = 20
	before := runtime.NumGoroutine()
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = e.dial(e.token("idle"))
	}
	waitFor(t, 5*time.Second, "every socket parked", func() bool { return parked() == n })
	// Each client has its own read loop; the server's side has none.
	if grown := runtime.NumGoroutine() - before; grown >= 2*n {
		t.Fatalf("%d goroutines more for %d idle sockets", grown, n)
	}

	for round := range 3 {
		clients[round].send(map[string]any{"type": "send", "room": "general", "text": "hi"})
		for _, c := range clients {
			if m := c.expect("message"); m.str("text") != "hi" {
				t.Fatalf("got %v", m)
			}
		}
		waitFor(t, 5*time.Second, "the sender parked again", func() bool { return parked() == n })
	}
}

// A read that stops inside a frame waits for the rest of it: only a
// socket at a frame boundary parks.
func TestSocketParksOnlyBetweenFrames(t *testing.T) {
	e, parked := parkedEnv(t, broker.Options{})
	s := e.rawDial(t, e.token("pieces"))
	if _, p, err := s.next(5 * time.Second); err != nil || !strings.Contains(string(p), `"welcome"`) {
		t.Fatalf("welcome: %q %v", p, err)
	}
	waitFor(t, 5*time.Second, "the socket parked", func() bool { return parked() == 1 })

	// A 16-bit length, so the header itself is cut: first byte; the
	// length's first byte; the rest.
	text := `{"type":"send","room":"general","text":"` + strings.Repeat("x", 200) + `"}`
	f := maskedText(text)
	for _, piece := range [][]byte{f[:1], f[1:3], f[3:]} {
		if _, err := s.nc.Write(piece); err != nil {
			t.Fatal(err)
		}
		if len(piece) < len(f)-3 {
			waitFor(t, 5*time.Second, "the socket woke", func() bool { return parked() == 0 })
			// Give the read loop time to find the frame unfinished: it
			// must wait in it, not park.
			time.Sleep(20 * time.Millisecond)
			if parked() != 0 {
				t.Fatal("the socket parked inside a frame")
			}
		}
	}
	_, p, err := s.next(5 * time.Second)
	if err != nil || !strings.Contains(string(p), `"type":"message"`) || !strings.Contains(string(p), strings.Repeat("x", 200)) {
		t.Fatalf("got %q %v, want the message", p, err)
	}
	waitFor(t, 5*time.Second, "the socket parked again", func() bool { return parked() == 1 })
}

// A parked socket that is closed under it (here by Shutdown, after its
// peer ignored the 1001) still ends: it is forgotten everywhere.
func TestClosingAParkedSocketEndsIt(t *testing.T) {
	e, parked := parkedEnv(t, broker.Options{})
	s := e.rawDial(t, e.token("deaf"))
	if _, _, err := s.next(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the socket parked", func() bool { return parked() == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_ = e.broker.Shutdown(ctx) // the peer never answers: it ends by force
	waitFor(t, 5*time.Second, "the socket gone", func() bool { return e.broker.Sockets() == 0 && parked() == 0 })
}

// Once the broker is closed nothing is parked: sockets read as plain ones
// and go on working.
func TestBrokerCloseUnparksSockets(t *testing.T) {
	e, parked := parkedEnv(t, broker.Options{})
	c := e.dial(e.token("after"))
	waitFor(t, 5*time.Second, "the socket parked", func() bool { return parked() == 1 })
	e.broker.Close()
	if parked() != 0 {
		t.Fatal("sockets still parked after Close")
	}
	c.send(map[string]any{"type": "who", "room": "general"})
	c.expect("presence")
}

// A socket parks between the fragments of a message, and a ping between
// them is answered: gws keeps a message's parts in its Conn, not on the
// read loop's stack, so the loop can unwind there.
func TestSocketParksBetweenFragments(t *testing.T) {
	e, parked := parkedEnv(t, broker.Options{})
	s := e.rawDial(t, e.token("fragments"))
	if _, _, err := s.next(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	text := `{"type":"send","room":"general","text":"in three parts"}`
	write := func(f []byte) {
		t.Helper()
		if _, err := s.nc.Write(f); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the socket parked", func() bool { return parked() == 1 })
	}
	write(maskedFrame(0x01, []byte(text[:10])))   // text, not final
	write(maskedFrame(0x00, []byte(text[10:20]))) // continuation, not final
	write(maskedFrame(0x89, []byte("p")))         // ping
	if op, p, err := s.next(5 * time.Second); err != nil || op != 0xA || string(p) != "p" {
		t.Fatalf("got op %x %q %v, want the pong", op, p, err)
	}
	write(maskedFrame(0x80, []byte(text[20:]))) // continuation, final
	_, p, err := s.next(5 * time.Second)
	if err != nil || !strings.Contains(string(p), `"text":"in three parts"`) {
		t.Fatalf("got %q %v, want the message", p, err)
	}
}
