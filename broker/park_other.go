//go:build !linux

package broker

import "bufio"

// parker parks nothing where chatd has no raw reads (park_linux.go):
// every socket keeps its read loop's goroutine.
type parker struct{}

func newParker() *parker { return nil }
func (*parker) close()   {}
func (*parker) len() int { return 0 }

// parking is never made here.
type parking struct{}

func (*parking) park() bool { return false }

func (c *tcpConn) enableParking(*parker, *bufio.Reader, func()) bool { return false }
