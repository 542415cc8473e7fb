package rooms

import (
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	"github.com/roomgate/roomgate/hibernation"
)

// Limits on what a room may store per socket (Durable Objects' limits).
const (
	MaxTags           = 10
	MaxTagBytes       = 256
	MaxAttachmentSize = 16 << 10
)

// Conn is one socket as its room sees it. Only the room's goroutine may call
// its methods, i.e. only from within a Handler method.
type Conn struct {
	id          SocketID
	sock        Socket
	inst        *instance
	user        User
	query       string
	edge        string
	connectedAt int64      // Unix nanoseconds
	extra       *connExtra // nil until the room sets tags or an attachment
	self        [1]*Conn   // this Conn, as a one-element target list without an allocation
	idx         int32      // position in the room's list
	gone        bool       // closed: sends are dropped
	origin      bool       // scratch: set while collecting the sockets of a failed window
	dirty       bool       // its tags or attachment changed in the current event
	rec         uint8      // recStored, recUnsaved: the state of its membership record
}

// The state of a Conn's membership record.
const (
	recStored  uint8 = 1 << iota // a record of the socket is in storage
	recUnsaved                   // the record changed since the last save
)

// record is the socket's persisted membership, saved before the room
// leaves memory (in a cluster, with the event that changed it) so a woken
// instance finds the socket as it was.
func (c *Conn) record() []byte {
	m := hibernation.Member{ID: uint64(c.id), Edge: c.edge, UserID: c.user.ID, UserName: c.user.Name,
		Query: c.query, ConnectedAt: c.connectedAt, Tags: c.tags(), Attachment: c.Attachment(), Claims: c.claims()}
	return m.Encode()
}

// fromRecord is the inverse of record.
func fromRecord(in *instance, m hibernation.Member, s Socket) *Conn {
	c := &Conn{id: SocketID(m.ID), sock: s, inst: in, user: User{ID: m.UserID, Name: m.UserName},
		query: m.Query, edge: m.Edge, connectedAt: m.ConnectedAt}
	if len(m.Tags) > 0 || len(m.Attachment) > 0 || len(m.Claims) > 0 {
		c.extra = &connExtra{tags: m.Tags, attachment: m.Attachment, claims: m.Claims}
	}
	c.rec = recStored
	c.self[0] = c
	return c
}

// touch marks c for a new membership record at the end of the event.
func (c *Conn) touch() {
	if !c.dirty {
		c.dirty = true
		var was *connExtra
		if c.extra != nil {
			cp := *c.extra // its slices are replaced, never written in place
			was = &cp
		}
		c.inst.dirty = append(c.inst.dirty, c)
		c.inst.dirtyWas = append(c.inst.dirtyWas, was)
	}
}

// connExtra holds what few sockets carry, so an idle socket's Conn stays
// small: a room may hold tens of thousands.
type connExtra struct {
	tags       []string
	attachment []byte
	claims     []byte // set once, when the Conn is made; never changed
}

func (c *Conn) claims() []byte {
	if c.extra == nil {
		return nil
	}
	return c.extra.claims
}

func (c *Conn) tags() []string {
	if c.extra == nil {
		return nil
	}
	return c.extra.tags
}

func (c *Conn) ext() *connExtra {
	if c.extra == nil {
		c.extra = new(connExtra)
	}
	return c.extra
}

// ID returns the socket's id.
func (c *Conn) ID() SocketID { return c.id }

// User returns who opened the socket.
func (c *Conn) User() User { return c.user }

// Query returns the socket's query parameters, without the token.
func (c *Conn) Query() url.Values {
	q, _ := url.ParseQuery(c.query)
	return q
}

// Claims returns the claims of the socket's token that Roomgate does not
// read itself (anything but sub, name, rooms, admin, exp, nbf, iat, iss
// and aud), decoded as by json.Unmarshal: strings, float64 numbers,
// bools, nil, []any and map[string]any. It is nil in dev mode and for a
// token without such claims. They persist with the socket, so a woken
// room sees them too. Each call decodes afresh; the caller may keep or
// change the map.
func (c *Conn) Claims() map[string]any {
	raw := c.claims()
	if raw == nil {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil // the gateway hands over only JSON objects
	}
	return m
}

// ConnectedAt returns when the socket joined the room.
func (c *Conn) ConnectedAt() time.Time { return time.Unix(0, c.connectedAt) }

// Tags returns the socket's tags.
func (c *Conn) Tags() []string { return c.tags() }

// SetTags sets the socket's tags: at most 10, of 1 to 256 bytes each. Only
// OnConnect may call it; r.Conns(tag) then finds the socket.
func (c *Conn) SetTags(tags ...string) error {
	if !c.inst.connecting(c) {
		return fmt.Errorf("%w: tags can only be set in OnConnect", ErrLimit)
	}
	if len(tags) > MaxTags {
		return fmt.Errorf("%w: %d tags, at most %d", ErrLimit, len(tags), MaxTags)
	}
	for _, t := range tags {
		if len(t) == 0 || len(t) > MaxTagBytes {
			return fmt.Errorf("%w: a tag must have 1 to %d bytes", ErrLimit, MaxTagBytes)
		}
	}
	c.touch()
	c.ext().tags = append([]string(nil), tags...)
	return nil
}

// Attachment returns the value last given to SetAttachment.
func (c *Conn) Attachment() []byte {
	if c.extra == nil {
		return nil
	}
	return c.extra.attachment
}

// SetAttachment keeps up to 16 KiB with the socket, for the room's own use
// (a player's colour, a cursor): it lives as long as the socket and is
// persisted with the event's writes, so it survives hibernation. Only a
// handler may call it, while it runs.
func (c *Conn) SetAttachment(b []byte) error {
	if !c.inst.inEvent {
		return ErrOutsideEvent
	}
	if len(b) > MaxAttachmentSize {
		return fmt.Errorf("%w: attachment of %d bytes, at most %d", ErrLimit, len(b), MaxAttachmentSize)
	}
	c.touch()
	c.ext().attachment = append([]byte(nil), b...)
	return nil
}

// LastAutoResponse returns when the edge last answered this socket with the
// room's auto-response (see Room.SetAutoResponse); zero if it never did.
func (c *Conn) LastAutoResponse() time.Time { return c.sock.LastAutoResponse() }

// Send sends f to the socket once the current event's writes are committed
// (the output gate). It keeps a copy of f.Data (see Frame).
func (c *Conn) Send(f Frame) error {
	if f.Op != Text && f.Op != Binary {
		return ErrOpcode
	}
	f.Data = append([]byte(nil), f.Data...)
	return c.inst.emit(output{to: c.self[:], frame: f})
}

// SendText sends s as a text message.
func (c *Conn) SendText(s string) error {
	return c.inst.emit(output{to: c.self[:], frame: Frame{Op: Text, Data: []byte(s)}})
}

// SendJSON sends v encoded as JSON in a text message.
func (c *Conn) SendJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("rooms: encode message: %w", err)
	}
	return c.inst.emit(output{to: c.self[:], frame: Frame{Op: Text, Data: b}})
}

// Close closes the socket with code and reason, after what the room sent it
// before.
func (c *Conn) Close(code int, reason string) error {
	return c.inst.emit(output{to: c.self[:], close: true, code: code, reason: reason})
}
