package broker_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/broker"
	"github.com/lxzan/gws"
)

func TestJoinLeaveWhoPresence(t *testing.T) {
	e := newEnv(t, broker.Options{})
	alice, bob := e.dial(e.token("alice")), e.dial(e.token("bob"))
	alice.expect("presence") // bob in general

	alice.send(map[string]any{"type": "join", "room": "ops"})
	if j := alice.expect("joined"); j.str("room") != "ops" || j.num("seq") != 0 || j["recovered"] != nil {
		t.Fatalf("joined = %v", j)
	}
	bob.send(map[string]any{"type": "join", "room": "ops"})
	bob.expect("joined")
	if p := alice.expect("presence"); p.str("room") != "ops" || p.str("join") != "bob" {
		t.Fatalf("presence = %v", p)
	}
	alice.send(map[string]any{"type": "who", "room": "ops"})
	p := alice.expect("presence")
	users, _ := p["users"].([]any)
	if p.str("room") != "ops" || fmt.Sprint(users) != "[alice bob]" {
		t.Fatalf("who = %v", p)
	}
	// A second socket of bob's does not announce bob twice, and its leave
	// does not announce him gone.
	bob2 := e.dial(e.token("bob"))
	bob2.send(map[string]any{"type": "join", "room": "ops"})
	bob2.expect("joined")
	bob2.send(map[string]any{"type": "leave", "room": "ops"})
	if l := bob2.expect("left"); l.str("room") != "ops" {
		t.Fatalf("left = %v", l)
	}
	bob.send(map[string]any{"type": "leave", "room": "ops"})
	bob.expect("left")
	for {
		p := alice.next()
		if p.str("type") != "presence" {
			t.Fatalf("got %v, want presence", p)
		}
		if p.str("room") == "ops" {
			if p.str("leave") != "bob" {
				t.Fatalf("ops presence = %v, want bob's leave", p)
			}
			break
		}
	}
	bob.send(map[string]any{"type": "send", "room": "ops", "text": "hi", "id": 7})
	if e := bob.expect("error"); e.str("code") != "not_member" || e.num("id") != 7 {
		t.Fatalf("send after leave: %v", e)
	}
	// general can be left too.
	bob.send(map[string]any{"type": "leave", "room": "general"})
	bob.expect("left")
	bob.send(map[string]any{"type": "who", "room": "general"})
	if e := bob.expect("error"); e.str("code") != "not_member" {
		t.Fatalf("who after leaving general: %v", e)
	}
}

func TestRoomsClaim(t *testing.T) {
	e := newEnv(t, broker.Options{})
	c := claims("guest", time.Hour)
	c.Rooms = []string{"lobby"}
	g := e.dial(sign(t, c))
	// general is left out by the claim: no membership, and a join is refused.
	g.send(map[string]any{"type": "send", "room": "general", "text": "x"})
	if f := g.expect("error"); f.str("code") != "not_member" {
		t.Fatalf("send to general: %v", f)
	}
	g.send(map[string]any{"type": "join", "room": "general", "id": "j"})
	if f := g.expect("error"); f.str("code") != "room_forbidden" || f.str("id") != "j" {
		t.Fatalf("join general: %v", f)
	}
	g.send(map[string]any{"type": "join", "room": "lobby"})
	g.expect("joined")
}

