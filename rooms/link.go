package rooms

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/roomgate/roomgate/rooms/internal/linknet"
)

// LinkPath is where a node accepts links from other nodes, on the same
// listener as everything else (DESIGN §1, -advertise).
const LinkPath = linknet.Path

// Link timing: a peer that sends nothing, not even a ping, for linkDeadAfter
// is frozen or gone, and the link is closed.
const (
	linkPingEvery = 500 * time.Millisecond
	linkDeadAfter = 2 * time.Second
	linkDialLimit = 2 * time.Second
	// maxLinkBacklog bounds what waits to be written to one peer; a peer
	// that falls that far behind is cut off rather than grow our memory.
	maxLinkBacklog = 64 << 20
)

var errLinkClosed = errors.New("rooms: link to the node is closed")

// link is one connection to another node, used both ways. Writes are
// buffered and flushed by one goroutine, so many small frames (one per
// forwarded message) share a system call; one reader dispatches what
// arrives, in order.
type link struct {
	cl   *cluster
	c    net.Conn
	peer string // the other node's id
	gen  uint64 // the generation of this node's stream to peer it carries (cluster.gens), set when registered

	mu      sync.Mutex // after cluster.mu; see cluster for the lock order
	out     []byte
	closed  bool
	seq     uint64
	pending map[uint64]pendingCall // what we asked the peer, by seq, until answered
	wake    chan struct{}
	done    chan struct{}
}

// pendingCall is one request awaiting its tAck or tReply.
type pendingCall struct {
	typ   linkType
	addr  Addr
	sock  SocketID
	code  int    // tClosed: the close code, to send again elsewhere
	text  string // tClosed: the reason
	reply chan linkMsg
}

