package gateway

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller is one epoll instance, the one worker that serves it, and the
// queue of its socket tasks. The worker waits for the epoll descriptor
// itself to become readable through Go's network poller, then takes the
// ready sockets with a non-blocking epoll_wait and serves them. No goroutine
// stands between the kernel and the worker, and a waiting worker holds no
// thread in the kernel: a room goroutine it woke runs at once on the worker's
// P instead of waiting for the scheduler to take back a P parked in a
// syscall, which costs milliseconds at the tail.
//
// Sockets are registered edge-triggered for input and output. An edge says
// "something changed": the reader then reads until EAGAIN, and a flush
// writes until EAGAIN, so no readiness is ever left unconsumed.
//
// Two eventfds share the epoll set, both level-triggered: bell rings while
// queue holds tasks (work that did not come from the kernel: a socket ended
// by a writer, or a busy socket sent to the back of the line), and wake,
// written once and never read, makes every worker return.
type poller struct {
	epfd int
	file *os.File        // owns epfd, registered with Go's netpoller
	rc   syscall.RawConn // waits for epfd to be readable
	wake int
	bell int

	// Owned by the worker: wait's result, and its read function made once,
	// because a closure made per call would allocate on every wake.
	events []unix.EpollEvent
	n      int
	err    error
	tryFn  func(fd uintptr) bool

	mu      sync.Mutex
	queue   []task
	stopped bool // closed: a late push (a socket's close timer) must not ring a recycled descriptor
}

// pollEvents is what every socket is registered for.
const pollEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// eventsPerWait bounds the sockets one epoll_wait hands the worker.
const eventsPerWait = 64

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gateway: epoll_create: %w", err)
	}
	p := &poller{epfd: epfd, wake: -1, bell: -1, events: make([]unix.EpollEvent, eventsPerWait)}
	p.tryFn = p.try
	// Non-blocking, so os.NewFile hands it to the netpoller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("gateway: epoll nonblock: %w", err)
	}
	p.file = os.NewFile(uintptr(epfd), "epoll")
	if p.rc, err = p.file.SyscallConn(); err != nil {
		p.close()
		return nil, fmt.Errorf("gateway: epoll raw conn: %w", err)
	}
	for _, fd := range []*int{&p.wake, &p.bell} {
		if *fd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
			p.close()
			return nil, fmt.Errorf("gateway: eventfd: %w", err)
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(*fd)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, *fd, &ev); err != nil {
			p.close()
			return nil, fmt.Errorf("gateway: epoll_ctl eventfd: %w", err)
		}
	}
	return p, nil
}

func (p *poller) add(fd int) error {
	ev := unix.EpollEvent{Events: pollEvents, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("gateway: epoll_ctl add: %w", err)
	}
	return nil
}

// wait blocks until the kernel reports ready descriptors. Go's netpoller
// parks the worker until epfd is readable (it is while its ready list is not
// empty); the non-blocking epoll_wait then takes the events. Every call
// first tries to take events, so nothing left on the ready list waits for a
// new edge.
func (p *poller) wait() ([]unix.EpollEvent, error) {
	if err := p.rc.Read(p.tryFn); err != nil {
		return nil, err
	}
	return p.events[:max(p.n, 0)], p.err
}

// try takes ready events without blocking; false asks the netpoller to wait.
func (p *poller) try(fd uintptr) bool {
	p.n, p.err = unix.EpollWait(int(fd), p.events, 0)
	return p.n > 0 || (p.err != nil && p.err != unix.EINTR)
}

var one = binary.NativeEndian.AppendUint64(nil, 1)

// push queues t for the next worker that wakes. It never blocks, so a room's
// goroutine may call it.
func (p *poller) push(t task) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return // nobody reads the queue any more
	}
	ring := len(p.queue) == 0
	p.queue = append(p.queue, t)
	if ring {
		unix.Write(p.bell, one) // under the lock, so close cannot free the number in between
	}
}

// take moves every queued task into buf. It silences the bell under the
// same lock push rings it under, so a task pushed afterwards rings again.
func (p *poller) take(buf []task) []task {
	p.mu.Lock()
	buf = append(buf[:0], p.queue...)
	clear(p.queue)
	p.queue = p.queue[:0]
	var b [8]byte
	unix.Read(p.bell, b[:])
	p.mu.Unlock()
	return buf
}

// stop makes every worker waiting on p return.
func (p *poller) stop() { unix.Write(p.wake, one) }

// close releases the descriptors once its worker has returned.
func (p *poller) close() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	if p.file != nil {
		p.file.Close()
	} else {
		unix.Close(p.epfd)
	}
	for _, fd := range []int{p.wake, p.bell} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}
