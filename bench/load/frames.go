package load

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// What chatd's frames say, read without decoding them where the load is
// (message frames, welcomes), and the timestamped texts senders send.

// Welcome is the first frame the server sends.
type welcome struct {
	Type string `json:"type"`
	Exp  int64  `json:"exp"`
	// error frame fields, in case the server refuses something first
	Code string `json:"code"`
}

var (
	messagePrefix = []byte(`{"type":"message",`)
	textKey       = []byte(`,"text":"`)
)

// handleText handles one text frame the server sent, which arrived at
// arrived (unix ns; 0: unknown, the read time is used). It reports whether
// the frame told the socket its token expired. data is not kept.
func (c *Conn) handleText(data []byte, arrived int64) (expired bool) {
	// The hot path: a message frame. Find the text without decoding the
	// whole frame; chatd writes "text" after room, seq, id and from.
	if bytes.HasPrefix(data, messagePrefix) {
		if c.events == nil || c.events.Message == nil {
			return false
		}
		now := c.arrival(arrived)
		// bytes.Index, not LastIndex: Index is vectorised, LastIndex is
		// Rabin-Karp and was 17% of the client's CPU under fan-out.
		i := bytes.Index(data, textKey)
		if i < 0 {
			c.events.Message(c, nil, now)
			return false
		}
		text := data[i+len(textKey):]
		if j := bytes.IndexByte(text, '"'); j >= 0 {
			text = text[:j]
		}
		c.events.Message(c, text, now)
		return false
	}
	if !c.welcomed {
		c.welcomed = true
		// Sends that never wait: the socket may have ended meanwhile (a
		// Dial that gave up, from another goroutine under a poller), and
		// ended's word is then already there.
		exp, ok := welcomeExp(data)
		if !ok {
			select {
			case c.welcome <- fmt.Errorf("first frame is not a welcome: %.200s", data):
			default:
			}
			return false
		}
		c.Exp = exp
		select {
		case c.welcome <- nil:
		default:
		}
		return false
	}
	typ := frameType(data)
	expired = typ == "error" && bytes.Contains(data, tokenExpiredCode)
	if expired {
		read := time.Now()
		at := read
		if arrived != 0 {
			at = time.Unix(0, arrived)
		}
		c.expiredRead.CompareAndSwap(0, read.UnixNano())
		c.expiredAt.CompareAndSwap(0, at.UnixNano())
	}
	if c.events != nil && c.events.Frame != nil {
		c.events.Frame(c, typ, data)
	}
	return expired
}

var (
	welcomePrefix = []byte(`{"type":"welcome",`)
	expKey        = []byte(`,"exp":`)
)

// welcomeExp returns the exp of a welcome frame. chatd writes the type
// first and exp as a plain integer, which is read without decoding the
// frame: encoding/json here was a sixth of chatbench's CPU while it
// connected thousands of sockets. Anything else is decoded properly.
func welcomeExp(data []byte) (int64, bool) {
	if bytes.HasPrefix(data, welcomePrefix) {
		if i := bytes.Index(data, expKey); i >= 0 {
			digits := data[i+len(expKey):]
			n := 0
			for n < len(digits) && digits[n] >= '0' && digits[n] <= '9' {
				n++
			}
			if n > 0 && n < len(digits) && (digits[n] == ',' || digits[n] == '}') {
				if exp, err := strconv.ParseInt(string(digits[:n]), 10, 64); err == nil {
					return exp, true
				}
			}
		}
	}
	var w welcome
	if err := json.Unmarshal(data, &w); err != nil || w.Type != "welcome" {
		return 0, false
	}
	return w.Exp, true
}

// tokenExpiredCode marks the error frame chatd writes, in the same write,
// right before close 4001.
var tokenExpiredCode = []byte(`"code":"token_expired"`)

// frameType returns the "type" of a server frame, which chatd writes first.
func frameType(data []byte) string {
	const key = `{"type":"`
	if !bytes.HasPrefix(data, []byte(key)) {
		var v struct{ Type string }
		_ = json.Unmarshal(data, &v)
		return v.Type
	}
	rest := data[len(key):]
	if j := bytes.IndexByte(rest, '"'); j >= 0 {
		return string(rest[:j])
	}
	return ""
}

// ErrorCode returns the "code" of an error frame.
func ErrorCode(frame []byte) string {
	var v struct{ Code string }
	_ = json.Unmarshal(frame, &v)
	return v.Code
}

// MessageText returns a chat text of size bytes (at least 24) that carries
// the send time and the sender's number, for ParseText.
func MessageText(dst []byte, sent time.Time, sender, size int) []byte {
	dst = strconv.AppendInt(dst, sent.UnixNano(), 10)
	dst = append(dst, '.')
	dst = strconv.AppendInt(dst, int64(sender), 10)
	dst = append(dst, '.')
	for len(dst) < size {
		dst = append(dst, 'x')
	}
	return dst
}

// ParseText returns the send time (unix nanos) and sender of a text made by
// MessageText; ok is false for any other text.
func ParseText(text []byte) (sentNanos int64, sender int, ok bool) {
	i := 0
	for i < len(text) && text[i] >= '0' && text[i] <= '9' {
		sentNanos = sentNanos*10 + int64(text[i]-'0')
		i++
	}
	if i == 0 || i >= len(text) || text[i] != '.' {
		return 0, 0, false
	}
	i++
	j := i
	for i < len(text) && text[i] >= '0' && text[i] <= '9' {
		sender = sender*10 + int(text[i]-'0')
		i++
	}
	return sentNanos, sender, i > j
}
