package broker

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection, the accepted
// end wrapped as the Listener wraps it.
func tcpPair(t *testing.T) (server net.Conn, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	server = newTCPConn(s.(*net.TCPConn))
	if _, ok := server.(*tcpConn); !ok {
		t.Fatalf("accepted connection not wrapped: %T", server)
	}
	t.Cleanup(func() { server.Close(); c.Close() })
	return server, c.(*net.TCPConn)
}

// rawOutbox returns an outbox writing to server as a session's does.
func rawOutbox(server net.Conn, sock *sockConn, limit int) *outbox {
	raw, _ := server.(*tcpConn).SyscallConn()
	return &outbox{conn: server, raw: raw, sock: sock, limit: limit, timeout: 10 * time.Second}
}

// within runs f on a goroutine and returns its error, failing the test if
// f has not returned after 5 s: what must not wait, or must time out.
func within(t *testing.T, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal(what)
		return nil
	}
}

// tcpConn reads as net.TCPConn does: the bytes sent, then io.EOF; the
// read deadline and a local close end a waiting read with the errors
// callers test for.
func TestTCPConnRead(t *testing.T) {
	server, client := tcpPair(t)

	// A read waits for data (parked, not spinning), then returns it.
	got := make(chan []byte)
	go func() {
		b := make([]byte, 64)
		n, _ := server.Read(b)
		got <- b[:n]
	}()
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if b := <-got; string(b) != "hello" {
		t.Fatalf("read %q", b)
	}

	// The read deadline ends a waiting read.
	_ = server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := server.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past the deadline: %v", err)
	}
	_ = server.SetReadDeadline(time.Time{})

	// A large write arrives whole, in order, over several reads.
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<14)
	go func() { _, _ = client.Write(want); _ = client.CloseWrite() }()
	all, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(all, want) {
		t.Fatalf("read %d bytes (want %d), err %v", len(all), len(want), err)
	}
	if n, err := server.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("after the peer's FIN: %d, %v", n, err)
	}

	// Closing the connection ends a read waiting on it.
	server2, _ := tcpPair(t)
	err = within(t, "Close did not end the read", func() error {
		go func() {
			time.Sleep(10 * time.Millisecond) // let the read park; either order must end it
			server2.Close()
		}()
		_, err := server2.Read(make([]byte, 8))
		return err
	})
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed connection: %v", err)
	}
}

// A fan-out to a socket that does not read takes what the kernel takes
// and never waits; the rest reaches the peer later, whole and in order,
// once it reads.
func TestDrainNeverWaitsAndKeepsOrder(t *testing.T) {
	server, client := tcpPair(t)
	o := rawOutbox(server, nil, 64<<20)

	// Far more than the socket buffers hold, in frames of differing sizes.
	var want bytes.Buffer
	frames := 0
	for want.Len() < 16<<20 {
		f := bytes.Repeat([]byte{byte('a' + frames%26)}, 1000+frames%7000)
		want.Write(f)
		ok, mine := o.offer(f)
		if !ok {
			t.Fatal("offer refused below the limit")
		}
		if mine {
			within(t, "drain waited for a socket that does not read", func() error { o.drain(); return nil })
		}
		frames++
	}
	if o.queued() == 0 {
		t.Fatal("16 MiB fitted in the socket buffers: the test proves nothing")
	}
	got, err := io.ReadAll(io.LimitReader(client, int64(want.Len())))
	if err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("peer read %d bytes (want %d), in order: %v, err %v", len(got), want.Len(), bytes.Equal(got, want.Bytes()[:len(got)]), err)
	}
}

// A close that comes while the rest of a cut frame waits for its flusher
// keeps that rest: the close frame never lands inside a frame.
func TestCloseKeepsAFrameCutShort(t *testing.T) {
	server, client := tcpPair(t)
	o := rawOutbox(server, nil, 64<<20)
	frame := bytes.Repeat([]byte("x"), 8<<20)
	o.offer(frame)
	o.offer([]byte("dropped by the close"))

	// As drain leaves it when the kernel cuts the frame short: the rest
	// back at the head of the queue, its flusher not yet started.
	batch, _, _ := o.take()
	rest, err := o.writeNoWaitGuarded(batch)
	if err != nil || len(rest) == 0 || len(rest[0]) == len(frame) {
		t.Fatalf("the kernel took all of 8 MiB at once, or nothing (err %v): the test proves nothing", err)
	}
	o.mu.Lock()
	o.requeueLocked(rest)
	o.mu.Unlock()

	closed := make(chan struct{})
	o.closeNow(func() { close(closed) }, []byte("CLOSE"))
	go o.flush()
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(frame)+len("CLOSE"))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(frame)], frame) || string(got[len(frame):]) != "CLOSE" {
		t.Fatalf("the peer got %q... ending %q", got[:16], got[len(got)-16:])
	}
	<-closed
}

// gws's own close frame is written under a deadline, even on a socket
// whose writes all found room (and so set none): a peer that stopped
// reading cannot hold it for ever.
func TestGwsCloseWriteHasADeadline(t *testing.T) {
	server, _ := tcpPair(t)
	sc := &sockConn{Conn: server, writeTimeout: 100 * time.Millisecond}
	err := within(t, "gws's write to a peer that does not read did not time out", func() error {
		_, err := sc.Write(make([]byte, 64<<20)) // far past the socket buffers
		return err
	})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write: %v", err)
	}
}

// While gws writes its close (holding the socket's write lock), a fan-out
// does not wait for it: the frame goes to a flusher, which finds out.
func TestDrainDoesNotWaitForGwsClose(t *testing.T) {
	server, client := tcpPair(t)
	sc := &sockConn{Conn: server, writeTimeout: time.Second}
	o := rawOutbox(server, sc, 1<<20)

	sc.mu.Lock() // gws, mid-write
	if _, mine := o.offer([]byte("hello")); !mine {
		t.Fatal("idle outbox: offer did not make the caller its writer")
	}
	within(t, "drain waited for gws's write", func() error { o.drain(); return nil })
	sc.mu.Unlock() // gws's write ended without a close: the flusher writes
	got := make([]byte, 5)
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "hello" {
		t.Fatalf("peer read %q, %v", got, err)
	}
}
