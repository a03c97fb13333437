package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
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
	if len(trimmed) > 0 && trimmed[0] != '{' || len(trimmed) == 0 && len(data) > 0 {
		// Plain text chats in general, so wscat and the tutorial's page work.
		if s.allow(now, nil) {
			s.sendText(General, string(data), nil)
		}
		return
	}
	var req request
	err := json.Unmarshal(data, &req)
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
			s.sendError(CodeBadRequest, "room must be 1-64 of A-Za-z0-9_.-", req.ID)
			return
		}
		if err := s.join(req.Room, req.Since, req.ID, true); err != nil {
			s.broker.log.Error().Err(err).Str("room", req.Room).Msg("join")
			s.sendError("internal_error", "the room could not be joined; try again", req.ID)
		}
	case "leave":
		if s.member(req.Room, req.ID) != nil {
			s.leave(req.Room)
			s.send(textFrame(leftFrame{Type: "left", Room: req.Room}))
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
		s.sendError(CodeBadRequest, "room must be 1-64 of A-Za-z0-9_.-", id)
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
	m := Message{Room: room, ID: b.messageID(), From: s.name, Text: text, TS: time.Now().UnixMilli()}
	var done func(error)
	if id != nil {
		done = func(err error) {
			if err != nil {
				s.sendError("internal_error", "the message could not be stored", id)
				return
			}
			s.send(textFrame(ackFrame{Type: "ack", ID: id, Room: room, Seq: m.Seq}))
		}
	}

	r.mu.Lock()
	r.seq++
	r.latest = r.seq
	m.Seq = r.seq
	frame := frame(opText, messagePayload(&m))
	n := r.broadcastLocked(frame, nil)
	// Append under the lock too: the store sees each room's seqs in order.
	b.opts.History.Append(m, done)
	r.mu.Unlock()

	b.metrics.messages.Inc()
	b.metrics.deliveries.Add(float64(n))
}

func (b *Broker) messageID() string {
	return b.msgBase + "-" + strconv.FormatUint(b.nextMsg.Add(1), 36)
}

// maxReplay bounds the messages one join replays; a client further behind
// gets the newest ones with recovered false and pages back with history.
const maxReplay = 1000

// join makes the socket a member of room. With since, the stored messages
// after it are queued right behind `joined`, under the room's lock, so no
// live message can come between them, none is missed and none is sent
// twice. answer is false for the implicit join of general at open.
func (s *Session) join(name string, since *uint64, id []byte, answer bool) error {
	if s.allowed != nil && !slices.Contains(s.allowed, name) {
		s.sendError(CodeRoomForbidden, "your token does not allow room "+name, id)
		return nil
	}
	_, member := s.rooms[name]
	if !member && len(s.rooms) >= s.broker.opts.MaxRooms {
		s.sendError(CodeRoomForbidden, "you are in the most rooms a socket may join ("+strconv.Itoa(s.broker.opts.MaxRooms)+")", id)
		return nil
	}
	b := s.broker
	r, err := b.rooms.lockLive(name)
	if err != nil {
		return err
	}
	if answer && r.latest == 0 && len(r.members) == 0 && !s.mayCreateRoom() {
		// A room nobody is in and nothing was ever said in is a new name;
		// each name sent to costs the store a bucket for good.
		r.mu.Unlock()
		b.rooms.dropIfEmpty(r)
		s.sendError(CodeRoomForbidden, "you are creating rooms too fast; try again in a minute", id)
		return nil
	}
	defer r.mu.Unlock()

	joined := joinedFrame{Type: "joined", Room: name, Seq: r.latest}
	frames := [][]byte{nil}
	if since != nil {
		// A member already had everything after it joined, live.
		upTo := r.latest
		if member {
			upTo = s.rooms[name].since
		}
		replay, recovered, err := s.replay(name, *since, upTo)
		if err != nil {
			return err
		}
		frames = append(frames, replay...)
		joined.Recovered = &recovered
	}
	if answer {
		frames[0] = textFrame(joined)
	} else {
		frames = frames[1:]
	}
	if !member {
		if r.addLocked(s) && len(r.members) <= b.opts.PresenceLimit {
			r.broadcastLocked(textFrame(presenceFrame{Type: "presence", Room: name, Join: s.name}), s)
		}
		s.rooms[name] = membership{room: r, since: r.latest}
	}
	// Queued whole even past the bound: a client that asked to catch up is
	// not slow for it. replay keeps it to what the queue has room for.
	s.out.pushForce(frames...)
	return nil
}

