package broker

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"strconv"

	"github.com/chatd/chatd/authn"
)

// Limits of the message protocol (PROTOCOL.md).
const (
	MaxTextBytes     = 4096
	MaxRoomNameBytes = 64
	MaxHistoryLimit  = 200
	DefaultHistory   = 50
	maxClientIDBytes = 128
)

// Error codes of `error` frames.
const (
	CodeBadRequest    = "bad_request"
	CodeUnknownType   = "unknown_type"
	CodeNotMember     = "not_member"
	CodeRoomForbidden = "room_forbidden"
	CodeTooLarge      = "too_large"
	CodeRateLimited   = "rate_limited"
	CodeInvalidToken  = authn.CodeInvalidToken
	CodeTokenExpired  = authn.CodeTokenExpired
	CodeTokenRevoked  = authn.CodeTokenRevoked
	// CodeInternalError is the server's own failure (its store), not the
	// request's: the client may try again.
	CodeInternalError = "internal_error"
)

// ExpiredMessage is the text of the token_expired error that precedes close
// 4001, as the original tutorial worded it.
const ExpiredMessage = "Your token is no longer valid. Please reauthenticate."

// request is a client frame. Pointer fields tell "absent" from zero.
type request struct {
	Type   string          `json:"type"`
	Room   string          `json:"room"`
	Text   *string         `json:"text"`
	ID     json.RawMessage `json:"id"`
	Since  *uint64         `json:"since"`
	Before *uint64         `json:"before"`
	Limit  *int            `json:"limit"`
	Token  string          `json:"token"`
}

// Server frames. Each has its type first so a reader can switch early.
type (
	welcomeFrame struct {
		Type    string   `json:"type"`
		User    string   `json:"user"`
		Session string   `json:"session"`
		Exp     int64    `json:"exp"`
		Rooms   []string `json:"rooms"`
	}
	ackFrame struct {
		Type string          `json:"type"`
		ID   json.RawMessage `json:"id"`
		Room string          `json:"room"`
		Seq  uint64          `json:"seq"`
	}
	joinedFrame struct {
		Type      string `json:"type"`
		Room      string `json:"room"`
		Seq       uint64 `json:"seq"`
		Recovered *bool  `json:"recovered,omitempty"`
	}
	leftFrame struct {
		Type string `json:"type"`
		Room string `json:"room"`
	}
	presenceFrame struct {
		Type  string    `json:"type"`
		Room  string    `json:"room"`
		Users *[]string `json:"users,omitempty"`
		Join  string    `json:"join,omitempty"`
		Leave string    `json:"leave,omitempty"`
	}
	expiringFrame struct {
		Type string `json:"type"`
		Exp  int64  `json:"exp"`
		In   int64  `json:"in"`
	}
	refreshedFrame struct {
		Type string `json:"type"`
		Exp  int64  `json:"exp"`
	}
	errorFrame struct {
		Type    string          `json:"type"`
		Code    string          `json:"code"`
		Message string          `json:"message"`
		ID      json.RawMessage `json:"id,omitempty"`
	}
)

// WebSocket opcodes we write.
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// frame returns a complete unmasked server frame (FIN set) for payload, so
// one encoding can be queued to any number of sockets and written with
// others in a single syscall.
func frame(opcode byte, payload []byte) []byte {
	n := len(payload)
	var hdr [10]byte
	hdr[0] = 0x80 | opcode
	h := 2
	switch {
	case n < 126:
		hdr[1] = byte(n)
	case n <= 0xFFFF:
		hdr[1] = 126
		binary.BigEndian.PutUint16(hdr[2:], uint16(n))
		h = 4
	default:
		hdr[1] = 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(n))
		h = 10
	}
	out := make([]byte, h+n)
	copy(out, hdr[:h])
	copy(out[h:], payload)
	return out
}

// textFrame encodes v as JSON in a text frame.
func textFrame(v any) []byte {
	payload, err := json.Marshal(v)
	if err != nil {
		// Every frame type above marshals; this is a programming error.
		panic("broker: encode frame: " + err.Error())
	}
	return frame(opText, payload)
}