func newLink(cl *cluster, c net.Conn, peer string) *link {
	return &link{cl: cl, c: c, peer: peer, pending: make(map[uint64]pendingCall),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// start runs the link's reader and writer until it closes, on goroutines
// the cluster waits for when it leaves; a link started after that is
// closed at once.
func (l *link) start() {
	if !l.cl.goOwned(l.writeLoop, l.readLoop) {
		l.close(nil)
	}
}

// errFrameTooBig fails a send whose frame the peer would refuse; the link
// stays up for everything else.
var errFrameTooBig = errors.New("rooms: message too big for a node-to-node link")

// send queues m. It fails once the link is closed, for a frame over the
// limit, or when the peer has fallen so far behind that the link is cut.
func (l *link) send(m *linkMsg) error { return l.enqueue(m, false, nil) }

// call sends m with a fresh seq and remembers it until the answer comes.
// reply, when not nil, receives the answer (or a synthetic one if the
// link dies first).
func (l *link) call(m *linkMsg, reply chan linkMsg) error { return l.enqueue(m, true, reply) }

func (l *link) enqueue(m *linkMsg, isCall bool, reply chan linkMsg) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errLinkClosed
	}
	if isCall {
		l.seq++
		m.seq = l.seq
	}
	n := len(l.out)
	l.out = appendLinkMsg(l.out, m)
	if len(l.out)-n-4 > maxLinkFrame {
		l.out = l.out[:n]
		l.mu.Unlock()
		return errFrameTooBig
	}
	if isCall {
		l.pending[m.seq] = pendingCall{typ: m.typ, addr: m.addr, sock: m.sock, code: m.code, text: m.text, reply: reply}
	}
	if len(l.out) > maxLinkBacklog {
		// Closed here, and its loss settled on a goroutine of its own:
		// the caller may hold cl.mu (cluster.deliver), which linkLost
		// takes. A node that is leaving settles nothing more.
		pending := l.shut()
		l.mu.Unlock()
		l.halt()
		err := errors.New("peer too slow: link backlog full")
		l.cl.goOwned(func() { l.cl.linkLost(l, pending, err) })
		return errLinkClosed
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

// sendRaw queues frames already encoded, in order.
func (l *link) sendRaw(b []byte) {
	l.mu.Lock()
	l.out = append(l.out, b...)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// answered takes the pending call seq; ok is false if there is none.
func (l *link) answered(seq uint64) (pendingCall, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.pending[seq]
	delete(l.pending, seq)
	return p, ok
}

func (l *link) writeLoop() {
	ping := time.NewTicker(linkPingEvery)
	defer ping.Stop()
	var buf []byte
	pingMsg := appendLinkMsg(nil, &linkMsg{typ: tPing})
	for {
		select {
		case <-l.wake:
		case <-ping.C:
			l.mu.Lock()
			if len(l.out) == 0 && !l.closed {
				l.out = append(l.out, pingMsg...)
			}
			l.mu.Unlock()
		case <-l.done:
			return
		}
		l.mu.Lock()
		buf, l.out = l.out, buf[:0]
		l.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		l.c.SetWriteDeadline(time.Now().Add(linkDeadAfter))
		if _, err := l.c.Write(buf); err != nil {
			l.close(err)
			return
		}
		if cap(buf) > 1<<20 {
			buf = nil // a burst's buffer would stay for good
		}
	}
}

// readLoop reads l.c directly: a transport's stream comes buffered.
func (l *link) readLoop() {
	var hdr [4]byte
	var body []byte
	for {
		l.c.SetReadDeadline(time.Now().Add(linkDeadAfter))
		if _, err := io.ReadFull(l.c, hdr[:]); err != nil {
			l.close(err)
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > maxLinkFrame {
			l.cl.rt.m.linkErrors.WithLabelValues("malformed").Inc()
			l.close(fmt.Errorf("link frame of %d bytes", n))
			return
		}
		if cap(body) < int(n) {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(l.c, body); err != nil {
			l.close(err)
			return
		}
		m, err := decodeLinkMsg(body)
		if err != nil {
			l.cl.rt.m.linkErrors.WithLabelValues("malformed").Inc()
			l.close(err)
			return
		}
		l.cl.dispatch(l, &m)
		if cap(body) > 1<<20 {
			body = nil
		}
	}
}

// close ends the link once; what was asked of the peer and not answered
// is settled by the cluster (linkLost).
func (l *link) close(err error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	pending := l.shut()
	l.mu.Unlock()
	l.finish(pending, err)
}

// shut marks the link closed and takes what it still awaits; the caller
// holds l.mu and calls finish once it has let go.
func (l *link) shut() map[uint64]pendingCall {
	l.closed = true
	pending := l.pending
	l.pending = nil
	return pending
}

func (l *link) finish(pending map[uint64]pendingCall, err error) {
	l.halt()
	l.cl.linkLost(l, pending, err)
}

// halt stops the link's writer and reader; it takes no lock.
func (l *link) halt() {
	close(l.done)
	l.c.Close()
}

func (l *link) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// dialLink opens a link to the node at address.
func (cl *cluster) dialLink(ctx context.Context, node, address string) (*link, error) {
	ctx, cancel := context.WithTimeout(ctx, linkDialLimit)
	defer cancel()
	c, peer, err := cl.transport.Dial(ctx, node, address, linknet.Hello{Node: cl.self, Incarnation: cl.incarnation, Secret: cl.secret})
	if err != nil {
		if errors.Is(err, linknet.ErrNoIncarnation) {
			cl.rt.m.linkErrors.WithLabelValues("refused").Inc()
		}
		return nil, err
	}
	l := newLink(cl, c, node)
	cl.peerSeen(node, peer.Incarnation)
	l.start()
	return l, nil
}

// Admit implements linknet.Acceptor: it vets a link another node dials to
// this one. Without a secret, a link is taken only from a node in the
// registry, connecting from the address it registered.
func (cl *cluster) Admit(ctx context.Context, peer linknet.Hello, from string) (linknet.Hello, error) {
	if cl.secret != "" && subtle.ConstantTimeCompare([]byte(peer.Secret), []byte(cl.secret)) != 1 {
		cl.rt.m.linkErrors.WithLabelValues("refused").Inc()
		return linknet.Hello{}, &linknet.Refusal{Status: http.StatusForbidden, Code: "forbidden", Message: "cluster secret does not match"}
	}
	if peer.Node == "" || peer.Node == cl.self {
		cl.rt.m.linkErrors.WithLabelValues("refused").Inc()
		return linknet.Hello{}, &linknet.Refusal{Status: http.StatusBadRequest, Code: "bad_request", Message: "not a cluster link upgrade"}
	}
	if cl.secret == "" && !cl.fromRegisteredNode(ctx, peer.Node, from) {
		cl.rt.m.linkErrors.WithLabelValues("refused").Inc()
		return linknet.Hello{}, &linknet.Refusal{Status: http.StatusForbidden, Code: "forbidden", Message: "not a registered node of this cluster"}
	}
	return linknet.Hello{Node: cl.self, Incarnation: cl.incarnation}, nil
}

// Accept implements linknet.Acceptor: it runs a link another node dialed.
func (cl *cluster) Accept(c net.Conn, peer linknet.Hello) {
	cl.peerSeen(peer.Node, peer.Incarnation)
	l := newLink(cl, c, peer.Node)
	if !cl.accepted(l) {
		c.Close() // the node left the cluster
		return
	}
	l.start()
}

// fromRegisteredNode reports whether a link's caller, claiming to be node,
// is in the registry and connects from its registered host (by IP).
func (cl *cluster) fromRegisteredNode(ctx context.Context, node, remote string) bool {
	rec, ok := cl.node(ctx, node)
	if !ok {
		return false
	}
	rhost, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	host, _, err := net.SplitHostPort(rec.Address)
	if err != nil {
		return false
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return false
	}
	from := net.ParseIP(rhost)
	for _, ip := range ips {
		if ip.IP.Equal(from) || ip.IP.IsLoopback() && from.IsLoopback() {
			return true
		}
	}
	return false
}
