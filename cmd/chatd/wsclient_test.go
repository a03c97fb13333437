package main

// A WebSocket client for the tests that drive a chatd process: it decodes
// each server frame and hands them out in order.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// wsFrame is one decoded server frame.
type wsFrame map[string]any

func (f wsFrame) str(k string) string { s, _ := f[k].(string); return s }
func (f wsFrame) num(k string) uint64 { n, _ := f[k].(float64); return uint64(n) }
func (f wsFrame) typ() string         { return f.str("type") }

// wsClient is a test socket. Frames go to onFrame if it is set and takes
// them, else to an unbounded queue, so the read loop never blocks and the
// server never sees a slow consumer.
type wsClient struct {
	conn    *gws.Conn
	resp    *http.Response
	onFrame func(wsFrame) bool // runs on the read loop

	mu     sync.Mutex
	queue  []wsFrame
	bad    error         // a frame that was not JSON
	signal chan struct{} // capacity 1: the queue grew

	closed      chan struct{} // closed by OnClose
	closeCode   uint16        // valid once closed is closed (0: no close frame)
	closeReason string
	closeErr    error // what ended the read loop
}

func (c *wsClient) OnOpen(*gws.Conn)                {}
func (c *wsClient) OnPing(conn *gws.Conn, p []byte) { _ = conn.WritePong(p) }
func (c *wsClient) OnPong(*gws.Conn, []byte)        {}

func (c *wsClient) OnClose(_ *gws.Conn, err error) {
	c.closeErr = err
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		c.closeCode, c.closeReason = ce.Code, string(ce.Reason)
	}
	close(c.closed)
}

func (c *wsClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	var f wsFrame
	if err := json.Unmarshal(m.Bytes(), &f); err != nil {
		c.mu.Lock()
		c.bad = fmt.Errorf("server sent a frame that is not JSON: %q", m.Bytes())
		c.mu.Unlock()
		return
	}
	if c.onFrame != nil && c.onFrame(f) {
		return
	}
	c.mu.Lock()
	c.queue = append(c.queue, f)
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// dialOpts say how to present the token and where frames go.
type dialOpts struct {
	header  http.Header
	query   string             // appended to /ws, e.g. "?token=..."
	onFrame func(wsFrame) bool // see wsClient.onFrame
}

// dialWS opens a socket; the error is the handshake's.
func (p *chatdProc) dialWS(t testing.TB, o dialOpts) (*wsClient, error) {
	t.Helper()
	c := &wsClient{onFrame: o.onFrame, signal: make(chan struct{}, 1), closed: make(chan struct{})}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{
		Addr:             p.wsURL() + o.query,
		RequestHeader:    o.header,
		HandshakeTimeout: 5 * time.Second,
	})
	c.resp = resp
	if err != nil {
		return c, err
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.NetConn().Close() })
	return c, nil
}

// dial opens a socket with the token in the Authorization header and
// reads its welcome.
func (p *chatdProc) dial(t testing.TB, token string, onFrame func(wsFrame) bool) *wsClient {
	t.Helper()
	c, err := p.dialWS(t, dialOpts{header: http.Header{"Authorization": {"Bearer " + token}}, onFrame: onFrame})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if w, err := c.next(5 * time.Second); err != nil || w.typ() != "welcome" {
		t.Fatalf("first frame = %v (%v), want welcome", w, err)
	}
	return c
}

// send writes v as a JSON text frame.
func (c *wsClient) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.conn.WriteMessage(gws.OpcodeText, b)
}

// next returns the next queued frame, waiting up to d.
func (c *wsClient) next(d time.Duration) (wsFrame, error) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		if c.bad != nil {
			err := c.bad
			c.mu.Unlock()
			return nil, err
		}
		if len(c.queue) > 0 {
			f := c.queue[0]
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return f, nil
		}
		c.mu.Unlock()
		select {
		case <-c.signal:
		case <-c.closed:
			// Frames read before the close are queued by now.
			c.mu.Lock()
			n := len(c.queue)
			c.mu.Unlock()
			if n == 0 {
				return nil, fmt.Errorf("socket closed (%d %q) while waiting for a frame", c.closeCode, c.closeReason)
			}
		case <-deadline.C:
			return nil, fmt.Errorf("no frame within %v", d)
		}
	}
}

