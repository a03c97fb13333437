package load

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// Sender sends timestamped chat messages on one socket. With a window it
// keeps at most that many of its messages in flight: a message leaves the
// window when the sender's own socket receives it back from the room (or
// when the server refuses it), so a saturating sender cannot outrun the
// fan-out by more than the window.
type Sender struct {
	Index int    // carried in every text, to recognise the echo
	Room  string // default "general"
	Size  int    // text bytes (at least 24)

	conn   *Conn
	window chan struct{}
	buf    []byte

	Sent    atomic.Int64 // messages written
	Refused atomic.Int64 // error frames answering a send
	Stalls  atomic.Int64 // window slots given up on after a timeout
}

// NewSender makes c a sender number index with window messages in flight
// (0: no window, for paced sending).
func NewSender(c *Conn, index, window, size int, room string) *Sender {
	if room == "" {
		room = "general"
	}
	s := &Sender{Index: index, Room: room, Size: max(size, 24), conn: c}
	if window > 0 {
		s.window = make(chan struct{}, window)
	}
	c.sender.Store(s)
	return s
}

// Conn returns the sender's socket.
func (s *Sender) Conn() *Conn { return s.conn }

// Echo is called by the message handler when the sender's socket receives
// a text; it frees a window slot when the text is the sender's own.
func (s *Sender) Echo(sender int) {
	if sender == s.Index {
		s.release()
	}
}

// Refuse is called when the sender's socket gets an error frame.
func (s *Sender) Refuse() {
	s.Refused.Add(1)
	s.release()
}

func (s *Sender) release() {
	if s.window == nil {
		return
	}
	select {
	case <-s.window:
	default:
	}
}

// Send writes one message stamped with the current time. It is not safe
// for concurrent use: one goroutine drives a Sender.
func (s *Sender) Send() error {
	b := append(s.buf[:0], `{"type":"send","room":"`...)
	b = append(b, s.Room...)
	b = append(b, `","text":"`...)
	b = MessageText(b, time.Now(), s.Index, len(b)+s.Size)
	b = append(b, `"}`...)
	s.buf = b
	if err := s.conn.Write(b); err != nil {
		return err
	}
	s.Sent.Add(1)
	return nil
}

// acquire takes a window slot, waiting up to stall for one. Past that the
// oldest message is presumed lost and its slot reused.
func (s *Sender) acquire(ctx context.Context, stall time.Duration) error {
	select {
	case s.window <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(stall)
	defer t.Stop()
	select {
	case s.window <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		// The oldest message is presumed lost: its slot is reused.
		s.Stalls.Add(1)
		return nil
	}
}

// Saturate sends as fast as the window allows until ctx ends or n messages
// are sent (n < 0: no count limit). It returns the first write error.
func (s *Sender) Saturate(ctx context.Context, n int64) error {
	if s.window == nil {
		return errors.New("Saturate needs a window")
	}
	for i := int64(0); n < 0 || i < n; i++ {
		if err := s.acquire(ctx, 5*time.Second); err != nil {
			return nil
		}
		if s.conn.Closed() {
			return errors.New("sender socket closed")
		}
		if err := s.Send(); err != nil {
			return err
		}
	}
	return nil
}

// Drain waits until every window slot is back or ctx ends.
func (s *Sender) Drain(ctx context.Context) {
	if s.window == nil {
		return
	}
	for len(s.window) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// Paced sends count messages, the k-th at start + (offset + k*every),
// until ctx ends. It returns the first write error.
func (s *Sender) Paced(ctx context.Context, start time.Time, offset, every time.Duration, count int64) error {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for k := int64(0); k < count; k++ {
		at := start.Add(offset + time.Duration(k)*every)
		if d := time.Until(at); d > 0 {
			t.Reset(d)
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return nil
		}
		if err := s.Send(); err != nil {
			return err
		}
	}
	return nil
}
