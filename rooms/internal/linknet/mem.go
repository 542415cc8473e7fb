package linknet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
)

// Network is an in-memory network for tests: each node gets a Host, its
// Transport, and the test breaks what one host sends another at the exact
// point it wants. Its faults follow TCP:
//
//   - Drop(from, to): what from sends to to from now on never arrives, on
//     every conn between them, for good: a stream cannot skip lost bytes,
//     so those conns stall until a deadline or the other side closes them
//     (the links' pings notice within their limit). Their writer's buffer
//     fills and its writes block, as a socket's do.
//   - Partition(a, b): Drop both ways. A dial between hosts cut off either
//     way hangs, as a SYN that gets no answer, until its context ends or
//     the hosts are healed (then it goes through, as a retried SYN would).
//   - Heal(a, b): new dials between them work again. Conns that lost
//     bytes stay stalled.
//   - Delay(from, to, d): what from sends to to from now on arrives d
//     later, in order; a dial between them takes the round trip.
//   - Reset(a, b): every conn between them fails at both ends at once,
//     with what was in flight.
//
// A dial to an address where no host listens is refused at once.
// Addresses are host:port with an IP literal for a host, so rooms' check
// that a link comes from its node's registered address needs no DNS.
//
// Network starts no goroutine and waits only on channels and timers, so a
// test can run it inside a testing/synctest bubble; create it inside the
// bubble then, so that a dial held by a partition is durably blocked.
type Network struct {
	mu      sync.Mutex
	hosts   map[string]*Host
	drop    map[route]bool
	delay   map[route]time.Duration
	pipes   map[*pipe]struct{}
	changed chan struct{} // closed and replaced when a drop ends: held dials look again
}

type route struct{ from, to string }

// window is what one direction of a conn holds unread before Write
// blocks, as a socket's buffers do.
const window = 4 << 20

// NewNetwork returns a network with no hosts and no faults.
func NewNetwork() *Network {
	return &Network{hosts: map[string]*Host{}, drop: map[route]bool{}, delay: map[route]time.Duration{},
		pipes: map[*pipe]struct{}{}, changed: make(chan struct{})}
}

// Host returns the transport of the node at address, the same one for the
// same address.
func (nw *Network) Host(address string) *Host {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	h := nw.hosts[address]
	if h == nil {
		h = &Host{nw: nw, addr: address}
		nw.hosts[address] = h
	}
	return h
}

// Drop loses what from sends to to from now on; see Network.
func (nw *Network) Drop(from, to string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.drop[route{from, to}] = true
	for p := range nw.pipes {
		p.mu.Lock()
		for i := range 2 {
			if p.addr[i] == from && p.addr[1-i] == to {
				p.s[i].lost = true
			}
		}
		p.mu.Unlock()
	}
}

// Partition cuts a and b off from each other both ways; see Network.
func (nw *Network) Partition(a, b string) {
	nw.Drop(a, b)
	nw.Drop(b, a)
}

// Heal ends Drop and Partition between a and b, both ways; see Network.
func (nw *Network) Heal(a, b string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	delete(nw.drop, route{a, b})
	delete(nw.drop, route{b, a})
	close(nw.changed)
	nw.changed = make(chan struct{})
}

// Delay holds what from sends to to for d from now on; 0 ends it.
func (nw *Network) Delay(from, to string, d time.Duration) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if d == 0 {
		delete(nw.delay, route{from, to})
	} else {
		nw.delay[route{from, to}] = d
	}
	for p := range nw.pipes {
		p.mu.Lock()
		for i := range 2 {
			if p.addr[i] == from && p.addr[1-i] == to {
				p.s[i].delay = d
			}
		}
		p.mu.Unlock()
	}
}

// Reset fails every conn between a and b at both ends; see Network.
func (nw *Network) Reset(a, b string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for p := range nw.pipes {
		if p.addr == [2]string{a, b} || p.addr == [2]string{b, a} {
			p.mu.Lock()
			p.reset = true
			p.notify()
			p.mu.Unlock()
			delete(nw.pipes, p)
		}
	}
}