func TestErrorsKeepTheSocketOpen(t *testing.T) {
	e := newEnv(t, broker.Options{})
	c := e.dial(e.token("alice"))
	cases := []struct {
		frame string
		code  string
	}{
		{`{"type":"send","room":"general"`, "bad_request"},
		{`{"type":"send","room":"general"}`, "bad_request"},
		{`{"type":"send","room":"general","text":""}`, "bad_request"},
		{`{"type":"send","room":"bad room","text":"x"}`, "bad_request"},
		{`{"type":"join","room":""}`, "bad_request"},
		{`{"type":"join","room":"` + strings.Repeat("r", 65) + `"}`, "bad_request"},
		{`{"room":"general"}`, "bad_request"},
		{`{"type":"dance"}`, "unknown_type"},
		{`{"type":"send","room":"general","text":"` + strings.Repeat("x", 4097) + `"}`, "too_large"},
		{`{"type":"send","room":"nowhere","text":"x"}`, "not_member"},
		{`{"type":"history","room":"general","limit":0}`, "bad_request"},
		{`{"type":"history","room":"general","limit":201}`, "bad_request"},
		{`{"type":"history","room":"nowhere"}`, "not_member"},
		{`{"type":"refresh","token":"junk"}`, "invalid_token"},
		{`{"type":"send","room":"general","text":"x","id":{"a":1}}`, "bad_request"},
	}
	for _, tc := range cases {
		if err := c.conn.WriteString(tc.frame); err != nil {
			t.Fatal(err)
		}
		f := c.expect("error")
		if f.str("code") != tc.code || f.str("message") == "" {
			t.Errorf("%.60s: got %v, want %s", tc.frame, f, tc.code)
		}
	}
	// Still alive and chatting.
	c.send(map[string]any{"type": "send", "room": "general", "text": "still here", "id": "ok"})
	c.expect("message")
	c.expect("ack")
	// "id": null is no id: sent, and not acked.
	c.send(map[string]any{"type": "send", "room": "general", "text": "null id", "id": nil})
	if m := c.expect("message"); m.str("text") != "null id" {
		t.Fatalf("id null: %v, want the message", m)
	}
	// 4096 bytes is allowed.
	c.send(map[string]any{"type": "send", "room": "general", "text": strings.Repeat("y", 4096)})
	if m := c.expect("message"); len(m.str("text")) != 4096 {
		t.Fatal("4096-byte text not delivered")
	}
}

// A request whose fields have the wrong types is a bad_request that still
// carries the request's id, so a client can tell which request failed.
func TestWrongTypesKeepTheID(t *testing.T) {
	e := newEnv(t, broker.Options{})
	c := e.dial(e.token("alice"))
	for i, frame := range []string{
		`{"type":"send","room":"general","text":5,"id":"%d"}`,
		`{"type":"history","room":"general","limit":2.5,"id":"%d"}`,
		`{"type":"join","room":"lobby","since":"3","id":"%d"}`,
		`{"type":"history","room":"general","before":-5,"id":"%d"}`,
		`{"type":"send","room":7,"text":"x","id":"%d"}`,
		`{"type":"refresh","token":7,"id":"%d"}`,
		`{"type":["send"],"id":%d}`,
	} {
		frame = fmt.Sprintf(frame, i)
		if err := c.conn.WriteString(frame); err != nil {
			t.Fatal(err)
		}
		f := c.expect("error")
		if f.str("code") != "bad_request" || f.str("message") == "" || fmt.Sprint(f["id"]) != fmt.Sprint(i) {
			t.Errorf("%s: got %v, want bad_request with id %d", frame, f, i)
		}
	}
	c.send(map[string]any{"type": "send", "room": "general", "text": "still here"})
	c.expect("message")
}

// A history page is cut to half the send queue, keeping the newest
// messages: a client asking for pages it does not read cannot make the
// server hold more than its queue's worth.
func TestHistoryWithinBudget(t *testing.T) {
	e := newEnv(t, broker.Options{RateLimit: 10000, SendQueueBytes: 64 << 10})
	c := e.dial(e.token("alice"))
	text := strings.Repeat("x", 4096)
	for range 20 {
		c.send(map[string]any{"type": "send", "room": "general", "text": text})
		c.expect("message")
	}
	c.send(map[string]any{"type": "history", "room": "general", "limit": 20})
	h := c.expect("history")
	msgs := h["messages"].([]any)
	if len(msgs) == 0 || len(msgs) >= 20 || len(msgs)*4096 > 32<<10 {
		t.Fatalf("a page of %d messages of 4 KiB, want at least one and at most 32 KiB's worth", len(msgs))
	}
	if last := msgs[len(msgs)-1].(map[string]any)["seq"].(float64); last != 20 {
		t.Fatalf("the page ends at seq %v, want the newest (20)", last)
	}
}

