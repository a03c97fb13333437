package broker_test

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/chatd/chatd/broker"
)

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// A reader that stops reading is closed 4008 once its queue passes the
// bound; the others keep their messages and the server's memory stays
// bounded.
func TestSlowConsumerIsEvicted(t *testing.T) {
	const queue = 64 << 10
	e := newEnv(t, broker.Options{RateLimit: 1e6, SendQueueBytes: queue})
	e.deafDial(t, e.token("stalled")) // reads nothing from here on

	senders := []*client{e.dial(e.token("s1")), e.dial(e.token("s2"))}
	listener := e.dial(e.token("listener"))
	before := heapInUse()

	// Closed-loop senders (each waits for its own echo) keep the healthy
	// readers' queues short, so only the stalled socket falls behind.
	text := strings.Repeat("z", 1000)
	const perSender = 1000
	for _, s := range senders {
		go func(s *client) {
			for range perSender {
				if s.conn.WriteString(text) != nil {
					return
				}
				for {
					select {
					case f := <-s.frames:
						if f.str("type") != "message" || f.str("from") != s.name {
							continue
						}
					case <-time.After(10 * time.Second):
						return
					}
					break
				}
			}
		}(s)
	}
	got := 0
	for got < 2*perSender {
		select {
		case f := <-listener.frames:
			if f.str("type") == "message" {
				got++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("listener got %d of %d messages (%d sockets)", got, 2*perSender, e.broker.Sockets())
		}
	}
	// 3 sockets remain: two senders and the listener.
	waitFor(t, 5*time.Second, "the stalled socket to be closed", func() bool { return e.broker.Sockets() == 3 })
	// Sent through the stalled socket: 4 MB; it must not all sit in memory.
	if grew := heapInUse() - before; grew > 16<<20 {
		t.Errorf("heap grew %d MB while one socket stalled", grew>>20)
	}
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

func TestSocketRefresh(t *testing.T) {
	e := newEnv(t, broker.Options{})
	tok, exp := expiringToken(t, "alice", time.Second)
	c := e.dial(tok)

	// Another user's token is refused and changes nothing.
	c.send(map[string]any{"type": "refresh", "token": e.token("mallory"), "id": 1})
	if f := c.expect("error"); f.str("code") != "invalid_token" || f.num("id") != 1 {
		t.Fatalf("foreign token: %v", f)
	}
	// An expired token is refused.
	old, _ := expiringToken(t, "alice", -3*time.Second)
	c.send(map[string]any{"type": "refresh", "token": old})
	if f := c.expect("error"); f.str("code") != "token_expired" {
		t.Fatalf("expired token: %v", f)
	}
	// A fresh token for the same sub moves the expiry.
	fresh, freshExp := expiringToken(t, "alice", 3*time.Second)
	c.send(map[string]any{"type": "refresh", "token": fresh})
	if f := c.expect("refreshed"); f.num("exp") != uint64(freshExp.Unix()) {
		t.Fatalf("refreshed = %v", f)
	}
	// Past the old exp the socket is still open and working.
	time.Sleep(time.Until(exp.Add(200 * time.Millisecond))) // the point is the passage of time itself
	c.send(map[string]any{"type": "send", "room": "general", "text": "after old exp"})
	c.expect("message")
	ev := c.waitClose(5 * time.Second)
	if ev.code != 4001 || ev.at.Before(freshExp) {
		t.Fatalf("close %d at %v relative to the new exp", ev.code, ev.at.Sub(freshExp))
	}
}

// A refreshed token with a narrower rooms claim rules at once: the socket
// leaves the rooms it no longer allows (and is told), and cannot send there.
func TestRefreshNarrowsRooms(t *testing.T) {
	e := newEnv(t, broker.Options{})
	c := e.dial(e.token("dana"))
	c.send(map[string]any{"type": "join", "room": "secret"})
	c.expect("joined")
	c.send(map[string]any{"type": "join", "room": "lobby"})
	c.expect("joined")

	narrow := claims("dana", 15*time.Minute)
	narrow.Rooms = []string{"lobby"}
	c.send(map[string]any{"type": "refresh", "token": sign(t, narrow)})
	c.expect("refreshed")
	left := map[string]bool{}
	for range 2 {
		left[c.expect("left").str("room")] = true
	}
	if !left["secret"] || !left["general"] {
		t.Fatalf("left %v, want secret and general", left)
	}
	for _, room := range []string{"secret", "general"} {
		c.send(map[string]any{"type": "send", "room": room, "text": "still here?", "id": room})
		if f := c.expect("error"); f.str("code") != "not_member" || f.str("id") != room {
			t.Fatalf("send to %s after the refresh: %v, want not_member", room, f)
		}
	}
	c.send(map[string]any{"type": "send", "room": "lobby", "text": "here"})
	c.expect("message")
}

func TestRevokeClosesThatTokensSockets(t *testing.T) {
	e := newEnv(t, broker.Options{})
	cl := claims("alice", time.Hour)
	tok := sign(t, cl)
	a1, a2 := e.dial(tok), e.dial(tok)
	other := e.dial(e.token("alice")) // the same user, another token
	e.broker.Revoke(cl.ID)
	for _, c := range []*client{a1, a2} {
		if ev := c.waitClose(2 * time.Second); ev.code != 4003 {
			t.Fatalf("close %d, want 4003", ev.code)
		}
	}
	other.send(map[string]any{"type": "who", "room": "general"})
	other.expect("presence")
}

// A socket that refreshed is closed by the logout of its new token too.
func TestRevokeAfterRefresh(t *testing.T) {
	e := newEnv(t, broker.Options{})
	first, second := claims("alice", time.Hour), claims("alice", 2*time.Hour)
	second.ID = "second-jti"
	c := e.dial(sign(t, first))
	c.send(map[string]any{"type": "refresh", "token": sign(t, second)})
	c.expect("refreshed")
	e.broker.Revoke("second-jti")
	if ev := c.waitClose(2 * time.Second); ev.code != 4003 {
		t.Fatalf("close %d, want 4003", ev.code)
	}
}

func TestShutdownClosesAll1001(t *testing.T) {
	e := newEnv(t, broker.Options{})
	var cs []*client
	for i := range 50 {
		cs = append(cs, e.dial(e.token(fmt.Sprint("u", i))))
	}
	if err := e.broker.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if ev := c.waitClose(2 * time.Second); ev.code != 1001 {
			t.Fatalf("close %d, want 1001", ev.code)
		}
	}
	resp := e.upgradeRequest(t, map[string][]string{"Authorization": {"Bearer " + e.token("late")}}, "")
	if resp.StatusCode != 503 {
		t.Fatalf("upgrade while draining: %d, want 503", resp.StatusCode)
	}
}

// silentClient answers nothing, not even pings.
type silentClient struct{ client }

func (c *silentClient) OnPing(*gws.Conn, []byte) {}

func TestHeartbeat(t *testing.T) {
	e := newEnv(t, broker.Options{PingInterval: 50 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	alive := e.dial(e.token("alive")) // answers pings: stays

	silent := &silentClient{client{t: t, frames: make(chan frame, 64), closed: make(chan closeEvent, 1)}}
	// The server's idle clock starts during the handshake, before the dial
	// returns: timing from after it could see the drop "early".
	start := time.Now()
	conn, _, err := gws.NewClient(silent, &gws.ClientOption{Addr: e.url, RequestHeader: http.Header{"Authorization": {"Bearer " + e.token("silent")}}})
	if err != nil {
		t.Fatal(err)
	}
	go conn.ReadLoop()
	ev := silent.waitClose(3 * time.Second)
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("silent socket dropped after %v, before the idle timeout", d)
	}
	// gws's reason would be its read error, addresses and all.
	if ev.code != 1000 || ev.reason != "idle timeout" {
		t.Errorf("idle close %d %q, want 1000 \"idle timeout\"", ev.code, ev.reason)
	}
	// Well past the idle timeout, the socket that answers pings still works.
	alive.send(map[string]any{"type": "who", "room": "general"})
	alive.expect("presence")
}

// A socket refreshed many times still closes when the token it was opened
// with is logged out.
func TestRevokeOpeningTokenAfterManyRefreshes(t *testing.T) {
	e := newEnv(t, broker.Options{})
	opening := claims("alice", time.Hour)
	c := e.dial(sign(t, opening))
	for i := range 20 {
		next := claims("alice", time.Hour)
		next.ID = fmt.Sprint("refresh-", i)
		c.send(map[string]any{"type": "refresh", "token": sign(t, next)})
		c.expect("refreshed")
	}
	e.broker.Revoke(opening.ID)
	if ev := c.waitClose(2 * time.Second); ev.code != 4003 {
		t.Fatalf("close %d, want 4003", ev.code)
	}
}