// Open counts the conns between a and b that neither end has closed.
func (nw *Network) Open(a, b string) int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	n := 0
	for p := range nw.pipes {
		if p.addr == [2]string{a, b} || p.addr == [2]string{b, a} {
			p.mu.Lock()
			if !p.ends[0].closed && !p.ends[1].closed {
				n++
			}
			p.mu.Unlock()
		}
	}
	return n
}

// Host is one node's place on a Network, and its Transport.
type Host struct {
	nw   *Network
	addr string
	acc  Acceptor // guarded by nw.mu; nil while not listening
}

// Address is where other hosts dial this one.
func (h *Host) Address() string { return h.addr }

// Listen implements Transport. Stopping closes no conn, as closing a
// listener does not.
func (h *Host) Listen(a Acceptor) (stop func()) {
	h.nw.mu.Lock()
	h.acc = a
	h.nw.mu.Unlock()
	return func() {
		h.nw.mu.Lock()
		if h.acc == a {
			h.acc = nil
		}
		h.nw.mu.Unlock()
	}
}

// Dial implements Transport: the handshake is a call to the other host's
// Acceptor, on the caller's goroutine.
func (h *Host) Dial(ctx context.Context, node, address string, self Hello) (net.Conn, Hello, error) {
	nw := h.nw
	for {
		nw.mu.Lock()
		cut := nw.drop[route{h.addr, address}] || nw.drop[route{address, h.addr}]
		rtt := nw.delay[route{h.addr, address}] + nw.delay[route{address, h.addr}]
		healed := nw.changed
		nw.mu.Unlock()
		if !cut {
			if err := sleep(ctx, rtt); err != nil {
				return nil, Hello{}, &net.OpError{Op: "dial", Net: "mem", Addr: memAddr(address), Err: err}
			}
			break
		}
		select {
		case <-healed:
		case <-ctx.Done():
			return nil, Hello{}, &net.OpError{Op: "dial", Net: "mem", Addr: memAddr(address), Err: ctx.Err()}
		}
	}
	nw.mu.Lock()
	var acc Acceptor
	if to := nw.hosts[address]; to != nil {
		acc = to.acc
	}
	nw.mu.Unlock()
	if acc == nil {
		return nil, Hello{}, &net.OpError{Op: "dial", Net: "mem", Addr: memAddr(address), Err: syscall.ECONNREFUSED}
	}
	ans, err := acc.Admit(ctx, self, h.addr)
	if err != nil {
		var rf *Refusal
		if errors.As(err, &rf) {
			return nil, Hello{}, refused(address, fmt.Sprintf("%d %s", rf.Status, http.StatusText(rf.Status)))
		}
		return nil, Hello{}, err
	}
	if ans.Node != node {
		return nil, Hello{}, wrongNode(address, ans.Node, node)
	}
	p := nw.connect(h.addr, address)
	peer := self
	peer.Secret = ""
	acc.Accept(&conn{p: p, i: 1}, peer)
	return &conn{p: p, i: 0}, Hello{Node: ans.Node, Incarnation: ans.Incarnation}, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// connect opens a conn from host a (end 0) to host b (end 1), under the
// faults in force between them.
func (nw *Network) connect(a, b string) *pipe {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	p := &pipe{nw: nw, addr: [2]string{a, b}, changed: make(chan struct{})}
	p.s[0].lost, p.s[0].delay = nw.drop[route{a, b}], nw.delay[route{a, b}]
	p.s[1].lost, p.s[1].delay = nw.drop[route{b, a}], nw.delay[route{b, a}]
	nw.pipes[p] = struct{}{}
	return p
}

// pipe is one conn between two hosts: a stream each way. Lock order:
// Network.mu, then pipe.mu.
type pipe struct {
	nw      *Network
	addr    [2]string // addr[i]: the host of end i
	mu      sync.Mutex
	s       [2]stream // s[i]: what end i writes and end 1-i reads
	ends    [2]end
	reset   bool
	changed chan struct{} // closed and replaced on every change a blocked Read or Write may wait for
}

type stream struct {
	chunks []chunk
	queued int           // bytes written and not yet read, arriving or lost
	delay  time.Duration // added to every chunk written
	lost   bool          // from here on, nothing written arrives
	last   time.Time     // when the last chunk arrives: none overtakes it
}

type chunk struct {
	b    []byte
	at   time.Time // not readable before
	lost bool      // never readable, nor what follows
	eof  bool      // the writer closed
}

type end struct {
	closed bool
	rd, wd time.Time
}

// notify wakes whatever waits on p; the caller holds p.mu.
func (p *pipe) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// wait lets go of p.mu until p changes or until passes (zero: no limit).
func (p *pipe) wait(until time.Time) {
	changed := p.changed
	p.mu.Unlock()
	defer p.mu.Lock()
	var fire <-chan time.Time
	if !until.IsZero() {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		fire = t.C
	}
	select {
	case <-changed:
	case <-fire:
	}
}

func (s *stream) push(b []byte, eof bool) {
	at := time.Now().Add(s.delay)
	if at.Before(s.last) {
		at = s.last
	}
	s.last = at
	s.chunks = append(s.chunks, chunk{b: bytes.Clone(b), at: at, lost: s.lost, eof: eof})
	s.queued += len(b)
}

// conn is end i of a pipe.
type conn struct {
	p *pipe
	i int
}

func (c *conn) Read(b []byte) (int, error) {
	p, in := c.p, &c.p.s[1-c.i]
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.ends[c.i].closed {
			return 0, net.ErrClosed
		}
		if p.reset {
			return 0, syscall.ECONNRESET
		}
		now := time.Now()
		var wake time.Time
		if len(in.chunks) > 0 {
			ch := &in.chunks[0]
			switch {
			case ch.lost: // never: wait for the deadline
			case now.Before(ch.at):
				wake = ch.at
			case ch.eof:
				return 0, io.EOF
			default:
				n := copy(b, ch.b)
				ch.b = ch.b[n:]
				in.queued -= n
				if len(ch.b) == 0 {
					in.chunks[0] = chunk{}
					in.chunks = in.chunks[1:]
				}
				p.notify()
				return n, nil
			}
		}
		if rd := p.ends[c.i].rd; !rd.IsZero() {
			if !now.Before(rd) {
				return 0, os.ErrDeadlineExceeded
			}
			if wake.IsZero() || rd.Before(wake) {
				wake = rd
			}
		}
		p.wait(wake)
	}
}