func TestHistoryPages(t *testing.T) {
	e := newEnv(t, broker.Options{RateLimit: 10000})
	c := e.dial(e.token("alice"))
	for i := 1; i <= 120; i++ {
		c.send(map[string]any{"type": "send", "room": "general", "text": fmt.Sprint("m", i)})
		c.expect("message")
	}
	page := func(req map[string]any) []uint64 {
		t.Helper()
		req["type"], req["room"] = "history", "general"
		c.send(req)
		h := c.expect("history")
		var seqs []uint64
		for _, m := range h["messages"].([]any) {
			mm := m.(map[string]any)
			seqs = append(seqs, uint64(mm["seq"].(float64)))
			if mm["text"] != fmt.Sprint("m", seqs[len(seqs)-1]) || mm["from"] != "alice" || mm["room"] != "general" {
				t.Fatalf("history entry %v", mm)
			}
		}
		return seqs
	}
	latest := page(map[string]any{})
	if len(latest) != 50 || latest[0] != 71 || latest[49] != 120 {
		t.Fatalf("latest page %v", latest)
	}
	older := page(map[string]any{"before": 71, "limit": 200})
	if len(older) != 70 || older[0] != 1 || older[69] != 70 {
		t.Fatalf("page before 71: %v", older)
	}
	if empty := page(map[string]any{"before": 1}); len(empty) != 0 {
		t.Fatalf("before 1: %v", empty)
	}
}

// Several senders into one room: every member sees the same seq order, with
// no gap and no duplicate.
func TestOrderUnderConcurrentSenders(t *testing.T) {
	e := newEnv(t, broker.Options{RateLimit: 10000})
	const senders, each = 4, 100
	var clients []*client
	for i := range senders + 2 {
		clients = append(clients, e.dial(e.token(fmt.Sprint("user", i))))
	}
	var wg sync.WaitGroup
	for i := range senders {
		wg.Add(1)
		go func(c *client) {
			defer wg.Done()
			for j := range each {
				_ = c.conn.WriteString(fmt.Sprintf(`{"type":"send","room":"general","text":"%d"}`, j))
			}
		}(clients[i])
	}
	wg.Wait()
	var first []string
	for i, c := range clients {
		var got []string
		for seq := uint64(1); seq <= senders*each; {
			m := c.next()
			if m.str("type") != "message" {
				continue
			}
			if m.num("seq") != seq {
				t.Fatalf("client %d: seq %d, want %d", i, m.num("seq"), seq)
			}
			got = append(got, m.str("id"))
			seq++
		}
		if first == nil {
			first = got
		} else if !slices.Equal(first, got) {
			t.Fatalf("client %d saw another order", i)
		}
	}
}

// join with since racing live traffic: the replay and the live stream meet
// with no gap and no duplicate.
func TestSinceReplayRacesLiveTraffic(t *testing.T) {
	e := newEnv(t, broker.Options{RateLimit: 10000, History: broker.NewMemoryHistory(1<<20, 0)})
	sender := e.dial(e.token("sender"))
	sender.send(map[string]any{"type": "join", "room": "busy"})
	sender.expect("joined")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // the sender hears its own messages; keep it reading
		for {
			select {
			case <-sender.frames:
			case <-stop:
				return
			}
		}
	}()
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = sender.conn.WriteString(fmt.Sprintf(`{"type":"send","room":"busy","text":"%d"}`, i))
			if i%10 == 9 {
				time.Sleep(time.Millisecond) // let joins interleave with sends
			}
		}
	}()
	var since uint64
	for round := range 10 {
		c := e.dial(e.token(fmt.Sprint("joiner", round)))
		c.send(map[string]any{"type": "join", "room": "busy", "since": since})
		j := c.expect("joined")
		if j["recovered"] != true {
			t.Fatalf("joined = %v", j)
		}
		want := since + 1
		// Replay up to joined.seq, then live messages continue from there.
		for want <= j.num("seq")+20 {
			m := c.next()
			if m.str("type") != "message" {
				continue
			}
			if m.num("seq") != want {
				t.Fatalf("round %d: got seq %d, want %d (joined at %d)", round, m.num("seq"), want, j.num("seq"))
			}
			want++
		}
		c.conn.WriteClose(1000, nil)
		since = j.num("seq") - min(j.num("seq"), 20) // the next joiner is a little behind
	}
	close(stop)
	<-done
}

