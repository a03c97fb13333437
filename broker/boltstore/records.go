package boltstore

// The records on disk: room buckets, seq keys, each room's meta record and
// the encoding of one message.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"

	"github.com/chatd/chatd/broker"
)

// roomBucket returns the bucket of room, or nil if it never had a message.
func roomBucket(tx *bolt.Tx, room string) *bolt.Bucket {
	hist := tx.Bucket([]byte(historyBucket))
	if hist == nil {
		return nil
	}
	return hist.Bucket([]byte(room))
}

// seqKey is the database key of a seq: big-endian, so that byte order is
// seq order.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// meta is the per-room record written in the same transaction as the
// messages it describes.
type meta struct {
	last   uint64 // highest seq ever committed; pruning never lowers it
	pruned uint64 // highest seq ever pruned: After(since < pruned) is incomplete
	count  uint64 // messages now stored, so count retention needs no scan
}

// readMeta returns the meta of rb, zero for a room without one.
func readMeta(rb *bolt.Bucket) meta {
	v := rb.Get([]byte(metaKey))
	if len(v) < metaLen {
		return meta{}
	}
	return meta{
		last:   binary.BigEndian.Uint64(v[0:8]),
		pruned: binary.BigEndian.Uint64(v[8:16]),
		count:  binary.BigEndian.Uint64(v[16:24]),
	}
}

// encode returns m as a meta record value.
func (m meta) encode() []byte {
	b := make([]byte, 0, metaLen)
	b = binary.BigEndian.AppendUint64(b, m.last)
	b = binary.BigEndian.AppendUint64(b, m.pruned)
	return binary.BigEndian.AppendUint64(b, m.count)
}

// Message values are encoded as
//
//	version byte (1) | ts int64 big-endian | uvarint len(id) | id |
//	uvarint len(from) | from | text (the rest)
//
// Room and seq are already the bucket and the key. TS sits at a fixed
// offset so that age pruning reads it without decoding the rest.
const encodingV1 = 1

// encode appends the value encoding of m to b.
func encode(b []byte, m broker.Message) []byte {
	b = append(b, encodingV1)
	b = binary.BigEndian.AppendUint64(b, uint64(m.TS))
	b = binary.AppendUvarint(b, uint64(len(m.ID)))
	b = append(b, m.ID...)
	b = binary.AppendUvarint(b, uint64(len(m.From)))
	b = append(b, m.From...)
	return append(b, m.Text...)
}

// errCorrupt reports a stored value that does not decode.
var errCorrupt = errors.New("corrupt message record")

// tsOf returns the TS of an encoded message, or the largest TS for a value
// it cannot read, so that age pruning leaves such a value alone.
func tsOf(v []byte) int64 {
	if len(v) < 9 || v[0] != encodingV1 {
		return math.MaxInt64
	}
	return int64(binary.BigEndian.Uint64(v[1:9]))
}

// decode rebuilds the message stored under room and seq. The strings are
// copies, so the result outlives the transaction.
func decode(room string, seq uint64, v []byte) (broker.Message, error) {
	if len(v) < 9 || v[0] != encodingV1 {
		return broker.Message{}, fmt.Errorf("%s/%d: %w", room, seq, errCorrupt)
	}
	m := broker.Message{Room: room, Seq: seq, TS: int64(binary.BigEndian.Uint64(v[1:9]))}
	rest := v[9:]
	field := func() (string, bool) {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return "", false
		}
		s := string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
		return s, true
	}
	var ok1, ok2 bool
	m.ID, ok1 = field()
	m.From, ok2 = field()
	if !ok1 || !ok2 {
		return broker.Message{}, fmt.Errorf("%s/%d: %w", room, seq, errCorrupt)
	}
	m.Text = string(rest)
	return m, nil
}
