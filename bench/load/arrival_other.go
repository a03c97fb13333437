//go:build !linux || !(amd64 || arm64)

package load

import "net"

// withArrival returns c: receive timestamps are read on 64-bit Linux
// only, and elsewhere arrival times are read times.
func withArrival(c net.Conn, _ bool) net.Conn { return c }

// arrivalOf returns 0: no receive timestamps here.
func arrivalOf(net.Conn) int64 { return 0 }
