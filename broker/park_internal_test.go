package broker

import (
	"encoding/binary"
	"testing"
)

// wsFrame is a frame header for a payload of n bytes (masked or not)
// followed by the masking key and n payload bytes.
func wsFrame(n int, masked bool) []byte {
	f := []byte{0x81}
	var m byte
	if masked {
		m = 0x80
	}
	switch {
	case n < 126:
		f = append(f, m|byte(n))
	case n < 1<<16:
		f = append(f, m|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, m|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	if masked {
		f = append(f, 1, 2, 3, 4)
	}
	return append(f, make([]byte, n)...)
}

// The tracker is at a boundary after exactly the bytes that end frames,
// whatever the lengths' encodings and however the bytes are cut up.
func TestFrameTrackerFindsFrameEnds(t *testing.T) {
	var stream []byte
	ends := map[int]bool{0: true}
	for _, n := range []int{0, 1, 125, 126, 127, 300, 65535, 65536, 70000} {
		for _, masked := range []bool{true, false} {
			stream = append(stream, wsFrame(n, masked)...)
			ends[len(stream)] = true
		}
	}
	for _, chunk := range []int{1, 2, 3, 7, 512, len(stream)} {
		var tr frameTracker
		for at := 0; at < len(stream); {
			next := min(at+chunk, len(stream))
			tr.feed(stream[at:next])
			at = next
			if got := tr.atBoundary(); got != ends[at] {
				t.Fatalf("chunks of %d: at byte %d atBoundary %v, want %v", chunk, at, got, ends[at])
			}
		}
	}
}
