package gateway

import (
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/roomgate/roomgate/rooms"
)

// fdTable maps a file descriptor to its socket. epoll reports descriptors,
// and a table indexed by them costs 8 bytes a socket and a lookup without
// locks, where a map would cost several times that. Chunks are allocated on
// first use, so a process with a high descriptor limit pays only for what it
// uses.
//
// A stale readiness event may name a descriptor whose socket closed and whose
// number was reused: the event then reaches the new socket, whose read finds
// nothing and returns. Sockets clear their slot before closing their
// descriptor, so a slot never names a closed descriptor.
type fdTable struct {
	mu     sync.Mutex // serializes chunk allocation only
	chunks []atomic.Pointer[fdChunk]
}

const fdChunkSize = 1024

type fdChunk [fdChunkSize]atomic.Pointer[socket]

// fdBits is how many low bits of a socket id hold its descriptor: the table
// never holds more than 1<<26 of them.
const fdBits = 26

// socketID makes the id of the socket on fd: a node-wide sequence number
// above the descriptor, so the id is unique while the descriptor number is
// reused, and the socket is found again from its id without a map.
func socketID(seq uint64, fd int) rooms.SocketID {
	return rooms.SocketID(seq<<fdBits | uint64(fd))
}

// byID returns the socket with id while it is in the table.
func (t *fdTable) byID(id rooms.SocketID) *socket {
	s := t.get(int(id & (1<<fdBits - 1)))
	if s == nil || s.id != id {
		return nil
	}
	return s
}

func newFDTable() (*fdTable, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("gateway: read open-file limit: %w", err)
	}
	n := lim.Cur
	if n == unix.RLIM_INFINITY || n > 1<<fdBits {
		n = 1 << fdBits
	}
	return &fdTable{chunks: make([]atomic.Pointer[fdChunk], (n+fdChunkSize-1)/fdChunkSize)}, nil
}

func (t *fdTable) get(fd int) *socket {
	i := fd / fdChunkSize
	if fd < 0 || i >= len(t.chunks) {
		return nil
	}
	c := t.chunks[i].Load()
	if c == nil {
		return nil
	}
	return c[fd%fdChunkSize].Load()
}

func (t *fdTable) put(fd int, s *socket) error {
	i := fd / fdChunkSize
	if fd < 0 || i >= len(t.chunks) {
		return fmt.Errorf("gateway: descriptor %d beyond the open-file limit", fd)
	}
	c := t.chunks[i].Load()
	if c == nil {
		t.mu.Lock()
		if c = t.chunks[i].Load(); c == nil {
			c = new(fdChunk)
			t.chunks[i].Store(c)
		}
		t.mu.Unlock()
	}
	c[fd%fdChunkSize].Store(s)
	return nil
}

// remove clears fd's slot if it still holds s.
func (t *fdTable) remove(fd int, s *socket) {
	if c := t.chunks[fd/fdChunkSize].Load(); c != nil {
		c[fd%fdChunkSize].CompareAndSwap(s, nil)
	}
}

// each calls f for every socket in the table.
func (t *fdTable) each(f func(*socket)) {
	for i := range t.chunks {
		c := t.chunks[i].Load()
		if c == nil {
			continue
		}
		for j := range c {
			if s := c[j].Load(); s != nil {
				f(s)
			}
		}
	}
}