func TestSinceOlderThanKept(t *testing.T) {
	e := newEnv(t, broker.Options{History: broker.NewMemoryHistory(5, 0)})
	c := e.dial(e.token("alice"))
	for i := range 10 {
		c.send(map[string]any{"type": "send", "room": "general", "text": fmt.Sprint(i)})
		c.expect("message")
	}
	d := e.dial(e.token("bob"))
	d.send(map[string]any{"type": "join", "room": "general", "since": 2})
	j := d.expect("joined")
	if j["recovered"] != false || j.num("seq") != 10 {
		t.Fatalf("joined = %v, want recovered false at seq 10", j)
	}
	for want := uint64(6); want <= 10; want++ {
		if m := d.expect("message"); m.num("seq") != want {
			t.Fatalf("replayed seq %d, want %d", m.num("seq"), want)
		}
	}
}

func TestRoomLimitPerSocket(t *testing.T) {
	e := newEnv(t, broker.Options{MaxRooms: 3})
	c := e.dial(e.token("alice"))
	for _, r := range []string{"a", "b"} {
		c.send(map[string]any{"type": "join", "room": r})
		c.expect("joined")
	}
	c.send(map[string]any{"type": "join", "room": "c"})
	if f := c.expect("error"); f.str("code") != "room_forbidden" {
		t.Fatalf("fourth room: %v", f)
	}
}

func TestCloseCodes(t *testing.T) {
	e := newEnv(t, broker.Options{MaxMessageBytes: 1024})
	t.Run("binary 1003", func(t *testing.T) {
		c := e.dial(e.token("a"))
		_ = c.conn.WriteMessage(gws.OpcodeBinary, []byte("{}"))
		if ev := c.waitClose(5 * time.Second); ev.code != 1003 {
			t.Fatalf("close %d", ev.code)
		}
	})
	t.Run("invalid utf-8 1007", func(t *testing.T) {
		c := e.dial(e.token("b"))
		_ = c.conn.WriteMessage(gws.OpcodeText, []byte{'h', 0xff, 0xfe})
		if ev := c.waitClose(5 * time.Second); ev.code != 1007 || ev.reason != "invalid UTF-8" {
			t.Fatalf("close %d %q, want 1007 \"invalid UTF-8\"", ev.code, ev.reason)
		}
	})
	t.Run("too big 1009", func(t *testing.T) {
		c := e.dial(e.token("c"))
		_ = c.conn.WriteString(strings.Repeat("x", 1025))
		if ev := c.waitClose(5 * time.Second); ev.code != 1009 || ev.reason != "message too big" {
			t.Fatalf("close %d %q, want 1009 \"message too big\"", ev.code, ev.reason)
		}
	})
	// Every frame counts against the rate limit, pings included: a ping
	// flood would otherwise cost a pong each, and a core. Pings get no
	// error frame, only strikes.
	t.Run("text flood 1008", func(t *testing.T) {
		flood(t, func(c *gws.Conn) error { return c.WriteString("spam") }, 10)
	})
	t.Run("ping flood 1008", func(t *testing.T) {
		flood(t, func(c *gws.Conn) error { return c.WritePing([]byte("p")) }, 0)
	})
}

