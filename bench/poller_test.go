package bench

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/bench/load"
)

// The Dialer's poller under churn, against chatd: sockets closed (by
// Close and by Abort) while others are dialled, so that descriptor
// numbers are reused at once, and a sender's messages flowing the whole
// time. Every dial gets its welcome (no handshake's bytes are read by the
// poller), every socket still open gets every message, in order, and
// every closed socket is reported once.
func TestPollerChurn(t *testing.T) {
	s := newServer(t)
	const (
		receivers = 40
		churns    = 300
	)
	type socket struct {
		last    int           // the last message number it got
		heard   chan struct{} // closed at the message "end"
		closes  atomic.Int32
		stopped chan struct{} // closed when reported closed
	}
	var mu sync.Mutex
	sockets := map[int]*socket{}
	of := func(c *load.Conn) *socket {
		mu.Lock()
		defer mu.Unlock()
		return sockets[c.ID]
	}
	ev := &load.Events{
		Message: func(c *load.Conn, text []byte, _ time.Time) {
			k := of(c) // only this socket's reader touches last
			if string(text) == "end" {
				close(k.heard)
				return
			}
			n, err := strconv.Atoi(string(text))
			if err != nil {
				t.Errorf("socket %d: text %q", c.ID, text)
				return
			}
			if k.last != 0 && n != k.last+1 {
				t.Errorf("socket %d: message %d after %d", c.ID, n, k.last)
			}
			k.last = n
		},
		Closed: func(c *load.Conn, _ uint16, _ time.Time) {
			k := of(c)
			if k.closes.Add(1) != 1 {
				t.Errorf("socket %d reported closed twice", c.ID)
				return
			}
			close(k.stopped)
		},
	}
	d := &load.Dialer{URL: s.url, SourceIPs: sourceIPs}
	tokens := mint(t, 8, 8, time.Hour)
	var nextID atomic.Int64
	dial := func() *load.Conn {
		id := int(nextID.Add(1))
		mu.Lock()
		sockets[id] = &socket{heard: make(chan struct{}), stopped: make(chan struct{})}
		mu.Unlock()
		c, err := d.Dial(tokens[id%len(tokens)], id, id, ev)
		if err != nil {
			t.Fatalf("dial %d: %v", id, err)
		}
		return c
	}
	sender := dial()
	open := make([]*load.Conn, receivers)
	for i := range open {
		open[i] = dial()
	}

	// The sender sends 1, 2, ... while sockets come and go, then "end".
	stop, sent := make(chan struct{}), make(chan struct{})
	send := func(text string) bool {
		err := sender.Write([]byte(`{"type":"send","room":"general","text":"` + text + `"}`))
		if err != nil {
			t.Errorf("send %s: %v", text, err)
		}
		return err == nil
	}
	go func() {
		defer close(sent)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-stop:
				send("end")
				return
			case <-tick.C:
				if !send(strconv.Itoa(i)) {
					return
				}
			}
		}
	}()
	var closed []*load.Conn
	for i := range churns {
		k := i % receivers
		if i%2 == 0 {
			open[k].Close()
		} else {
			open[k].Abort()
		}
		closed = append(closed, open[k])
		open[k] = dial()
	}
	close(stop)
	<-sent

	// Every socket open now hears the end (one dialled late starts
	// mid-way, and then goes in order).
	timeout := time.After(10 * time.Second)
	for _, c := range append(open, sender) {
		select {
		case <-of(c).heard:
		case <-timeout:
			t.Fatalf("socket %d did not get the last message", c.ID)
		}
	}
	for _, c := range closed {
		select {
		case <-of(c).stopped:
		case <-timeout:
			t.Fatalf("socket %d closed but not reported", c.ID)
		}
	}
	closeAll(append(open, sender))
}
