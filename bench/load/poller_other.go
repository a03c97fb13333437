//go:build !linux || !(amd64 || arm64)

package load

import "errors"

// poller reads all sockets from one goroutine on 64-bit Linux; elsewhere
// every socket has a read loop.
type poller struct{}

func newPoller() (*poller, error) { return nil, errNoPoller }

func (*poller) add(*Conn) error { return errNoPoller }

var errNoPoller = errors.New("no poller on this platform")
