//go:build linux

package broker

import (
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// parker watches parked sockets (park.go) with an epoll instance of its
// own, each registered one-shot, and starts a socket's read loop again
// when its descriptor turns readable. Its goroutine waits for the epoll
// descriptor itself on the runtime's netpoller, so an idle chatd has no
// thread in epoll_wait of its own.
type parker struct {
	file *os.File // the epoll descriptor, registered with the netpoller
	raw  syscall.RawConn

	mu     sync.Mutex
	parked map[int32]*parking // by descriptor; nil once closed
}

// newParker returns a running parker, or nil where the kernel refuses one
// (sockets then keep a goroutine each, as plain reads do).
func newParker() *parker {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil
	}
	f := os.NewFile(uintptr(fd), "parker")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil
	}
	p := &parker{file: f, raw: raw, parked: make(map[int32]*parking)}
	go p.run()
	return p
}

// run wakes the sockets epoll reports until the parker is closed. Should
// the wait fail (the netpoller refused the epoll descriptor), the parker
// closes: parked sockets must not wait for a wakeup that cannot come.
func (p *parker) run() {
	defer p.close()
	events := make([]syscall.EpollEvent, 128)
	var woken []*parking
	_ = p.raw.Read(func(fd uintptr) bool {
		for {
			n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
			if e == syscall.EINTR {
				continue
			}
			if e != 0 || n == 0 {
				return false // wait until the epoll descriptor is readable
			}
			p.mu.Lock()
			for _, ev := range events[:n] {
				if q := p.parked[ev.Fd]; q != nil {
					delete(p.parked, ev.Fd)
					woken = append(woken, q)
				}
			}
			p.mu.Unlock()
			for i, q := range woken {
				q.wake()
				woken[i] = nil
			}
			woken = woken[:0]
			if int(n) < len(events) {
				return false
			}
		}
	})
}

// close stops the parker and starts every parked socket's read loop
// again; from then on they wait in their reads as plain sockets do.
func (p *parker) close() {
	p.mu.Lock()
	parked := p.parked
	p.parked = nil
	p.mu.Unlock()
	p.file.Close()
	for _, q := range parked {
		q.wake()
	}
}

// add records q as parked; false once the parker is closed.
func (p *parker) add(q *parking) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parked == nil {
		return false
	}
	p.parked[q.fd] = q
	return true
}

// forget drops q, if it is the socket parked on its descriptor.
func (p *parker) forget(q *parking) {
	p.mu.Lock()
	if p.parked[q.fd] == q {
		delete(p.parked, q.fd)
	}
	p.mu.Unlock()
}

// len returns the number of parked sockets.
func (p *parker) len() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// watch arms fd, one-shot, in the epoll set, with key as its event's data.
func (p *parker) watch(fd int, key int32, add bool) syscall.Errno {
	errno := syscall.EBADF // the parker is closed
	// Control: the epoll descriptor cannot be closed (and its number
	// reused) under the call.
	_ = p.raw.Control(func(epfd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: key}
		op := syscall.EPOLL_CTL_MOD
		if add {
			op = syscall.EPOLL_CTL_ADD
		}
		errno = epollCtl(int(epfd), op, fd, &ev)
		if errno == syscall.EEXIST {
			errno = epollCtl(int(epfd), syscall.EPOLL_CTL_MOD, fd, &ev)
		}
	})
	return errno
}

func epollCtl(epfd, op, fd int, ev *syscall.EpollEvent) syscall.Errno {
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return e
}
