package rooms

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/roomgate/roomgate/storage"
)

// Errors a Router returns; the gateway maps each one to an HTTP status or a
// close code in one table.
var (
	ErrUnknownClass     = errors.New("rooms: unknown class")
	ErrRefused          = errors.New("rooms: connection refused by the room")
	ErrFailed           = errors.New("rooms: room handler failed")
	ErrOverloaded       = errors.New("rooms: room has too many queued events")
	ErrDraining         = errors.New("rooms: node is draining")
	ErrRoomNotFound     = errors.New("rooms: room not found")
	ErrSocketNotFound   = errors.New("rooms: socket not found")
	ErrNoRequestHandler = errors.New("rooms: class has no request handler")
	ErrBadRequest       = errors.New("rooms: bad request")
	ErrLimit            = errors.New("rooms: limit exceeded")
	ErrRoomFull         = errors.New("rooms: room is full")
)

// Addr names one room: a registered class and a room name within it.
type Addr struct {
	Class string
	Room  string
}

// String renders the address as "class/room", the form used in URLs and logs.
func (a Addr) String() string { return a.Class + "/" + a.Room }

func (a Addr) storageRoom() storage.Room { return storage.Room{Class: a.Class, Name: a.Room} }

// SocketID identifies one socket for as long as it is open. Ids are unique
// within a node and, because each node starts its sequence at a random
// point, practically unique across a cluster.
type SocketID uint64

// String renders the id as 16 hex digits, the form the REST API uses.
func (id SocketID) String() string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[id&0xf]
		id >>= 4
	}
	return string(b[:])
}

// ParseSocketID is the inverse of SocketID.String.
func ParseSocketID(s string) (SocketID, error) {
	if len(s) != 16 {
		return 0, errors.New("rooms: socket id must be 16 hex digits")
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, errors.New("rooms: socket id must be 16 hex digits")
	}
	return SocketID(v), nil
}

// Opcode says whether a message is text or binary. The values are those of
// RFC 6455 so the gateway converts without a table.
type Opcode uint8

// The two kinds of WebSocket message a room sees.
const (
	Text   Opcode = 1
	Binary Opcode = 2
)

// Frame is one complete WebSocket message. Its Data is lent, never handed
// over: it is valid only until the call that received the Frame returns,
// and whoever keeps it longer keeps a copy. That holds for every call that
// takes a Frame: Router.Message, Handler.OnMessage, Socket.Send, Conn.Send,
// Room.Broadcast and Admin.Broadcast. So a caller may reuse its buffer as
// soon as the call returns (the gateway reuses its read buffers), and a
// handler that keeps a message past OnMessage copies it.
type Frame struct {
	Op   Opcode
	Data []byte
}

// User is who opened a socket: a token's sub and name, or in dev mode the
// ?user= and ?name= query parameters.
type User struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// ConnectInfo is what the edge learned from the handshake. Query holds the
// raw query string (without the token) so a class can read its own
// parameters, such as chat's ?since=. Claims holds the token's claims
// beyond those Roomgate reads itself, as one JSON object; nil without a
// token or without such claims, so a socket that has none pays nothing.
type ConnectInfo struct {
	User       User
	Query      string
	RemoteAddr string
	Claims     []byte
}

// Socket is a room's handle on one client connection. Like centrifuge's
// Transport it only writes and closes. All methods are safe to call from any
// goroutine.
type Socket interface {
	// ID returns the socket's id.
	ID() SocketID
	// Send queues f for the client without blocking. f.Data may be reused as
	// soon as Send returns (see Frame). It returns ErrSlow when the socket's bounded
	// queue overflowed (the socket is then closed with 1008), ErrTooBig when
	// f alone is larger than that bound (the socket is then closed with
	// 1009), ErrClosed once the socket is closing, and ErrOpcode unless f.Op
	// is Text or Binary.
	Send(f Frame) error
	// Close starts the close handshake. A code that may not appear on the
	// wire (0, 1005, 1006, 1015, past 4999) is sent as 1011; the reason is
	// cut to the 123 bytes a control frame allows. Later calls do nothing.
	Close(code int, reason string)
	// SetAutoResponse makes the edge answer a text message equal to
	// a.Request with a.Response itself, without telling the Router, so a
	// hibernated room stays asleep. nil turns it off. The edge keeps a as
	// it is: the caller never changes it afterwards.
	SetAutoResponse(a *AutoResponse)
	// LastAutoResponse returns when the edge last answered with the
	// auto-response; zero if it never did.
	LastAutoResponse() time.Time
}

// AutoResponse is a request and its response that the edge answers for a
// room's sockets, like Durable Objects' setWebSocketAutoResponse.
type AutoResponse struct {
	Request  []byte
	Response []byte
}

// Errors a Socket's Send returns.
var (
	ErrSlow   = errors.New("rooms: socket queue is full (slow consumer)")
	ErrTooBig = errors.New("rooms: frame is larger than a socket's send queue")
	ErrClosed = errors.New("rooms: socket is closed")
	ErrOpcode = errors.New("rooms: a socket sends only Text and Binary frames")
)

// Admin is what the REST API asks of rooms; Runtime implements it.
type Admin interface {
	Classes() []string
	Rooms(ctx context.Context, class, prefix, cursor string, limit int) ([]RoomInfo, string, error)
	Room(ctx context.Context, a Addr) (RoomInfo, error)
	DeleteRoom(ctx context.Context, a Addr) error
	Connections(ctx context.Context, a Addr) ([]ConnInfo, error)
	Kick(ctx context.Context, a Addr, id SocketID) error
	Broadcast(ctx context.Context, a Addr, tag string, f Frame) error
	Request(ctx context.Context, a Addr, w http.ResponseWriter, r *http.Request) error
	Storage(ctx context.Context, a Addr, prefix string, limit int) ([]KV, error)
	Nodes(ctx context.Context) ([]NodeInfo, error)
	CallJSON(ctx context.Context, a Addr, method string, arg []byte) ([]byte, error)
}

// Router is all the gateway knows of rooms.
type Router interface {
	// HasClass reports whether class is registered; the gateway asks before
	// the upgrade so an unknown class gets 404 instead of an open socket.
	HasClass(class string) bool
	// Connect introduces a freshly upgraded socket to room a. An error
	// refuses it: the gateway closes the socket with the error's code, and
	// the Router hears no Closed for it.
	Connect(ctx context.Context, a Addr, s Socket, info ConnectInfo) error
	// Message delivers one complete client message. f.Data is valid until
	// Message returns (see Frame). An error closes the socket with the
	// error's code.
	Message(ctx context.Context, a Addr, s Socket, f Frame) error
	// Closed reports that the socket is gone, with the close code that ended
	// it (1006 when the connection dropped without a close frame).
	Closed(a Addr, s Socket, code int, reason string)
	// Attach gives the Router the edge's sockets by id. The gateway calls it
	// once, in its New, before any Connect.
	Attach(s Sockets)
}