func (c *conn) Write(b []byte) (int, error) {
	p, out := c.p, &c.p.s[c.i]
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for n < len(b) {
		if p.ends[c.i].closed {
			return n, net.ErrClosed
		}
		if p.reset {
			return n, syscall.ECONNRESET
		}
		if p.ends[1-c.i].closed && !p.s[1-c.i].lost {
			return n, syscall.EPIPE // the other end is gone, and its reset comes back
		}
		wd := p.ends[c.i].wd
		if !wd.IsZero() && !time.Now().Before(wd) {
			return n, os.ErrDeadlineExceeded
		}
		if room := window - out.queued; room > 0 {
			k := min(room, len(b)-n)
			out.push(b[n:n+k], false)
			n += k
			p.notify()
			continue
		}
		p.wait(wd)
	}
	return n, nil
}

// Close ends this end: the other end reads what was sent, then EOF (unless
// the stream is lost).
func (c *conn) Close() error {
	p := c.p
	p.mu.Lock()
	if p.ends[c.i].closed {
		p.mu.Unlock()
		return net.ErrClosed
	}
	p.ends[c.i].closed = true
	p.s[c.i].push(nil, true)
	both := p.ends[1-c.i].closed
	p.notify()
	p.mu.Unlock()
	if both {
		p.nw.mu.Lock()
		delete(p.nw.pipes, p)
		p.nw.mu.Unlock()
	}
	return nil
}

func (c *conn) LocalAddr() net.Addr  { return memAddr(c.p.addr[c.i]) }
func (c *conn) RemoteAddr() net.Addr { return memAddr(c.p.addr[1-c.i]) }

func (c *conn) SetDeadline(t time.Time) error {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.p.ends[c.i].rd, c.p.ends[c.i].wd = t, t
	c.p.notify()
	return nil
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.p.ends[c.i].rd = t
	c.p.notify()
	return nil
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.p.ends[c.i].wd = t
	c.p.notify()
	return nil
}

// memAddr is a host's address on a Network.
type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }
