package broker

// A socket's rooms: joining (with the replay of what it missed), leaving,
// and history pages, each bounded by the socket's send queue.

import (
	"slices"
	"strconv"
	"time"
)

// replayPage bounds the messages of one page of a join's replay: the
// pages go out one after another as the socket takes them, so a client
// far behind gets every stored message, with no more of them in memory at
// once than a page and the send queue hold.
const replayPage = 1000

// catchUpBytes bounds a page after the first: each write must finish
// within the write timeout (at least half of it is left when a write
// starts), so the pages a slow link waits for are small (64 KiB in 5 s is
// 13 KB/s).
const catchUpBytes = 64 << 10

// join makes the socket a member of room. With since, the stored messages
// after it follow `joined`, oldest first, and the socket becomes a member
// under the room's lock with the last of them queued, so no live message
// can come between them, none is missed and none is sent twice. answer is
// false for the implicit join of general at open.
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
		if s.strike(time.Now()) { // as every rate_limited: ten in 10 s, then 1008
			s.sendError(CodeRateLimited, "you are creating new rooms too fast; try again in a few seconds", id)
		}
		return nil
	}

	joined := joinedFrame{Type: "joined", Room: name, Seq: r.latest}
	var frames [][]byte
	if answer {
		frames = append(frames, nil) // joined, once recovered is known
	}
	after, done := uint64(0), true
	if since != nil && member {
		// Already a member: it had everything after it joined, live, and
		// more comes live while this runs. Paging would put live messages
		// between old ones, so it gets one page, the newest of what it
		// missed, and pages back with history from there.
		page, complete, err := s.replayNewest(name, *since, s.rooms[name].since)
		if err != nil {
			r.mu.Unlock()
			return err
		}
		frames = append(frames, page...)
		joined.Recovered = &complete
	} else if since != nil {
		upTo := r.latest
		page, next, complete, err := s.replayWithin(name, *since, upTo, s.broker.opts.SendQueueBytes/2-s.out.queued(), replayPage)
		if err != nil {
			r.mu.Unlock()
			b.rooms.dropIfEmpty(r)
			return err
		}
		frames = append(frames, page...)
		joined.Recovered = &complete
		after, done = next, next >= upTo
	}
	if answer {
		frames[0] = textFrame(joined)
	}
	if !done {
		// More than a page behind: the rest follows page by page, outside
		// the room's lock, and the socket joins with the last page.
		r.mu.Unlock()
		s.out.pushForce(frames...)
		return s.catchUp(r, after, len(frames)-1)
	}
	// Queued under the lock, so no live message comes before them, and
	// whole even past the bound: a client that asked to catch up is not
	// slow for it. replay keeps it to a page.
	s.joinLocked(r, member)
	s.out.pushForce(frames...)
	r.mu.Unlock()
	return nil
}

// joinLocked makes the socket a member of r, whose lock is held, telling
// the others (unless it was one already).
func (s *Session) joinLocked(r *Room, member bool) {
	if member {
		return
	}
	if r.addLocked(s) && len(r.members) <= s.broker.opts.PresenceLimit {
		r.broadcastLocked(textFrame(presenceFrame{Type: "presence", Room: r.name, Join: s.name}), s)
	}
	s.rooms[r.name] = membership{room: r, since: r.latest}
}

