package linknet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
)

// Path is where a node accepts links from other nodes over TCP, on the
// same listener as everything else (DESIGN §1, -advertise).
const Path = "/internal/cluster/link"

// Hello is what each side of a link tells the other when it opens.
type Hello struct {
	Node        string // the node's id
	Incarnation uint64 // new on every start, so a restart is told from a reconnect
	// Secret is the cluster secret the dialer presents (empty when the
	// cluster has none); it is never sent back, and an Acceptor's Accept
	// gets the hello without it.
	Secret string
}

// Transport opens links to other nodes and routes the links they open to
// this one. rooms.Options.Transport chooses it; TCP is the default.
type Transport interface {
	// Dial opens a link to node, which listens at address, introducing
	// this node with self. It returns the stream and node's answer, whose
	// Node is node. The stream is the caller's, to close; reads from it
	// are buffered already. ctx bounds the dial and the handshake.
	Dial(ctx context.Context, node, address string, self Hello) (net.Conn, Hello, error)
	// Listen has the links other nodes dial to this one handed to a,
	// until stop is called. A transport that delivers links some other
	// way (TCP, through Handler) does nothing.
	Listen(a Acceptor) (stop func())
}

// Acceptor is the node end of the links other nodes dial to it.
type Acceptor interface {
	// Admit decides whether to take a link from peer, dialing from the
	// network address from (host:port), and returns this node's hello
	// for the answer. A peer with no Node sent a hello the transport
	// could not read. A refusal is a *Refusal; the dialer sees its status.
	Admit(ctx context.Context, peer Hello, from string) (self Hello, err error)
	// Accept takes a link Admit let in, once its handshake is done. It
	// must not block: the transport's goroutine calls it.
	Accept(c net.Conn, peer Hello)
}

// Refusal is an Acceptor's reason to turn a link away: an HTTP status and
// the code and message of DESIGN §1's JSON error body.
type Refusal struct {
	Status  int
	Code    string
	Message string
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("linknet: link refused (%d %s): %s", r.Status, r.Code, r.Message)
}

// ErrNoIncarnation fails a dial whose answer carries no incarnation.
// Without it a restart of that node could not be told from a reconnect,
// and the rooms with its sockets would never hear they are gone.
var ErrNoIncarnation = errors.New("linknet: no incarnation in the answer")

// refused is the dial error of a link the other node turned away.
func refused(address, status string) error {
	return fmt.Errorf("link to %s refused: %s", address, status)
}

// wrongNode is the dial error of a link answered by another node than the
// one dialed: the address changed hands.
func wrongNode(address, got, want string) error {
	return fmt.Errorf("link to %s: node there is %q, not %q", address, got, want)
}

// bufConn is a stream whose first bytes were read with the handshake: reads
// go through the handshake's buffer.
type bufConn struct {
	net.Conn
	r io.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
