package bench

import (
	"testing"
	"time"

	"github.com/chatd/chatd/bench/load"
)

// startProbe opens a load.Probe on url, a message every 5 ms, until
// finish, which returns the latencies.
func startProbe(tb testing.TB, url string) (finish func() *load.Hist) {
	tokens := make([]string, 2)
	for i, name := range []string{"probe-sender", "probe-receiver"} {
		t, err := load.Mint(secret, name, time.Now().Add(time.Hour))
		if err != nil {
			tb.Fatal(err)
		}
		tokens[i] = t
	}
	p, err := load.StartProbe(&load.Dialer{URL: url}, tokens[0], tokens[1], "probe", 5*time.Millisecond)
	if err != nil {
		tb.Fatal(err)
	}
	return p.Stop
}
