package broker_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/chatd/chatd/broker"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// expiringToken returns a token for name whose exp is the next whole second
// at least d away (exp is whole seconds on the wire).
func expiringToken(t testing.TB, name string, d time.Duration) (string, time.Time) {
	exp := time.Now().Add(d).Truncate(time.Second).Add(time.Second)
	c := claims(name, time.Minute)
	c.ExpiresAt = jwt.NewNumericDate(exp)
	return sign(t, c), exp
}

func TestIdleSocketsCloseAtExpiry(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, broker.Options{Metrics: reg})
	const n = 20
	type sock struct {
		c   *client
		exp time.Time
	}
	var socks []sock
	for i := range n {
		tok, exp := expiringToken(t, "idle", time.Second+time.Duration(i%3)*time.Second)
		socks = append(socks, sock{e.dial(tok), exp})
	}
	for _, s := range socks {
		var errFrame frame
		for errFrame == nil {
			select {
			case f := <-s.c.frames:
				if f.str("type") == "error" {
					errFrame = f
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no token_expired error frame")
			}
		}
		if errFrame.str("code") != "token_expired" || errFrame.str("message") != "Your token is no longer valid. Please reauthenticate." {
			t.Fatalf("error frame = %v", errFrame)
		}
		ev := s.c.waitClose(5 * time.Second)
		if ev.code != 4001 {
			t.Fatalf("close code %d (%q), want 4001", ev.code, ev.reason)
		}
		late := ev.at.Sub(s.exp)
		if late < 0 {
			t.Fatalf("closed %v before exp", -late)
		}
		if late > 100*time.Millisecond {
			t.Errorf("closed %v after exp, want within 100ms", late)
		}
	}
	if got := closesCounted(t, reg, "4001"); got != n {
		t.Errorf("chatd_server_closes_total{code=\"4001\"} = %v, want %d", got, n)
	}
}

// closesCounted reads chatd_server_closes_total{code} from reg.
func closesCounted(t *testing.T, reg *prometheus.Registry, code string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "chatd_server_closes_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == code {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no chatd_server_closes_total{code=%q}", code)
	return 0
}

func TestExpiringWarning(t *testing.T) {
	e := newEnv(t, broker.Options{ExpiryWarning: time.Second})
	tok, exp := expiringToken(t, "warned", 2500*time.Millisecond)
	c := e.dial(tok)
	w := c.expect("expiring")
	if time.Now().Before(exp.Add(-time.Second)) {
		t.Fatalf("expiring came before exp - warning")
	}
	if w.num("exp") != uint64(exp.Unix()) || w.num("in") != 1 {
		t.Fatalf("expiring = %v, want exp %d in 1", w, exp.Unix())
	}
	if ev := c.waitClose(3 * time.Second); ev.code != 4001 {
		t.Fatalf("close %d", ev.code)
	}
}

func TestLeewayMovesTheClose(t *testing.T) {
	e := newEnv(t, broker.Options{Leeway: 500 * time.Millisecond})
	tok, exp := expiringToken(t, "lenient", time.Second)
	c := e.dial(tok)
	ev := c.waitClose(5 * time.Second)
	if ev.code != 4001 || ev.at.Before(exp.Add(500*time.Millisecond)) {
		t.Fatalf("closed %d at exp%+v, want 4001 no earlier than exp+500ms", ev.code, ev.at.Sub(exp))
	}
}

// A token whose exp is past what unix nanoseconds hold (the year 2262;
// 9999999999 is a common "never expires") keeps a socket that works.
func TestFarFutureExpiry(t *testing.T) {
	e := newEnv(t, broker.Options{})
	c := claims("forever", time.Minute)
	c.ExpiresAt = jwt.NewNumericDate(time.Unix(9999999999, 0))
	cl := e.dial(sign(t, c))
	cl.send(map[string]any{"type": "send", "room": "general", "text": "still here", "id": "1"})
	if m := cl.expect("message"); m.str("text") != "still here" {
		t.Fatalf("message %v", m)
	}
	cl.expect("ack")
}

// A burst of expiries larger than the wheel fires between yields, and
// large enough to be shared among goroutines where there are several
// processors, whose clients answer the close at once: their teardowns
// wait for the burst's end (Session.resume, Wheel.AfterBurst), and none is
// lost on the way: every socket is told 4001, never early, and torn down.
func TestExpiryBurstWithAnsweringClients(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2)) // shared, even on one CPU
	e := newEnv(t, broker.Options{})
	const n = 600
	exp := time.Now().Truncate(time.Second).Add(8 * time.Second) // time to dial them all under -race
	c := claims("burst", time.Minute)
	c.ExpiresAt = jwt.NewNumericDate(exp)
	tok := sign(t, c)
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = e.dial(tok)
	}
	if time.Until(exp) < 500*time.Millisecond {
		t.Fatalf("dialing %d sockets took until %v before their exp: the machine is too slow for this test", n, time.Until(exp))
	}
	for i, c := range clients {
		ev := c.waitClose(10 * time.Second)
		if ev.code != 4001 {
			t.Fatalf("socket %d: close code %d (%q), want 4001", i, ev.code, ev.reason)
		}
		if ev.at.Before(exp) {
			t.Fatalf("socket %d closed %v before exp", i, exp.Sub(ev.at))
		}
	}
	waitFor(t, 10*time.Second, "every socket of the burst torn down", func() bool { return e.broker.Sockets() == 0 })
}
