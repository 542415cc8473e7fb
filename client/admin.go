// The admin API (README's REST section): classes, rooms, connections,
// kicks, broadcasts, storage and nodes.

package client

import (
	"context"
	"encoding/json"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// RoomInfo describes a room, as GET /v1/rooms/{class}/{room} answers.
type RoomInfo struct {
	Class        string     `json:"class"`
	Room         string     `json:"room"`
	State        string     `json:"state"`         // "active" (in memory), "hibernated" (sockets open, out of memory) or "stored" (only in storage)
	Owner        string     `json:"owner"`         // the id of the node that runs it; empty when none does
	Connections  int        `json:"connections"`   // open sockets
	StorageKeys  int        `json:"storage_keys"`  // keys in its storage
	StorageBytes int64      `json:"storage_bytes"` // bytes of its keys and values
	Alarm        *time.Time `json:"alarm"`         // when its alarm fires; nil when none is set
}

// Connection is one socket of a room.
type Connection struct {
	ID          string    `json:"id"`           // what Kick takes
	User        User      `json:"user"`         // who opened it
	Tags        []string  `json:"tags"`         // set by the class (Broadcast's Tag)
	Edge        string    `json:"edge"`         // the node that holds the socket
	ConnectedAt time.Time `json:"connected_at"` // when it opened
}

// User is who opened a socket: a token's sub and name, or in dev mode the
// ?user= and ?name= of the handshake.
type User struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Node is one node of the cluster (in embedded mode, the only one), with
// its figures as of its last heartbeat.
type Node struct {
	ID          string    `json:"id"`
	Address     string    `json:"address"`      // host:port as other nodes reach it
	Sockets     int       `json:"sockets"`      // open WebSockets at this edge
	ActiveRooms int       `json:"active_rooms"` // rooms in its memory
	StartedAt   time.Time `json:"started_at"`
}

// Item is one key of a room's storage and its value.
type Item struct {
	Key   string
	Value []byte
}

// UnmarshalJSON reads {"key","value"} (a UTF-8 value) or
// {"key","value_base64"} (any other).
func (it *Item) UnmarshalJSON(b []byte) error {
	var v struct {
		Key         string  `json:"key"`
		Value       *string `json:"value"`
		ValueBase64 []byte  `json:"value_base64"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	it.Key, it.Value = v.Key, v.ValueBase64
	if v.Value != nil {
		it.Value = []byte(*v.Value)
	}
	return nil
}

// Classes returns the names of the classes the node serves, sorted.
func (c *Client) Classes(ctx context.Context) ([]string, error) {
	var out struct {
		Classes []string `json:"classes"`
	}
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/classes", idempotent: true}, &out)
	return out.Classes, err
}

// Nodes returns the live nodes: this one, or in a cluster every node that
// heartbeats.
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var out struct {
		Nodes []Node `json:"nodes"`
	}
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/nodes", idempotent: true}, &out)
	return out.Nodes, err
}

// RoomsQuery selects a page of rooms. Every field is optional.
type RoomsQuery struct {
	Class  string // only this class's rooms
	Prefix string // only rooms whose name starts with it
	Limit  int    // rooms per page, 1 to 1000; default (0) the node's, 100
	Cursor string // where the page starts: a RoomPage's NextCursor; empty for the first page
}

// RoomPage is one page of rooms, in (class, room) order.
type RoomPage struct {
	Rooms      []RoomInfo `json:"rooms"`
	NextCursor string     `json:"next_cursor"` // pass it as RoomsQuery.Cursor for the next page; empty after the last
}

// Rooms returns one page of the rooms that have storage or sockets. See
// AllRooms to walk them all.
func (c *Client) Rooms(ctx context.Context, q RoomsQuery) (RoomPage, error) {
	v := url.Values{}
	for k, s := range map[string]string{"class": q.Class, "prefix": q.Prefix, "cursor": q.Cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var page RoomPage
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/rooms", query: v, idempotent: true}, &page)
	return page, err
}

// AllRooms walks every room q selects, from q.Cursor on, a page (of
// q.Limit) at a time as the loop asks for more. A failed page ends the
// walk with its error:
//
//	for info, err := range c.AllRooms(ctx, client.RoomsQuery{Class: "chat"}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(info.Room, info.Connections)
//	}
//
// Rooms created or deleted during the walk may or may not be seen.
func (c *Client) AllRooms(ctx context.Context, q RoomsQuery) iter.Seq2[RoomInfo, error] {
	return func(yield func(RoomInfo, error) bool) {
		for {
			page, err := c.Rooms(ctx, q)
			if err != nil {
				yield(RoomInfo{}, err)
				return
			}
			for _, r := range page.Rooms {
				if !yield(r, nil) {
					return
				}
			}
			if page.NextCursor == "" || page.NextCursor == q.Cursor {
				return
			}
			q.Cursor = page.NextCursor
		}
	}
}

// Room is a stub for one room, as a Durable Object's stub is: it names the
// room and sends nothing until one of its methods is called. Making one is
// free; it is safe for concurrent use.
type Room struct {
	c           *Client
	class, name string
	path        string // "/v1/rooms/{class}/{room}", escaped
}

// Room returns the stub for the room name of class. Names are checked by
// the node: a bad one fails each call with CodeBadName, an unknown class
// with CodeUnknownClass.
func (c *Client) Room(class, name string) *Room {
	return &Room{c: c, class: class, name: name,
		path: "/v1/rooms/" + url.PathEscape(class) + "/" + url.PathEscape(name)}
}

// Class returns the room's class.
func (r *Room) Class() string { return r.class }

// Name returns the room's name.
func (r *Room) Name() string { return r.name }

// Info describes the room: its state, owner, sockets, storage and alarm.
// A room with neither storage nor sockets is CodeRoomNotFound.
func (r *Room) Info(ctx context.Context) (RoomInfo, error) {
	var info RoomInfo
	err := r.c.do(ctx, request{method: http.MethodGet, path: r.path, idempotent: true}, &info)
	return info, err
}

// Delete closes the room's sockets with 4404, deletes its storage and its
// alarm. Deleting a room that does not exist succeeds, so Delete is
// retried like a GET.
func (r *Room) Delete(ctx context.Context) error {
	return r.c.do(ctx, request{method: http.MethodDelete, path: r.path, idempotent: true}, nil)
}

// Connections lists the room's open sockets.
func (r *Room) Connections(ctx context.Context) ([]Connection, error) {
	var out struct {
		Connections []Connection `json:"connections"`
	}
	err := r.c.do(ctx, request{method: http.MethodGet, path: r.path + "/connections", idempotent: true}, &out)
	return out.Connections, err
}

// Kick closes one socket (an id from Connections) with 4403 "kicked". A
// socket that is not, or no longer, in the room is CodeSocketNotFound;
// for that reason a kick whose answer was lost is not sent again, as the
// second would report the first one's success as an error.
func (r *Room) Kick(ctx context.Context, id string) error {
	return r.c.do(ctx, request{method: http.MethodDelete, path: r.path + "/connections/" + url.PathEscape(id)}, nil)
}

// BroadcastOption is an optional argument of Broadcast.
type BroadcastOption func(*broadcast)

type broadcast struct {
	tag    string
	binary bool
}

// Tag sends the broadcast only to the sockets the class tagged tag.
func Tag(tag string) BroadcastOption { return func(b *broadcast) { b.tag = tag } }

// Binary sends the broadcast as a binary message. Without it, data goes
// as a text message when it is UTF-8 and as a binary one otherwise.
func Binary() BroadcastOption { return func(b *broadcast) { b.binary = true } }

// Broadcast sends data to every socket of the room (or those Tag picks),
// in order with the room's own sends. It fails with CodeTooBig past the
// node's -max-message-bytes. Like an RPC, it is retried only when the
// node refused it (503, 429) or was not reached: see the package doc.
func (r *Room) Broadcast(ctx context.Context, data []byte, opts ...BroadcastOption) error {
	var b broadcast
	for _, o := range opts {
		o(&b)
	}
	rq := request{method: http.MethodPost, path: r.path + "/broadcast", body: data,
		// A dev-mode node refuses text/plain, which a page of another site
		// could send; it does not parse the body, JSON or not.
		contentType: "application/json"}
	if b.binary {
		rq.contentType = "application/octet-stream"
	}
	if b.tag != "" {
		rq.query = url.Values{"tag": {b.tag}}
	}
	return r.c.do(ctx, rq, nil)
}

// Storage reads up to limit keys of the room's storage (1 to 1000; 0: the
// node's default, 100) that start with prefix, in key order.
func (r *Room) Storage(ctx context.Context, prefix string, limit int) ([]Item, error) {
	v := url.Values{}
	if prefix != "" {
		v.Set("prefix", prefix)
	}
	if limit != 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Items []Item `json:"items"`
	}
	err := r.c.do(ctx, request{method: http.MethodGet, path: r.path + "/storage", query: v, idempotent: true}, &out)
	return out.Items, err
}
