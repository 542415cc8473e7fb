package gateway

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// poller waits on one epoll instance for every socket assigned to it, so an
// idle socket costs a kernel registration and no goroutine. It only turns
// readiness into tasks for the worker pool; it never reads, writes or waits
// on anything but epoll itself.
//
// Sockets are registered edge-triggered for input and output. An edge says
// "something changed": the reader then reads until EAGAIN, and a flush writes
// until EAGAIN, so no readiness is ever left unconsumed.
type poller struct {
	epfd int
	wake int // an eventfd that ends run
}

const pollEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gateway: epoll_create: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("gateway: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("gateway: epoll_ctl eventfd: %w", err)
	}
	return &poller{epfd: epfd, wake: wake}, nil
}

func (p *poller) add(fd int) error {
	ev := unix.EpollEvent{Events: pollEvents, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("gateway: epoll_ctl add: %w", err)
	}
	return nil
}

// run hands each readiness event to ready until stop is called.
func (p *poller) run(ready func(fd int, events uint32)) error {
	events := make([]unix.EpollEvent, 512)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("gateway: epoll_wait: %w", err)
		}
		for i := range n {
			fd := int(events[i].Fd)
			if fd == p.wake {
				return nil
			}
			ready(fd, events[i].Events)
		}
	}
}

// stop makes run return; it is safe to call before run starts.
func (p *poller) stop() {
	unix.Write(p.wake, binary.NativeEndian.AppendUint64(nil, 1))
}

// close releases the epoll instance once run has returned.
func (p *poller) close() {
	unix.Close(p.epfd)
	unix.Close(p.wake)
}
