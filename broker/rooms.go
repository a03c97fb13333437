package broker

import (
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
)

const roomShards = 64

// Room is one chat room: its members, its seq counter and its presence.
// Its lock orders everything that happens in the room: seq assignment,
// history appends, fan-out, joins and replays. Nothing under it blocks on a
// socket.
type Room struct {
	name string

	mu      sync.Mutex
	seq     uint64           // the last seq handed out
	latest  uint64           // the seq of the room's latest message (below seq only after a crash)
	members []*Session       // fan-out list
	index   map[*Session]int // position in members
	users   map[string]int   // username -> sockets in the room, for presence
	dead    bool             // removed from the directory; look it up again
}

// rooms is the directory of live rooms, sharded so joins to different rooms
// do not contend. A room with no members is dropped: it costs nothing, and
// its seq is recovered from the history when it comes back.
type rooms struct {
	history History
	seed    maphash.Seed
	shards  [roomShards]roomShard
}

type roomShard struct {
	mu    sync.Mutex
	rooms map[string]*Room
}

func newRooms(h History) *rooms {
	rs := &rooms{history: h, seed: maphash.MakeSeed()}
	for i := range rs.shards {
		rs.shards[i].rooms = make(map[string]*Room)
	}
	return rs
}

func (rs *rooms) shard(name string) *roomShard {
	return &rs.shards[maphash.String(rs.seed, name)%roomShards]
}

// lockLive returns the room called name, created if needed, locked. The
// caller unlocks it.
func (rs *rooms) lockLive(name string) (*Room, error) {
	for {
		sh := rs.shard(name)
		sh.mu.Lock()
		r := sh.rooms[name]
		if r == nil {
			var err error
			if r, err = rs.load(name); err != nil {
				sh.mu.Unlock()
				return nil, err
			}
			sh.rooms[name] = r
		}
		sh.mu.Unlock()
		r.mu.Lock()
		if !r.dead {
			return r, nil
		}
		r.mu.Unlock() // lost a race with the last member leaving
	}
}

// load makes the Room for name from what the history remembers of it.
func (rs *rooms) load(name string) (*Room, error) {
	latest, err := rs.history.LastSeq(name)
	if err != nil {
		return nil, fmt.Errorf("room %s: read last seq: %w", name, err)
	}
	floor, err := rs.history.SeqFloor(name)
	if err != nil {
		return nil, fmt.Errorf("room %s: read seq floor: %w", name, err)
	}
	return &Room{name: name, seq: floor, latest: latest, index: make(map[*Session]int), users: make(map[string]int)}, nil
}

// dropIfEmpty removes r from the directory if it has no members.
func (rs *rooms) dropIfEmpty(r *Room) {
	sh := rs.shard(r.name)
	sh.mu.Lock()
	r.mu.Lock()
	if len(r.members) == 0 && !r.dead {
		r.dead = true
		delete(sh.rooms, r.name)
	}
	r.mu.Unlock()
	sh.mu.Unlock()
}

// addLocked adds s; r.mu is held. It reports whether s is the first socket
// of its user in the room.
func (r *Room) addLocked(s *Session) bool {
	r.index[s] = len(r.members)
	r.members = append(r.members, s)
	r.users[s.name]++
	return r.users[s.name] == 1
}

// removeLocked removes s; r.mu is held. It reports whether s was the last
// socket of its user in the room.
func (r *Room) removeLocked(s *Session) (wasMember, lastOfUser bool) {
	i, ok := r.index[s]
	if !ok {
		return false, false
	}
	last := len(r.members) - 1
	r.members[i] = r.members[last]
	r.index[r.members[i]] = i
	r.members[last] = nil
	r.members = r.members[:last]
	delete(r.index, s)
	r.users[s.name]--
	if r.users[s.name] == 0 {
		delete(r.users, s.name)
		return true, true
	}
	return true, false
}

// userList returns the usernames in the room, sorted; r.mu is held.
func (r *Room) userList() []string {
	names := make([]string, 0, len(r.users))
	for n := range r.users {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// broadcastLocked queues frame to every member except skip; r.mu is held.
// It never blocks: a member whose queue is full is evicted as a slow
// consumer, and the members it finds idle are written by a fanout.
func (r *Room) broadcastLocked(frame []byte, skip *Session) int {
	var idle fanout
	n := 0
	for _, m := range r.members {
		if m == skip {
			continue
		}
		n++
		switch ok, mine := m.out.offer(frame); {
		case !ok:
			m.slow()
		case mine:
			idle.add(&m.out)
		}
	}
	idle.start()
	return n
}