// catchUp sends the stored messages of room r after seq, a page at a time
// as the socket takes them, and joins the socket with the last page; the
// first page held firstCount messages. It runs on the socket's read loop:
// the client's next request (a refresh too) waits for its replay, as it
// would have waited behind a long one. A socket that does not keep up is
// a slow consumer. If the replay cannot go on (the store fails), the
// socket is told `left`: it is not in the room.
func (s *Session) catchUp(r *Room, after uint64, firstCount int) (err error) {
	b, name := s.broker, r.name
	defer func() {
		if _, joined := s.rooms[name]; joined {
			return
		}
		if r != nil {
			b.rooms.dropIfEmpty(r) // the room the join may have made, left behind
		}
		if err != nil {
			b.log.Error().Err(err).Str("room", name).Msg("replay")
			s.send(textFrame(leftFrame{Type: "left", Room: name}))
			err = nil // answered: the joined went out, and now left
		}
	}()
	budget := min(catchUpBytes, b.opts.SendQueueBytes/2)
	// Ask the store for about as many messages as a page holds, judged
	// by the page before: reading a thousand to send a few dozen large
	// ones would hold the room's lock for nothing.
	limit := replayPage
	if firstCount > 0 {
		limit = max(16, min(replayPage, firstCount*budget/(b.opts.SendQueueBytes/2)+1))
	}
	for {
		// A page goes out once nothing waits behind the write in flight:
		// one page in the kernel's hands, the next ready behind it.
		if !s.out.waitBelow(1, b.opts.WriteTimeout) {
			if !s.out.gone() {
				s.slow()
			}
			return nil
		}
		// The socket takes its pages, so it is alive: its idle timeout
		// must not run out while its read loop is here.
		s.touch(time.Now())
		if r, err = b.rooms.lockLive(name); err != nil {
			return err
		}
		upTo := r.latest
		page, next, _, err := s.replayWithin(name, after, upTo, budget, limit)
		if err != nil {
			r.mu.Unlock()
			return err
		}
		if next >= upTo {
			// The last page, queued under the lock with the join: no live
			// message comes before it.
			s.joinLocked(r, false)
			s.out.pushForce(page...)
			r.mu.Unlock()
			return nil
		}
		r.mu.Unlock()
		s.out.pushForce(page...)
		after = next
		limit = max(16, min(replayPage, len(page)+len(page)/4))
	}
}

// replayWithin returns the frames of a page of room's stored messages with
// since < seq <= upTo, oldest first: at most limit of them and budget
// bytes, at least one. next is the seq the page ends at (upTo when it is
// the last page); complete is false when the store had pruned messages
// after since.
func (s *Session) replayWithin(room string, since, upTo uint64, budget, limit int) (frames [][]byte, next uint64, complete bool, err error) {
	if since >= upTo {
		return nil, upTo, true, nil
	}
	msgs, complete, err := s.broker.opts.History.After(room, since, limit)
	if err != nil {
		return nil, 0, false, err
	}
	next = since
	for i := range msgs {
		m := &msgs[i]
		if m.Seq > upTo {
			next = upTo
			break
		}
		f := frame(opText, messagePayload(m))
		if budget -= len(f); budget < 0 && len(frames) > 0 {
			return frames, next, complete, nil
		}
		frames = append(frames, f)
		next = m.Seq
	}
	if len(msgs) < limit {
		next = upTo // the store has nothing more up to upTo (seqs may have gaps)
	}
	return frames, next, complete, nil
}

// replayNewest returns the frames of room's stored messages with since <
// seq <= upTo, or of the newest of them that fit in one page (replayPage
// messages and half the send queue, less what is queued): complete is
// false when it cut or when the store had pruned some of them.
func (s *Session) replayNewest(room string, since, upTo uint64) (frames [][]byte, complete bool, err error) {
	if since >= upTo {
		return nil, true, nil
	}
	h := s.broker.opts.History
	// Seqs may have gaps (a crash moves them on), so ask by count: one
	// more than a page tells whether the client is too far behind.
	msgs, complete, err := h.After(room, since, replayPage+1)
	if err == nil && len(msgs) > replayPage {
		msgs, err = h.Before(room, upTo+1, replayPage) // the newest ones
		complete = false
	}
	if err != nil {
		return nil, false, err
	}
	budget := s.broker.opts.SendQueueBytes/2 - s.out.queued()
	for i := len(msgs) - 1; i >= 0; i-- {
		m := &msgs[i]
		if m.Seq > upTo {
			continue // it came live
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
