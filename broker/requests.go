package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/chatd/chatd/authn"
)

// Rate-limit abuse: a socket that keeps sending after this many
// rate_limited errors within strikeWindow is closed 1008.
const (
	maxStrikes   = 10
	strikeWindow = 10 * time.Second
)

// handle runs one client frame on the socket's read loop.
func (s *Session) handle(data []byte, now time.Time) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	plain := len(trimmed) > 0 && trimmed[0] != '{'
	blank := len(trimmed) == 0 && len(data) > 0
	if plain || blank {
		// Plain text chats in general, so wscat and the tutorial's page
		// work; so does text that is only blanks, as there. (An empty
		// frame is a bad_request below.)
		if s.allow(now, nil) {
			s.sendText(General, string(data), nil)
		}
		return
	}
	var req request
	err := json.Unmarshal(data, &req)
	if string(req.ID) == "null" {
		req.ID = nil // "id": null is no id, as a client's optional field often comes
	}
	if wrong, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && validClientID(req.ID) {
		// A JSON object with a field of the wrong type: encoding/json has
		// still read the rest, so the error can carry the request's id.
		if s.allow(now, req.ID) {
			s.sendError(CodeBadRequest, wrongType(wrong), req.ID)
		}
		return
	}
	if err != nil || len(trimmed) == 0 {
		if s.allow(now, nil) {
			s.sendError(CodeBadRequest, "a frame must be a JSON object with a type", nil)
		}
		return
	}
	if !validClientID(req.ID) {
		req.ID = nil
		if s.allow(now, nil) {
			s.sendError(CodeBadRequest, "id must be a string or number of at most 128 bytes", nil)
		}
		return
	}
	if !s.allow(now, req.ID) {
		return
	}
	switch req.Type {
	case "send":
		if req.Text == nil {
			s.sendError(CodeBadRequest, "send needs room and text", req.ID)
			return
		}
		s.sendText(req.Room, *req.Text, req.ID)
	case "join":
		if !validRoom(req.Room) {
			s.sendError(CodeBadRequest, badRoomMessage, req.ID)
			return
		}
		if err := s.join(req.Room, req.Since, req.ID, true); err != nil {
			s.broker.log.Error().Err(err).Str("room", req.Room).Msg("join")
			s.sendError(CodeInternalError, "the room could not be joined; try again", req.ID)
		}
	case "leave":
		if s.member(req.Room, req.ID) != nil {
			s.leaveAndTell(req.Room)
		}
	case "history":
		s.history(&req)
	case "who":
		if r := s.member(req.Room, req.ID); r != nil {
			r.mu.Lock()
			users := r.userList()
			r.mu.Unlock()
			s.send(textFrame(presenceFrame{Type: "presence", Room: req.Room, Users: &users}))
		}
	case "refresh":
		s.refresh(req.Token, req.ID)
	case "":
		s.sendError(CodeBadRequest, "type is required", req.ID)
	default:
		s.sendError(CodeUnknownType, "unknown type "+strconv.Quote(req.Type), req.ID)
	}
}

// allow takes a token from the socket's rate limiter. Past it, the client
// gets rate_limited; one that keeps on after maxStrikes of those within
// strikeWindow is closed 1008.
func (s *Session) allow(now time.Time, id []byte) bool {
	if s.limiter.AllowN(now, 1) {
		return true
	}
	if s.strike(now) {
		s.sendError(CodeRateLimited, "too many messages; slow down", id)
	}
	return false
}

// strike records a frame over the rate limit. The one after maxStrikes
// within strikeWindow closes the socket 1008, and strike reports false.
func (s *Session) strike(now time.Time) bool {
	if len(s.strikes) == maxStrikes && now.Sub(s.strikes[0]) < strikeWindow {
		s.close(ClosePolicy, false, nil)
		return false
	}
	if len(s.strikes) == maxStrikes {
		s.strikes = append(s.strikes[:0], s.strikes[1:]...)
	}
	s.strikes = append(s.strikes, now)
	return true
}

// member returns the joined room called name, or answers the request
// with an error and returns nil.
func (s *Session) member(name string, id []byte) *Room {
	if !validRoom(name) {
		s.sendError(CodeBadRequest, badRoomMessage, id)
		return nil
	}
	m, ok := s.rooms[name]
	if !ok {
		s.sendError(CodeNotMember, "you are not in room "+name, id)
		return nil
	}
	return m.room
}

// sendText sequences a chat message and fans it out to the room, then
// stores it; the sender's ack waits for the store.
func (s *Session) sendText(room, text string, id []byte) {
	switch {
	case len(text) == 0:
		s.sendError(CodeBadRequest, "text must not be empty", id)
		return
	case len(text) > MaxTextBytes:
		s.sendError(CodeTooLarge, "text is over 4096 bytes", id)
		return
	case !utf8.ValidString(text):
		s.sendError(CodeBadRequest, "text must be UTF-8", id)
		return
	}
	r := s.member(room, id)
	if r == nil {
		return
	}
	b := s.broker
	m := Message{Room: room, ID: b.messageID(), From: s.name, Text: text}
	var done func(error)
	if id != nil {
		done = func(err error) {
			if err != nil {
				s.sendError(CodeInternalError, "the message could not be stored", id)
				return
			}
			s.send(textFrame(ackFrame{Type: "ack", ID: id, Room: room, Seq: m.Seq}))
		}
	}

	r.mu.Lock()
	r.seq++
	r.latest = r.seq
	m.Seq = r.seq
	// Stamped under the lock, so ts rises with seq (unless the clock steps
	// back): the memory history's max age relies on it.
	m.TS = time.Now().UnixMilli()
	f := frame(opText, messagePayload(&m))
	n := r.broadcastLocked(f, nil)
	// Append under the lock too: the store sees each room's seqs in order.
	b.opts.History.Append(m, done)
	r.mu.Unlock()

	b.metrics.messages.Inc()
	b.metrics.deliveries.Add(float64(n))
}

func (b *Broker) messageID() string {
	return b.msgBase + "-" + strconv.FormatUint(b.nextMsg.Add(1), 36)
}

// refresh moves the socket's expiry to a new token's, if the token is
// valid and for the same user; otherwise nothing changes.
func (s *Session) refresh(token string, id []byte) {
	if token == "" {
		s.sendError(CodeBadRequest, "refresh needs a token", id)
		return
	}
	c, err := s.broker.opts.Verifier.Verify(token)
	if err != nil {
		code := authn.Code(err)
		s.sendError(code, "the token was refused: "+code, id)
		return
	}
	if c.Subject != s.sub {
		s.sendError(CodeInvalidToken, "the token is for another user", id)
		return
	}
	s.addJTI(c.ID)
	s.allowed = c.Rooms
	s.schedule(c.Expiry())
	s.send(textFrame(refreshedFrame{Type: "refreshed", Exp: c.Expiry().Unix()}))
	// The new token's rooms claim rules from now on: the socket leaves the
	// rooms it no longer allows, and is told so, as if it had asked.
	for name := range s.rooms {
		if !c.MayJoin(name) {
			s.leaveAndTell(name)
		}
	}
	if s.broker.opts.Verifier.Revoked(c.ID) { // logged out while we indexed it
		s.close(CloseTokenRevoked, true, nil)
	}
}
