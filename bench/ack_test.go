package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/chatd/chatd/bench/load"
	"github.com/chatd/chatd/broker"
	"github.com/chatd/chatd/broker/boltstore"
	"github.com/lxzan/gws"
	bolt "go.etcd.io/bbolt"
)

// ackClient sends one message at a time and waits for its ack, so the ack
// latency it sees is the store's commit latency plus the round trip.
type ackClient struct {
	gws.BuiltinEventHandler
	acks chan time.Time
}

func (c *ackClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	if strings.HasPrefix(string(m.Bytes()), `{"type":"ack"`) {
		c.acks <- time.Now()
	}
	m.Close()
}

// BenchmarkAck measures what durability costs a sender: acked messages per
// second and ack latency, with the bbolt store (group commit, fsync on)
// versus the memory ring. 64 sockets in 16 rooms each keep one message in
// flight; b.N is the total number of acked messages.
func BenchmarkAck(b *testing.B) {
	for _, store := range []string{"memory", "bolt"} {
		b.Run("store="+store, func(b *testing.B) {
			var history broker.History = broker.NewMemoryHistory(10000, 0)
			if store == "bolt" {
				db, err := bolt.Open(filepath.Join(b.TempDir(), "chatd.db"), 0o600, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				s, err := boltstore.New(db, boltstore.Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				history = s
			}
			runAckBench(b, history)
		})
	}
}

func runAckBench(b *testing.B, history broker.History) {
	const sockets, rooms = 64, 16
	tokens, err := authn.NewTokens(authn.TokenConfig{Secret: []byte(strings.Repeat("k", 32)), TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	br := broker.New(broker.Options{Verifier: tokens, History: history, RateLimit: 1e6})
	srv := httptest.NewServer(br)
	defer func() { srv.CloseClientConnections(); srv.Close(); br.Close() }()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"

	type sock struct {
		conn *gws.Conn
		h    *ackClient
		room string
	}
	var socks []sock
	for i := range sockets {
		issued, err := tokens.Issue(&authn.User{ID: fmt.Sprint(i), Name: fmt.Sprint("acker", i)})
		if err != nil {
			b.Fatal(err)
		}
		h := &ackClient{acks: make(chan time.Time, 1)}
		conn, _, err := gws.NewClient(h, &gws.ClientOption{Addr: url, RequestHeader: http.Header{"Authorization": {"Bearer " + issued.Token}}})
		if err != nil {
			b.Fatal(err)
		}
		go conn.ReadLoop()
		room := fmt.Sprint("room", i%rooms)
		_ = conn.WriteString(`{"type":"leave","room":"general"}`)
		_ = conn.WriteString(`{"type":"join","room":"` + room + `"}`)
		socks = append(socks, sock{conn, h, room})
	}

	per := max(1, b.N/sockets)
	lat := load.NewHist() // the same HDR histogram as every other benchmark here
	var latMu sync.Mutex
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for _, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			frame := `{"type":"send","room":"` + s.room + `","text":"durable?","id":1}`
			for range per {
				sent := time.Now()
				if s.conn.WriteString(frame) != nil {
					return
				}
				select {
				case at := <-s.h.acks:
					latMu.Lock()
					lat.Record(at.Sub(sent))
					latMu.Unlock()
				case <-time.After(10 * time.Second):
					b.Error("no ack within 10s")
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if lat.Count() == 0 {
		b.Fatal("no acks")
	}
	b.ReportMetric(float64(lat.Count())/elapsed.Seconds(), "acks/s")
	b.ReportMetric(lat.Quantile(50), "p50-ms")
	b.ReportMetric(lat.Quantile(99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
