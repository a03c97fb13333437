//go:build linux && (amd64 || arm64)

package load

import (
	"net"
	"testing"
	"time"
)

// The arrival time of a read is the kernel's: after the peer wrote, and
// no later than the read returned, even when the reader gets to the data
// long after it arrived.
func TestArrivalTimestamps(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := withArrival(raw, false)
	defer c.Close()
	if _, ok := c.(*arrivalConn); !ok {
		t.Fatal("receive timestamps refused on loopback TCP")
	}
	srv := <-accepted
	defer srv.Close()

	// The kernel turns receive timestamps on a little after the first
	// socket asks for them: wait until reads carry one.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := srv.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		if arrivalOf(c) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no receive timestamp after 5 s")
		}
	}
	for range 3 {
		before := time.Now()
		if _, err := srv.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		wrote := time.Now()
		time.Sleep(20 * time.Millisecond) // the reader is busy elsewhere
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		read := time.Now()
		if err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
		at := time.Unix(0, arrivalOf(c))
		if at.Before(before) || at.After(wrote.Add(10*time.Millisecond)) {
			t.Fatalf("arrival %v after the write began, want within the write (it took %v); read %v after", at.Sub(before), wrote.Sub(before), read.Sub(before))
		}
	}
	// EOF comes through as io.EOF.
	srv.Close()
	if _, err := c.Read(make([]byte, 4)); err == nil {
		t.Fatal("read after the peer closed: no error")
	}
}
