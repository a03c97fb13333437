package bench

import (
	"bytes"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/bench/load"
	"github.com/lxzan/gws"
)

// probe is two sockets chatting in a room of their own while something
// else happens on the server (an expiry burst): the latency of their
// messages tells whether that stalls other traffic.
type probe struct {
	gws.BuiltinEventHandler
	mu   sync.Mutex
	lat  *load.Hist
	stop chan struct{}
	done chan struct{}
}

var probeText = []byte(`"text":"`)

// OnMessage records the latency of the receiver's probe messages, whose
// text is their send time in unix nanoseconds.
func (p *probe) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	data := m.Bytes()
	i := bytes.Index(data, probeText)
	if i < 0 {
		return
	}
	rest := data[i+len(probeText):]
	if j := bytes.IndexByte(rest, '"'); j > 0 {
		if sent, err := strconv.ParseInt(string(rest[:j]), 10, 64); err == nil {
			p.mu.Lock()
			p.lat.Record(time.Since(time.Unix(0, sent)))
			p.mu.Unlock()
		}
	}
}

// startProbe opens the two sockets on url and sends a message every 5 ms
// until finish, which returns the latencies.
func startProbe(tb testing.TB, url string) (finish func() *load.Hist) {
	p := &probe{lat: load.NewHist(), stop: make(chan struct{}), done: make(chan struct{})}
	dial := func(h gws.Event, name string) *gws.Conn {
		tok, err := load.Mint(secret, name, time.Now().Add(time.Hour))
		if err != nil {
			tb.Fatal(err)
		}
		conn, _, err := gws.NewClient(h, &gws.ClientOption{Addr: url, RequestHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		if err != nil {
			tb.Fatal(err)
		}
		go conn.ReadLoop()
		_ = conn.WriteString(`{"type":"join","room":"probe"}`)
		return conn
	}
	receiver := dial(p, "probe-receiver")
	sender := dial(&gws.BuiltinEventHandler{}, "probe-sender")
	go func() {
		defer close(p.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				_ = sender.WriteString(`{"type":"send","room":"probe","text":"` + strconv.FormatInt(time.Now().UnixNano(), 10) + `"}`)
			}
		}
	}()
	return func() *load.Hist {
		close(p.stop)
		<-p.done
		time.Sleep(50 * time.Millisecond) // the last messages in flight arrive
		_ = sender.NetConn().Close()
		_ = receiver.NetConn().Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.lat
	}
}
