package load

import (
	"encoding/json"
	"net"
	"testing"
	"time"
)

func TestMessageText(t *testing.T) {
	now := time.Unix(1700000000, 123456789)
	text := MessageText(nil, now, 3, 64)
	if len(text) != 64 {
		t.Fatalf("len %d, want 64: %q", len(text), text)
	}
	sent, sender, ok := ParseText(text)
	if !ok || sent != now.UnixNano() || sender != 3 {
		t.Fatalf("ParseText(%q) = %d, %d, %v", text, sent, sender, ok)
	}
	for _, bad := range []string{"", "hello", "123", "123.", "123.x"} {
		if _, _, ok := ParseText([]byte(bad)); ok {
			t.Errorf("ParseText(%q) ok", bad)
		}
	}
}

func TestHistJSON(t *testing.T) {
	a, b := NewHist(), NewHist()
	for i := 1; i <= 100; i++ {
		a.Record(time.Duration(i) * time.Millisecond)
		b.Record(time.Duration(i+100) * time.Millisecond)
	}
	data, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var back Hist
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	back.Merge(b)
	if back.Count() != 200 {
		t.Fatalf("count %d, want 200", back.Count())
	}
	if p := back.Quantile(50); p < 99 || p > 101 {
		t.Errorf("p50 = %v ms, want about 100", p)
	}
}

func TestRecorderTimeline(t *testing.T) {
	r := NewRecorder()
	r.Record(0, time.Millisecond)
	r.Record(1, 2*time.Millisecond)
	r.Tick(10)
	r.Record(2, 3*time.Millisecond)
	r.Freeze()
	r.Record(2, 4*time.Millisecond) // after the window: timeline only
	r.Tick(11)
	if got := r.Delivered(); got != 3 {
		t.Errorf("delivered %d, want 3", got)
	}
	line := MergeTimelines(r.Timeline(), r.Timeline())
	if len(line) != 2 || line[0].Delivered != 4 || line[1].Delivered != 4 {
		t.Errorf("timeline %+v", line)
	}
}

func TestParseIPRange(t *testing.T) {
	ips, err := ParseIPRange("127.0.0.2-127.0.0.4, 127.0.0.9")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9"}
	if len(ips) != len(want) {
		t.Fatalf("%v", ips)
	}
	for i, ip := range ips {
		if !ip.Equal(net.ParseIP(want[i])) {
			t.Errorf("ips[%d] = %v, want %s", i, ip, want[i])
		}
	}
	for _, bad := range []string{"127.0.0.9-127.0.0.2", "127.0.0.1-127.0.1.1", "x"} {
		if _, err := ParseIPRange(bad); err == nil {
			t.Errorf("ParseIPRange(%q) accepted", bad)
		}
	}
}

func TestLoopback(t *testing.T) {
	for url, want := range map[string]bool{
		"ws://127.0.0.1:3000/ws": true, "ws://127.9.9.9/ws": true, "ws://[::1]:80/ws": true,
		"ws://10.0.0.1/ws": false, "wss://192.168.1.1/ws": false,
	} {
		got, err := Loopback(url)
		if err != nil || got != want {
			t.Errorf("Loopback(%s) = %v, %v; want %v", url, got, err, want)
		}
	}
}

func TestWelcomeExp(t *testing.T) {
	for _, c := range []struct {
		frame string
		exp   int64
		ok    bool
	}{
		{`{"type":"welcome","user":"a","session":"s","exp":1795883714,"rooms":["general"]}`, 1795883714, true},
		{`{"type":"welcome","user":"a,\"exp\":5","session":"s","exp":7,"rooms":[]}`, 7, true},
		{`{"exp":9,"type":"welcome"}`, 9, true},
		{`{"type":"error","code":"x"}`, 0, false},
		{`not json`, 0, false},
	} {
		exp, ok := welcomeExp([]byte(c.frame))
		if exp != c.exp || ok != c.ok {
			t.Errorf("welcomeExp(%s) = %d, %v; want %d, %v", c.frame, exp, ok, c.exp, c.ok)
		}
	}
}
