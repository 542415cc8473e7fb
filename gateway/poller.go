package gateway

import (
	"encoding/binary"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// poller is one epoll instance and the queue of its socket tasks. The
// gateway's workers wait on it directly: when a socket becomes ready the
// kernel wakes one waiting worker, which reads the socket itself. No
// goroutine stands between the kernel and the worker, so a message costs no
// hand-off, and nothing can block a dispatcher, because there is none.
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
	wake int
	bell int

	mu    sync.Mutex
	queue []task
}

// pollEvents is what every socket is registered for.
const pollEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// eventsPerWait is small so a burst of ready sockets spreads over several
// workers instead of queueing behind one.
const eventsPerWait = 4

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gateway: epoll_create: %w", err)
	}
	p := &poller{epfd: epfd, wake: -1, bell: -1}
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

// wait blocks until the kernel reports ready descriptors.
func (p *poller) wait(events []unix.EpollEvent) (int, error) {
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != unix.EINTR {
			return n, err
		}
	}
}

var one = binary.NativeEndian.AppendUint64(nil, 1)

// push queues t for the next worker that wakes. It never blocks, so a room's
// goroutine may call it.
func (p *poller) push(t task) {
	p.mu.Lock()
	ring := len(p.queue) == 0
	p.queue = append(p.queue, t)
	p.mu.Unlock()
	if ring {
		unix.Write(p.bell, one)
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

// close releases the descriptors once no worker uses them.
func (p *poller) close() {
	for _, fd := range []int{p.epfd, p.wake, p.bell} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}
