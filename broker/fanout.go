package broker

import (
	"runtime"
	"sync"
)

// fanout writes a broadcast to the members it found idle. Each idle member
// would otherwise start a flusher goroutine of its own: at a thousand
// members that is a thousand goroutines created, scheduled and ended per
// message, a tenth of the fan-out's cost. Instead every chunk of members
// gets one goroutine that writes them in turn, without waiting for any
// (outbox.drain), so a socket that cannot take its frame now holds up no
// other; on several cores the chunks run in parallel.
//
// Members that are already busy are not in it: their writer picks the
// frame up with whatever else has queued, in one writev.
type fanout struct {
	chunk *[]*outbox
}

// fanoutChunk is how many members one goroutine writes: enough to make
// the goroutine's cost vanish against the writes, few enough that a large
// room spreads over the cores.
const fanoutChunk = 128

var fanoutChunks = sync.Pool{New: func() any {
	s := make([]*outbox, 0, fanoutChunk)
	return &s
}}

// add gives o, whose writer the caller has just become (outbox.offer), to
// the fan-out.
func (f *fanout) add(o *outbox) {
	if f.chunk == nil {
		f.chunk = fanoutChunks.Get().(*[]*outbox)
	}
	*f.chunk = append(*f.chunk, o)
	if len(*f.chunk) == fanoutChunk {
		go drainAll(f.chunk)
		f.chunk = nil
	}
}

// start writes the members added since the last full chunk.
func (f *fanout) start() {
	if f.chunk != nil {
		go drainAll(f.chunk)
		f.chunk = nil
	}
}

// drainAll writes each outbox of chunk in turn, then returns the chunk to
// the pool.
func drainAll(chunk *[]*outbox) {
	// Let the read loops already runnable (other senders' messages)
	// broadcast first: their frames then join this chunk's writes, and
	// each member gets more frames per write.
	runtime.Gosched()
	for _, o := range *chunk {
		o.drain()
	}
	clear(*chunk)
	*chunk = (*chunk)[:0]
	fanoutChunks.Put(chunk)
}