// expect returns the next frame of type typ, skipping frames skip accepts.
func (c *wsClient) expect(typ string, d time.Duration, skip func(wsFrame) bool) (wsFrame, error) {
	end := time.Now().Add(d)
	for {
		f, err := c.next(time.Until(end))
		if err != nil {
			return nil, fmt.Errorf("waiting for %s: %w", typ, err)
		}
		if f.typ() == typ {
			return f, nil
		}
		if skip == nil || !skip(f) {
			return nil, fmt.Errorf("got %v, want a %s frame", f, typ)
		}
	}
}

// skipPresence skips presence events, which race with everything when
// several sockets share a room.
func skipPresence(f wsFrame) bool { return f.typ() == "presence" && f["users"] == nil }

// waitClosed waits up to d for the socket to close and returns the code
// the server sent (0 if the connection ended without a close frame).
func (c *wsClient) waitClosed(d time.Duration) (uint16, error) {
	select {
	case <-c.closed:
		return c.closeCode, nil
	case <-time.After(d):
		return 0, fmt.Errorf("socket not closed within %v", d)
	}
}

// storedMessage is a message frame as replayed from the store.
type storedMessage struct {
	Seq  uint64
	From string
	Text string
	ID   string
}

// replay joins room with since 0 and returns every stored message of it,
// oldest first, as the server replays them after `joined`. No one else may
// be sending to the room meanwhile.
func (c *wsClient) replay(room string) (msgs []storedMessage, latest uint64, err error) {
	if err := c.send(map[string]any{"type": "join", "room": room, "since": 0}); err != nil {
		return nil, 0, err
	}
	j, err := c.expect("joined", 10*time.Second, skipPresence)
	if err != nil {
		return nil, 0, err
	}
	if j.str("room") != room {
		return nil, 0, fmt.Errorf("joined %v, want room %s", j, room)
	}
	if rec, ok := j["recovered"].(bool); !ok || !rec {
		return nil, 0, fmt.Errorf("joined %v: want recovered true (nothing was pruned)", j)
	}
	latest = j.num("seq")
	for latest > 0 && (len(msgs) == 0 || msgs[len(msgs)-1].Seq < latest) {
		f, err := c.expect("message", 10*time.Second, skipPresence)
		if err != nil {
			return msgs, latest, fmt.Errorf("replay of %s after %d messages (latest %d): %w", room, len(msgs), latest, err)
		}
		if f.str("room") != room {
			return msgs, latest, fmt.Errorf("replay of %s: got %v", room, f)
		}
		msgs = append(msgs, storedMessage{Seq: f.num("seq"), From: f.str("from"), Text: f.str("text"), ID: f.str("id")})
	}
	return msgs, latest, nil
}

// ack is an acknowledged send.
type ack struct {
	Room string
	Seq  uint64
	Text string
}

// checkStored compares what a room's replay holds with what was acked and
// sent: every acked message is there at its seq with its text, seqs
// strictly increase, and nothing is there that no one sent, or twice.
// sent maps every text any client sent (acked or not) to true.
func checkStored(t testing.TB, room string, stored []storedMessage, acked []ack, sent map[string]bool) {
	t.Helper()
	bySeq := make(map[uint64]storedMessage, len(stored))
	texts := make(map[string]uint64, len(stored))
	for i, m := range stored {
		if i > 0 && m.Seq <= stored[i-1].Seq {
			t.Errorf("room %s: seq %d follows %d in the replay (not strictly increasing)", room, m.Seq, stored[i-1].Seq)
		}
		if m.Seq == 0 {
			t.Errorf("room %s: stored message with seq 0: %+v", room, m)
		}
		bySeq[m.Seq] = m
		if !sent[m.Text] {
			t.Errorf("room %s: stored message %+v was never sent by the test", room, m)
		}
		if prev, dup := texts[m.Text]; dup {
			t.Errorf("room %s: text %q stored twice, at seq %d and %d", room, m.Text, prev, m.Seq)
		}
		texts[m.Text] = m.Seq
	}
	missing := 0
	for _, a := range acked {
		if a.Room != room {
			continue
		}
		m, ok := bySeq[a.Seq]
		switch {
		case !ok:
			missing++
			if missing <= 10 {
				t.Errorf("room %s: acked seq %d (%q) is not in the store", room, a.Seq, a.Text)
			}
		case m.Text != a.Text:
			t.Errorf("room %s: seq %d holds %q, but %q was acked with that seq", room, a.Seq, m.Text, a.Text)
		}
	}
	if missing > 10 {
		t.Errorf("room %s: %d acked messages missing in all", room, missing)
	}
}