// replay returns the frames of room's stored messages with since < seq <=
// upTo. It sends at most maxReplay messages and half the send queue's bytes,
// the newest ones when it must cut. complete is false when it cut or when
// the store had pruned some of them.
func (s *Session) replay(room string, since, upTo uint64) (frames [][]byte, complete bool, err error) {
	if since >= upTo {
		return nil, true, nil
	}
	h := s.broker.opts.History
	// Seqs may have gaps (a crash moves them on), so ask by count: one more
	// than a replay carries tells whether the client is too far behind.
	msgs, complete, err := h.After(room, since, maxReplay+1)
	if err == nil && len(msgs) > maxReplay {
		msgs, err = h.Before(room, upTo+1, maxReplay) // the newest ones
		complete = false
	}
	if err != nil {
		return nil, false, err
	}
	// Newest first, within the budget: half the send queue, less what is
	// already queued, so several joins in a row (a reconnect rejoining
	// every room) cannot fill the queue between them. Seqs above upTo are
	// left out: a member already got those live.
	budget := s.broker.opts.SendQueueBytes/2 - s.out.queued()
	for i := len(msgs) - 1; i >= 0; i-- {
		m := &msgs[i]
		if m.Seq > upTo {
			continue
		}
		if m.Seq <= since {
			break
		}
		f := frame(opText, messagePayload(m))
		if budget -= len(f); budget < 0 && len(frames) > 0 {
			complete = false
			break
		}
		frames = append(frames, f)
	}
	slices.Reverse(frames)
	return frames, complete, nil
}

// leave removes the socket from room, telling the others if it was the
// user's last socket there.
func (s *Session) leave(name string) {
	m, ok := s.rooms[name]
	if !ok {
		return
	}
	r := m.room
	delete(s.rooms, name)
	r.mu.Lock()
	if _, last := r.removeLocked(s); last && len(r.members) < s.broker.opts.PresenceLimit {
		r.broadcastLocked(textFrame(presenceFrame{Type: "presence", Room: name, Leave: s.name}), nil)
	}
	empty := len(r.members) == 0
	r.mu.Unlock()
	if empty {
		s.broker.rooms.dropIfEmpty(r)
	}
}

// history answers a page of stored messages.
func (s *Session) history(req *request) {
	limit := DefaultHistory
	if req.Limit != nil {
		limit = *req.Limit
		if limit < 1 || limit > MaxHistoryLimit {
			s.sendError(CodeBadRequest, "limit must be 1-200", req.ID)
			return
		}
	}
	if s.member(req.Room, req.ID) == nil {
		return
	}
	var before uint64
	if req.Before != nil {
		before = *req.Before
		if before == 0 {
			s.send(textFrame(historyFrame{Type: "history", Room: req.Room, Messages: []Message{}}))
			return
		}
	}
	msgs, err := s.broker.opts.History.Before(req.Room, before, limit)
	if err != nil {
		s.broker.log.Error().Err(err).Str("room", req.Room).Msg("history")
		s.sendError("internal_error", "history is unavailable; try again", req.ID)
		return
	}
	if msgs == nil {
		msgs = []Message{}
	}
	s.send(textFrame(historyFrame{Type: "history", Room: req.Room, Messages: s.withinBudget(msgs)}))
}

// withinBudget keeps the newest of msgs (oldest first) that fit in half the
// send queue, less what is queued already, as a join's replay does: 200
// messages of 4,096 characters that JSON escapes six bytes each are 5 MB,
// and a client asking for such pages without reading them would hold that
// much of the server's memory per request. At least one is kept; the
// client pages back from the first one it got.
func (s *Session) withinBudget(msgs []Message) []Message {
	budget := s.broker.opts.SendQueueBytes/2 - s.out.queued()
	for i := len(msgs) - 1; i >= 0; i-- {
		if budget -= len(messagePayload(&msgs[i])) + 1; budget < 0 && i < len(msgs)-1 {
			return msgs[i+1:]
		}
	}
	return msgs
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
		if errors.Is(err, authn.ErrMissingToken) {
			code = CodeInvalidToken
		}
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
	if s.allowed != nil {
		for name := range s.rooms {
			if !slices.Contains(s.allowed, name) {
				s.leave(name)
				s.send(textFrame(leftFrame{Type: "left", Room: name}))
			}
		}
	}
	if s.broker.opts.Verifier.Revoked(c.ID) { // logged out while we indexed it
		s.close(CloseTokenRevoked, true, nil)
	}
}