// A ping past the rate limit is still answered (RFC 6455 5.5.2), and gets
// no error frame: the next frame's error is the first one the client sees.
func TestPingAtTheLimitIsAnswered(t *testing.T) {
	e := newEnv(t, broker.Options{RateLimit: 0.5}) // burst 1, a token back every 2 s
	c := e.dial(e.token("pinger"))
	for range 1 {
		c.send(map[string]any{"type": "who", "room": "general"})
		c.expect("presence")
	}
	if err := c.conn.WritePing([]byte("still there?")); err != nil {
		t.Fatal(err)
	}
	c.send(map[string]any{"type": "who", "room": "general", "id": "after"})
	if f := c.expect("error"); f.str("code") != "rate_limited" || f.str("id") != "after" {
		t.Fatalf("first error after the ping: %v, want the next frame's rate_limited", f)
	}
	if n := c.pongs.Load(); n != 1 {
		t.Fatalf("%d pongs for the ping past the limit, want 1", n)
	}
}

// flood sends 200 frames with write as fast as it can, and checks that the
// socket gets at least wantErrors rate_limited errors, then close 1008, while
// another socket goes on chatting.
func flood(t *testing.T, write func(*gws.Conn) error, wantErrors int) {
	e := newEnv(t, broker.Options{RateLimit: 5})
	c := e.dial(e.token("flooder"))
	bystander := e.dial(e.token("bystander"))
	limited := 0
	go func() {
		for range 200 {
			if write(c.conn) != nil {
				return
			}
		}
	}()
	for {
		select {
		case f := <-c.frames:
			if f.str("type") == "error" && f.str("code") == "rate_limited" {
				limited++
			}
			continue
		case ev := <-c.closed:
			for len(c.frames) > 0 { // frames and the close race into the test
				if f := <-c.frames; f.str("code") == "rate_limited" {
					limited++
				}
			}
			if ev.code != 1008 || limited < wantErrors {
				t.Fatalf("close %d after %d rate_limited errors, want 1008 after %d", ev.code, limited, wantErrors)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("flooder not closed")
		}
		break
	}
	bystander.send(map[string]any{"type": "send", "room": "general", "text": "fine"})
	for bystander.expect("message").str("text") != "fine" {
	}
}

// A join far behind gets every stored message, in pages as it takes them
// (more than one page by count, many by bytes), then the live ones with no
// gap and none twice, also when the room goes on talking while the client
// is slow to read its replay. A member rejoining with since gets one page,
// the newest it missed, as it is already hearing the live ones.
func TestReplayFarBehindIsComplete(t *testing.T) {
	e := newEnv(t, broker.Options{RateLimit: 1e6, History: broker.NewMemoryHistory(5000, 0), SendQueueBytes: 64 << 10})
	sender := e.dial(e.token("sender"))
	sender.send(map[string]any{"type": "join", "room": "far"})
	sender.expect("joined")
	echoes := func(n int, room string) { // the sender reads its own messages
		for got := 0; got < n; {
			if m := sender.next(); m.str("type") == "message" && m.str("room") == room {
				got++
			}
		}
	}
	pad := strings.Repeat("x", 200)
	const stored, live = 2500, 200
	for i := range stored {
		_ = sender.conn.WriteString(fmt.Sprintf(`{"type":"send","room":"far","text":"%d %s"}`, i, pad))
		if i%100 == 99 {
			echoes(100, "far")
		}
	}
	late := e.dial(e.token("late"))
	late.stall.Store(true) // it reads nothing until the live messages are in
	late.send(map[string]any{"type": "join", "room": "far", "since": 0})
	for i := range live {
		_ = sender.conn.WriteString(fmt.Sprintf(`{"type":"send","room":"far","text":"live %d"}`, i))
	}
	echoes(live, "far") // the server has them all
	close(late.resume)
	j := late.expect("joined")
	if j["recovered"] != true || j.num("seq") < stored {
		t.Fatalf("joined = %v, want recovered true at %d or later", j, stored)
	}
	for want := uint64(1); want <= stored+live; want++ {
		if m := late.expect("message"); m.num("seq") != want {
			t.Fatalf("got seq %d, want %d (joined at %d)", m.num("seq"), want, j.num("seq"))
		}
	}

	// A member of general since its open, rejoining with since, more than
	// a page behind: the newest page, recovered false, nothing live in it.
	for i := range 1200 {
		_ = sender.conn.WriteString(fmt.Sprint(i))
		if i%100 == 99 {
			echoes(100, "general")
		}
	}
	member := e.dial(e.token("member")) // in general from seq 1200 on
	member.send(map[string]any{"type": "join", "room": "general", "since": 0})
	if j := member.expect("joined"); j["recovered"] != false || j.num("seq") != 1200 {
		t.Fatalf("rejoin: joined = %v, want recovered false at 1200", j)
	}
	// The newest that fit the page, up to where its live messages began.
	first := member.expect("message").num("seq")
	if first < 201 {
		t.Fatalf("rejoin: replay starts at %d, more than a page", first)
	}
	for want := first + 1; want <= 1200; want++ {
		if m := member.expect("message"); m.num("seq") != want || m.str("room") != "general" {
			t.Fatalf("rejoin: got %v, want general seq %d", m, want)
		}
	}
}

// A socket that asks to catch up and then reads nothing holds one page and
// the queue, not the whole history: it is closed as a slow consumer, and
// the others go on.
func TestCatchUpWithoutReadingIsSlow(t *testing.T) {
	e := newEnv(t, broker.Options{RateLimit: 1e6, History: broker.NewMemoryHistory(5000, 0),
		SendQueueBytes: 64 << 10, WriteTimeout: 500 * time.Millisecond})
	sender := e.dial(e.token("sender"))
	sender.send(map[string]any{"type": "join", "room": "big"})
	sender.expect("joined")
	pad := strings.Repeat("y", 1000)
	for i := range 4500 { // 4.5 MB: more than the kernel's buffers take in
		_ = sender.conn.WriteString(fmt.Sprintf(`{"type":"send","room":"big","text":"%d %s"}`, i, pad))
		if i%50 == 49 {
			for got := 0; got < 50; {
				if sender.next().str("type") == "message" {
					got++
				}
			}
		}
	}
	deaf := e.deafDial(t, e.token("deaf"))
	deaf.writeText(`{"type":"join","room":"big","since":0}`)
	waitFor(t, 10*time.Second, "the socket that reads nothing closed", func() bool { return e.broker.Sockets() == 1 })
	sender.send(map[string]any{"type": "send", "room": "big", "text": "still here"})
	for sender.expect("message").str("text") != "still here" {
	}
}

// A socket already in a room that joins it again with since gets the
// stored messages up to when it joined, not again the ones it got live.
func TestRejoinDoesNotRepeatLiveMessages(t *testing.T) {
	e := newEnv(t, broker.Options{})
	alice := e.dial(e.token("alice"))
	alice.send(map[string]any{"type": "send", "room": "general", "text": "one"})
	alice.expect("message")
	bob := e.dial(e.token("bob")) // joins general at seq 1
	alice.send(map[string]any{"type": "send", "room": "general", "text": "two"})
	if m := bob.expect("message"); m.num("seq") != 2 {
		t.Fatalf("live message %v", m)
	}
	bob.send(map[string]any{"type": "join", "room": "general", "since": 0})
	if j := bob.expect("joined"); j.num("seq") != 2 || j["recovered"] != true {
		t.Fatalf("joined = %v", j)
	}
	if m := bob.expect("message"); m.num("seq") != 1 {
		t.Fatalf("replayed %v, want seq 1 only", m)
	}
	bob.send(map[string]any{"type": "who", "room": "general"})
	bob.expect("presence") // and nothing else came in between: no seq 2 again
}

func TestHistoryBeforeHugeSeq(t *testing.T) {
	e := newEnv(t, broker.Options{})
	c := e.dial(e.token("alice"))
	c.send(map[string]any{"type": "send", "room": "general", "text": "x"})
	c.expect("message")
	c.send(map[string]any{"type": "history", "room": "general", "before": uint64(1<<64 - 1)})
	if h := c.expect("history"); len(h["messages"].([]any)) != 1 {
		t.Fatalf("history = %v", h)
	}
}

func TestNoPresenceEventsInLargeRooms(t *testing.T) {
	e := newEnv(t, broker.Options{PresenceLimit: 2})
	a := e.dial(e.token("a"))
	e.dial(e.token("b"))
	if p := a.expect("presence"); p.str("join") != "b" {
		t.Fatalf("presence = %v", p)
	}
	c := e.dial(e.token("c")) // a third member: over the limit, no event
	c.send(map[string]any{"type": "who", "room": "general"})
	c.expect("presence") // c is in the room
	a.send(map[string]any{"type": "who", "room": "general"})
	p := a.expect("presence")
	if users, _ := p["users"].([]any); len(users) != 3 {
		t.Fatalf("who = %v, want the answer with 3 users and no join event before it", p)
	}
}

// Naming new rooms is limited per socket: a fresh socket may fill its
// --max-rooms at once, then 30 a minute, since each costs the store a
// bucket for good. Rooms that exist are not limited.
func TestNewRoomsAreLimited(t *testing.T) {
	e := newEnv(t, broker.Options{MaxRooms: 40, RateLimit: 1000})
	c := e.dial(e.token("namer"))
	c.send(map[string]any{"type": "leave", "room": "general"})
	c.expect("left")
	for i := range 40 {
		c.send(map[string]any{"type": "join", "room": fmt.Sprint("new", i)})
		c.expect("joined")
	}
	c.send(map[string]any{"type": "leave", "room": "new39"})
	c.expect("left")
	c.send(map[string]any{"type": "join", "room": "one-too-many", "id": 1})
	if f := c.expect("error"); f.str("code") != "rate_limited" || f.num("id") != 1 {
		t.Fatalf("41st new room at once: %v, want rate_limited", f)
	}
	d := e.dial(e.token("other")) // joining an existing room is not creating one
	d.send(map[string]any{"type": "join", "room": "new0"})
	d.expect("joined")

	// As every rate_limited: going on after ten within 10 s closes 1008.
	for i := range 9 {
		c.send(map[string]any{"type": "join", "room": fmt.Sprint("again", i)})
		if f := c.expect("error"); f.str("code") != "rate_limited" {
			t.Fatalf("new room %d past the limit: %v, want rate_limited", i, f)
		}
	}
	c.send(map[string]any{"type": "join", "room": "once-more"})
	if ev := c.waitClose(5 * time.Second); ev.code != 1008 {
		t.Fatalf("close %d, want 1008", ev.code)
	}
}

// A broadcast into a room larger than one fan-out chunk (128 members per
// writing goroutine) reaches every member, each message once and in order,
// including while members are still busy with the previous message.
func TestBroadcastReachesEveryMemberOfALargeRoom(t *testing.T) {
	e := newEnv(t, broker.Options{PresenceLimit: 1, RateLimit: 10000})
	const members, messages = 300, 20
	clients := make([]*client, members)
	for i := range clients {
		clients[i] = e.dial(e.token(fmt.Sprint("m", i)))
	}
	for j := range messages {
		clients[0].send(map[string]any{"type": "send", "room": "general", "text": fmt.Sprint(j)})
	}
	for i, c := range clients {
		for j := range messages {
			m := c.expect("message")
			if m.str("text") != fmt.Sprint(j) || m.num("seq") != uint64(j+1) {
				t.Fatalf("member %d, message %d: %v", i, j, m)
			}
		}
	}
}
