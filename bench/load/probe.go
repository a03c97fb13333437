package load

import (
	"errors"
	"strconv"
	"sync"
	"time"
)

// Probe is two sockets chatting in a room of their own while something
// else happens on the server (an expiry burst, a fan-out): the latency of
// their messages tells whether that holds everybody else's traffic back.
// Latency is taken at the messages' arrival (the Dialer's clock), so
// whatever else runs in this process does not count as the server's.
type Probe struct {
	mu     sync.Mutex
	lat    *Hist
	sender *Conn
	recv   *Conn
	stop   chan struct{}
	done   chan struct{}
	last   chan struct{} // closed when the receiver has the last message
	once   sync.Once
}

// lastText marks the probe's last message: the room's messages arrive in
// order, so once it is in, every earlier one is.
const lastText = "last"

// StartProbe opens a sender (token a) and a receiver (token b) with d,
// both in room, and sends a message every `every` until Stop.
func StartProbe(d *Dialer, a, b, room string, every time.Duration) (*Probe, error) {
	p := &Probe{lat: NewHist(), stop: make(chan struct{}), done: make(chan struct{}), last: make(chan struct{})}
	join := []byte(`{"type":"join","room":` + strconv.Quote(room) + `}`)
	joined := make(chan struct{}, 2)
	ev := &Events{
		Message: p.message,
		Frame: func(_ *Conn, typ string, _ []byte) {
			if typ == "joined" {
				joined <- struct{}{}
			}
		},
	}
	var err error
	if p.recv, err = d.Dial(b, 1, 0, ev); err != nil {
		return nil, err
	}
	if p.sender, err = d.Dial(a, 0, 0, ev); err != nil {
		p.recv.Abort()
		return nil, err
	}
	for _, c := range []*Conn{p.recv, p.sender} {
		if err := c.Write(join); err != nil {
			p.abort()
			return nil, err
		}
	}
	for range 2 { // both in the room before the first message
		select {
		case <-joined:
		case <-time.After(5 * time.Second):
			p.abort()
			return nil, errProbeJoin
		}
	}
	prefix := `{"type":"send","room":` + strconv.Quote(room) + `,"text":"`
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				_ = p.sender.Write([]byte(prefix + lastText + `"}`))
				return
			case <-t.C:
				_ = p.sender.Write([]byte(prefix + strconv.FormatInt(time.Now().UnixNano(), 10) + `"}`))
			}
		}
	}()
	return p, nil
}

var errProbeJoin = errors.New("probe: sockets not in their room within 5s")

// message records the latency of one of the receiver's messages, whose
// text is its send time in unix nanoseconds.
func (p *Probe) message(c *Conn, text []byte, at time.Time) {
	if c != p.recv {
		return
	}
	if string(text) == lastText {
		p.once.Do(func() { close(p.last) })
		return
	}
	if sent, err := strconv.ParseInt(string(text), 10, 64); err == nil {
		p.mu.Lock()
		p.lat.Record(at.Sub(time.Unix(0, sent)))
		p.mu.Unlock()
	}
}

// Stop ends the probe and returns its messages' latencies.
func (p *Probe) Stop() *Hist {
	close(p.stop)
	<-p.done
	select { // the messages in flight arrive
	case <-p.last:
	case <-time.After(2 * time.Second): // the server is gone, or lost it
	}
	p.abort()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lat
}

func (p *Probe) abort() {
	p.sender.Abort()
	if p.recv != nil {
		p.recv.Abort()
	}
}
