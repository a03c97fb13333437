package bench

import (
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/bench/load"
)

// BenchmarkIdleMemory measures what one authenticated idle socket costs
// the server: heap and RSS growth after GC, per socket. The client ends
// are bare TCP connections (load.DialIdle); their own cost is measured
// first with plain TCP pairs and taken off. One op is one round: open N
// sockets, measure, close them.
func BenchmarkIdleMemory(b *testing.B) {
	for _, n := range []int{5000} {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			var heap, rss, client float64
			for range b.N {
				heap, rss, client = idleRound(b, n)
			}
			b.ReportMetric(heap, "heap-B/socket")
			b.ReportMetric(rss, "rss-B/socket")
			b.ReportMetric(client, "client-heap-B/socket")
		})
	}
}

func idleRound(b *testing.B, n int) (heap, rss, client float64) {
	pairHeap, pairRSS := tcpPairCost(b, n)
	s := newServer(b)
	defer s.close()
	tokens := mint(b, n, 8, time.Hour)
	heap0, rss0 := memory()
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := load.DialIdle(s.url, tokens[i], sourceIPs[i%len(sourceIPs)], 5*time.Second)
				if err != nil {
					b.Error(err)
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	waitFor(b, 10*time.Second, func() bool { return s.broker.Sockets() == n })
	time.Sleep(500 * time.Millisecond) // welcome writers and handshake goroutines finish
	heap1, rss1 := memory()
	// The client end of each socket is one dialled TCP conn: half a pair.
	heap = float64(heap1-heap0)/float64(n) - pairHeap/2
	rss = float64(rss1-rss0)/float64(n) - pairRSS/2
	return heap, rss, pairHeap / 2
}

// tcpPairCost returns the heap and RSS growth of one connected pair of
// plain TCP connections on loopback (the dialled end and the accepted end).
func tcpPairCost(b *testing.B, n int) (heap, rss float64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	heap0, rss0 := memory()
	dialed := make([]net.Conn, 0, n)
	for i := range n {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: sourceIPs[i%len(sourceIPs)]}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		dialed = append(dialed, c)
	}
	held := make([]net.Conn, 0, n)
	for range n {
		held = append(held, <-accepted)
	}
	heap1, rss1 := memory()
	for i := range dialed {
		dialed[i].Close()
		held[i].Close()
	}
	return float64(heap1-heap0) / float64(n), float64(rss1-rss0) / float64(n)
}

// memory returns the live heap and the process's resident set after a GC.
func memory() (heap, rss int64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse), residentBytes()
}

func residentBytes() int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	if len(fields) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(fields[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
