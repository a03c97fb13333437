package broker

// A socket's rooms: joining (with the replay of what it missed), leaving,
// and history pages, each bounded by the socket's send queue.

import (
	"slices"
	"strconv"
)

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
		s.sendError(CodeRateLimited, "you are creating new rooms too fast; try again in a few seconds", id)
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

// leaveAndTell leaves room and answers `left`, as the socket asked.
func (s *Session) leaveAndTell(name string) {
	s.leave(name)
	s.send(textFrame(leftFrame{Type: "left", Room: name}))
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
			s.sendError(CodeBadRequest, "limit must be 1-"+strconv.Itoa(MaxHistoryLimit), req.ID)
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
			s.send(frame(opText, historyPayload(req.Room, nil)))
			return
		}
	}
	msgs, err := s.broker.opts.History.Before(req.Room, before, limit)
	if err != nil {
		s.broker.log.Error().Err(err).Str("room", req.Room).Msg("history")
		s.sendError(CodeInternalError, "history is unavailable; try again", req.ID)
		return
	}
	s.send(frame(opText, historyPayload(req.Room, s.withinBudget(msgs))))
}

// withinBudget encodes the newest of msgs (oldest first) that fit in half
// the send queue, less what is queued already, as a join's replay does:
// 200 messages of 4,096 characters that JSON escapes six bytes each are
// 5 MB, and a client asking for such pages without reading them would
// hold that much of the server's memory per request. At least one is
// kept; the client pages back from the first one it got.
func (s *Session) withinBudget(msgs []Message) [][]byte {
	budget := s.broker.opts.SendQueueBytes/2 - s.out.queued()
	out := make([][]byte, 0, len(msgs))
	for i := len(msgs) - 1; i >= 0; i-- {
		m := appendMessage(nil, &msgs[i])
		if budget -= len(m) + 1; budget < 0 && len(out) > 0 {
			break
		}
		out = append(out, m)
	}
	slices.Reverse(out)
	return out
}
