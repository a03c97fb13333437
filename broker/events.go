package broker

import (
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/lxzan/gws"
)

// General is the room every socket starts in (unless its token's rooms
// claim leaves it out).
const General = "general"

// start makes a freshly upgraded socket live: the registry, the general
// room and the expiry wheel, and the welcome as its first frame, written
// together with response (the upgrade's 101, held back until now). It
// runs before the read loop, so every request finds the socket in place.
func (b *Broker) start(s *Session, c *authn.Claims, response []byte) {
	now := time.Now()
	s.lastRead = now
	_ = s.conn.SetReadDeadline(now.Add(b.opts.IdleTimeout))

	rooms := []string{}
	if c.MayJoin(General) {
		rooms = append(rooms, General)
	}
	// This goroutine is the socket's writer until the welcome is out:
	// frames queued meanwhile (presence, a close) wait behind it, and no
	// flusher goroutine is started per handshake.
	s.out.hold()
	defer func() {
		s.out.release(response, frame(opText, welcomePayload(&welcomeFrame{Type: "welcome", User: s.name, Session: s.id, Exp: c.Expiry().Unix(), Rooms: rooms})))
	}()
	b.registry.add(s, c.ID)
	b.metrics.sockets.Inc()
	s.schedule(c.Expiry())
	if len(rooms) > 0 {
		if err := s.join(General, nil, nil, false); err != nil {
			b.log.Error().Err(err).Msg("join general")
			rooms = rooms[:0] // the welcome must not claim it
		}
	}
	// Shutdown or a logout may have swept the registry between their check
	// and the add above; close this one here in that case.
	if b.opts.Verifier.Revoked(c.ID) {
		s.close(CloseTokenRevoked, true, nil)
	}
	if b.draining.Load() {
		s.close(CloseGoingAway, false, nil)
	}
	b.log.Debug().Str("user", s.name).Str("session", s.id).Msg("open")
}

// OnOpen implements gws.Event; start has done the work before the loop.
// gws calls it again each time a parked socket's read loop resumes, so it
// stays empty: what a socket needs once belongs in start.
func (b *Broker) OnOpen(*gws.Conn) {}

// OnClose implements gws.Event: the socket is gone, forget it everywhere.
func (b *Broker) OnClose(c *gws.Conn, err error) {
	s := sessionOf(c)
	s.out.kill()
	b.wheel.Cancel(s.expire)
	b.wheel.Cancel(s.warn)
	for name := range s.rooms {
		s.leave(name)
	}
	b.registry.remove(s, s.heldJTIs())
	b.metrics.sockets.Dec()
	select {
	case b.gone <- struct{}{}:
	default:
	}
	b.log.Debug().Str("user", s.name).Str("session", s.id).Uint32("code", s.closedCode.Load()).AnErr("reason", err).Msg("close")
}

// OnPing implements gws.Event: the pong goes through the outbox like every
// other frame, so the read loop never blocks on a write. A ping is always
// answered (RFC 6455 5.5.2), but counts against the rate limit: one past
// it is a strike toward the 1008 close, without an error frame (which
// would cost more than the pong). A flood of pings had cost a core.
func (b *Broker) OnPing(c *gws.Conn, payload []byte) {
	s := sessionOf(c)
	now := time.Now()
	s.touch(now)
	s.send(frame(opPong, payload))
	if !s.limiter.AllowN(now, 1) {
		s.strike(now)
	}
}

// OnPong implements gws.Event.
func (b *Broker) OnPong(c *gws.Conn, _ []byte) { sessionOf(c).touch(time.Now()) }

// OnMessage implements gws.Event.
func (b *Broker) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	s := sessionOf(c)
	now := time.Now()
	if s.expired(now) || s.closedCode.Load() != 0 {
		return // closing: nothing more from this socket counts
	}
	s.touch(now)
	if m.Opcode != gws.OpcodeText {
		s.close(CloseUnsupported, false, nil)
		return
	}
	s.handle(m.Bytes(), now)
}