// messagePayload encodes a message frame by hand: it is the hot path of
// fan-out and the generic encoder is several times slower.
func messagePayload(m *Message) []byte {
	b := make([]byte, 0, 96+len(m.Room)+len(m.ID)+len(m.From)+len(m.Text)+len(m.Text)/8)
	return appendMessageFields(append(b, `{"type":"message",`...), m)
}

// historyPayload encodes a history frame by hand from its messages'
// encodings (appendMessage's), which the page's budget has measured already.
func historyPayload(room string, msgs [][]byte) []byte {
	n := 48 + len(room)
	for _, m := range msgs {
		n += len(m) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"type":"history","room":`...)
	b = appendJSONString(b, room)
	b = append(b, `,"messages":[`...)
	for i, m := range msgs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, m...)
	}
	return append(b, "]}"...)
}

// appendMessage appends m as a JSON object: a history page's entry.
func appendMessage(b []byte, m *Message) []byte {
	return appendMessageFields(append(b, '{'), m)
}

// appendMessageFields appends m's fields and the closing brace of the
// object they are in, as encoding/json would write a Message.
func appendMessageFields(b []byte, m *Message) []byte {
	b = append(b, `"room":`...)
	b = appendJSONString(b, m.Room)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, m.Seq, 10)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, m.ID)
	b = append(b, `,"from":`...)
	b = appendJSONString(b, m.From)
	b = append(b, `,"text":`...)
	b = appendJSONString(b, m.Text)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, m.TS, 10)
	return append(b, '}')
}

// welcomePayload encodes the welcome frame by hand: it is written once per
// handshake, and the generic encoder was a visible part of one.
func welcomePayload(w *welcomeFrame) []byte {
	b := make([]byte, 0, 80+len(w.User)+len(w.Session)+16*len(w.Rooms))
	b = append(b, `{"type":"welcome","user":`...)
	b = appendJSONString(b, w.User)
	b = append(b, `,"session":`...)
	b = appendJSONString(b, w.Session)
	b = append(b, `,"exp":`...)
	b = strconv.AppendInt(b, w.Exp, 10)
	b = append(b, `,"rooms":`...)
	if w.Rooms == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, r := range w.Rooms {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, r)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendJSONString appends s as a JSON string, escaping like encoding/json
// (including <, > and & so the frame is safe to embed in HTML).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= 0x80 {
			// Rare in practice; let encoding/json handle every corner
			// (invalid UTF-8, U+2028) exactly as elsewhere.
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			_ = enc.Encode(s)
			return append(b, bytes.TrimRight(buf.Bytes(), "\n")...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// closeFrame returns a close frame with code and reason (at most 123
// bytes, so the payload fits a control frame).
func closeFrame(code uint16, reason string) []byte {
	reason = reason[:min(len(reason), 123)]
	p := make([]byte, 2+len(reason))
	binary.BigEndian.PutUint16(p, code)
	copy(p[2:], reason)
	return frame(opClose, p)
}

// badRoomMessage is the error's text for a room name validRoom refuses.
const badRoomMessage = "room must be 1-64 of A-Za-z0-9_.-"

// validRoom reports whether name is 1-64 of A-Za-z0-9_.-.
func validRoom(name string) bool {
	if len(name) < 1 || len(name) > MaxRoomNameBytes {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// validClientID reports whether id, when present, is a short JSON string
// or number: it is echoed back, so it must not be a vehicle for bulk data.
func validClientID(id json.RawMessage) bool {
	if len(id) == 0 {
		return true
	}
	if len(id) > maxClientIDBytes {
		return false
	}
	c := id[0]
	return c == '"' || c == '-' || (c >= '0' && c <= '9')
}

// wrongType says which field of a request had a value of the wrong type.
func wrongType(e *json.UnmarshalTypeError) string {
	want := e.Type.String()
	switch e.Type.Kind() {
	case reflect.String:
		want = "a string"
	case reflect.Int, reflect.Int64:
		want = "an integer"
	case reflect.Uint64:
		want = "an integer of 0 or more"
	}
	return e.Field + " must be " + want + ", not " + e.Value
}
