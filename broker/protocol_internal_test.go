package broker

import (
	"encoding/json"
	"testing"
)

// The hand-written encoders give exactly encoding/json's bytes.
func TestHandEncodersMatchEncodingJSON(t *testing.T) {
	strs := []string{"", "alice", `quo"te`, `back\slash`, "<b>&amp;</b>", "Zoë", "\u2028line", "tab\there", "\x00ctl", "bad\xffutf8", "🙂"}
	for _, s := range strs {
		m := Message{Room: s, Seq: 42, ID: s + "-id", From: s, Text: s, TS: 1795883714123}
		want, _ := json.Marshal(struct {
			Type string `json:"type"`
			Message
		}{"message", m})
		if got := messagePayload(&m); string(got) != string(want) {
			t.Errorf("messagePayload(%q)\n got %s\nwant %s", s, got, want)
		}
		for _, page := range [][]Message{{}, {m}, {m, m}} {
			want, _ := json.Marshal(struct {
				Type     string    `json:"type"`
				Room     string    `json:"room"`
				Messages []Message `json:"messages"`
			}{"history", s, page})
			var entries [][]byte
			for i := range page {
				entries = append(entries, appendMessage(nil, &page[i]))
			}
			if got := historyPayload(s, entries); string(got) != string(want) {
				t.Errorf("historyPayload(%q, %d messages)\n got %s\nwant %s", s, len(page), got, want)
			}
		}
		for _, rooms := range [][]string{nil, {}, {s}, {"general", s}} {
			w := welcomeFrame{Type: "welcome", User: s, Session: "0123abcd", Exp: 1795883714, Rooms: rooms}
			want, _ := json.Marshal(w)
			if got := welcomePayload(&w); string(got) != string(want) {
				t.Errorf("welcomePayload(%q, %q)\n got %s\nwant %s", s, rooms, got, want)
			}
		}
	}
}
