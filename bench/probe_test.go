package bench

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/bench/load"
)

// probe is two sockets chatting in a room of their own while something
// else happens on the server (an expiry burst): the latency of their
// messages tells whether that stalls other traffic. It is taken at the
// messages' arrival (load.Dialer's clock), so that the thousands of client
// sockets sharing this process's cores do not count as the server's stall.
type probe struct {
	mu   sync.Mutex
	lat  *load.Hist
	stop chan struct{}
	done chan struct{}
}

// message records the latency of a probe message, whose text is its send
// time in unix nanoseconds.
func (p *probe) message(_ *load.Conn, text []byte, at time.Time) {
	if sent, err := strconv.ParseInt(string(text), 10, 64); err == nil {
		p.mu.Lock()
		p.lat.Record(at.Sub(time.Unix(0, sent)))
		p.mu.Unlock()
	}
}

// startProbe opens the two sockets on url and sends a message every 5 ms
// until finish, which returns the latencies.
func startProbe(tb testing.TB, url string) (finish func() *load.Hist) {
	p := &probe{lat: load.NewHist(), stop: make(chan struct{}), done: make(chan struct{})}
	d := &load.Dialer{URL: url}
	dial := func(name string, ev *load.Events) *load.Conn {
		tok, err := load.Mint(secret, name, time.Now().Add(time.Hour))
		if err != nil {
			tb.Fatal(err)
		}
		c, err := d.Dial(tok, 0, 0, ev)
		if err != nil {
			tb.Fatal(err)
		}
		if err := c.Write([]byte(`{"type":"join","room":"probe"}`)); err != nil {
			tb.Fatal(err)
		}
		return c
	}
	receiver := dial("probe-receiver", &load.Events{Message: p.message})
	sender := dial("probe-sender", nil)
	go func() {
		defer close(p.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				_ = sender.Write([]byte(`{"type":"send","room":"probe","text":"` + strconv.FormatInt(time.Now().UnixNano(), 10) + `"}`))
			}
		}
	}()
	return func() *load.Hist {
		close(p.stop)
		<-p.done
		time.Sleep(50 * time.Millisecond) // the last messages in flight arrive
		sender.Abort()
		receiver.Abort()
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.lat
	}
}
