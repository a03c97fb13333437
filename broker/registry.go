package broker

import (
	"hash/maphash"
	"sync"
)

const registryShards = 64

// registry holds every open session, split into shards with a lock each so
// that thousands of sockets opening and closing at once do not queue on one
// mutex. It also indexes sessions by the jti of every token they have held,
// for logout.
type registry struct {
	seed   maphash.Seed
	shards [registryShards]registryShard
}

type registryShard struct {
	mu       sync.Mutex
	sessions map[*Session]struct{}
	byJTI    map[string][]*Session
}

func newRegistry() *registry {
	r := &registry{seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].sessions = make(map[*Session]struct{})
		r.shards[i].byJTI = make(map[string][]*Session)
	}
	return r
}

func (r *registry) shard(key string) *registryShard {
	return &r.shards[maphash.String(r.seed, key)%registryShards]
}

// add registers s under its id and its token's jti.
func (r *registry) add(s *Session, jti string) {
	sh := r.shard(s.id)
	sh.mu.Lock()
	sh.sessions[s] = struct{}{}
	sh.mu.Unlock()
	r.addJTI(s, jti)
}

// addJTI indexes s under another token it now holds.
func (r *registry) addJTI(s *Session, jti string) {
	sh := r.shard(jti)
	sh.mu.Lock()
	sh.byJTI[jti] = append(sh.byJTI[jti], s)
	sh.mu.Unlock()
}

// remove forgets s and its jtis.
func (r *registry) remove(s *Session, jtis []string) {
	sh := r.shard(s.id)
	sh.mu.Lock()
	delete(sh.sessions, s)
	sh.mu.Unlock()
	r.removeJTIs(s, jtis)
}

// removeJTIs unindexes s from jtis.
func (r *registry) removeJTIs(s *Session, jtis []string) {
	for _, jti := range jtis {
		sh := r.shard(jti)
		sh.mu.Lock()
		list := sh.byJTI[jti]
		for i, x := range list {
			if x == s {
				list[i] = list[len(list)-1]
				list[len(list)-1] = nil
				list = list[:len(list)-1]
				break
			}
		}
		if len(list) == 0 {
			delete(sh.byJTI, jti)
		} else {
			sh.byJTI[jti] = list
		}
		sh.mu.Unlock()
	}
}

// withJTI returns the sessions that have held the token jti.
func (r *registry) withJTI(jti string) []*Session {
	sh := r.shard(jti)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return append([]*Session(nil), sh.byJTI[jti]...)
}

// each calls f for every session, one shard at a time, without holding a
// shard's lock while f runs.
func (r *registry) each(f func(*Session)) {
	for i := range r.shards {
		r.eachIn(i, f)
	}
}

// eachIn calls f for every session of shard i, without holding the shard's
// lock while f runs.
func (r *registry) eachIn(i int, f func(*Session)) {
	sh := &r.shards[i]
	sh.mu.Lock()
	batch := make([]*Session, 0, len(sh.sessions))
	for s := range sh.sessions {
		batch = append(batch, s)
	}
	sh.mu.Unlock()
	for _, s := range batch {
		f(s)
	}
}

// len returns the number of sessions.
func (r *registry) len() int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		n += len(sh.sessions)
		sh.mu.Unlock()
	}
	return n
}
