// The admin API (REST): rooms, connections, kicks, broadcasts, requests,
// storage and nodes.

package rooms

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/roomgate/roomgate/hibernation"
	"github.com/roomgate/roomgate/storage"
)

// RoomInfo describes a room for the admin API.
type RoomInfo struct {
	Class        string     `json:"class"`
	Room         string     `json:"room"`
	State        string     `json:"state"` // active (in memory), hibernated (its sockets open, out of memory) or stored (only in storage)
	Owner        string     `json:"owner"`
	Connections  int        `json:"connections"`
	StorageKeys  int        `json:"storage_keys"`
	StorageBytes int64      `json:"storage_bytes"`
	Alarm        *time.Time `json:"alarm"`
}

// ConnInfo describes a socket for the admin API.
type ConnInfo struct {
	ID          string    `json:"id"`
	User        User      `json:"user"`
	Tags        []string  `json:"tags"`
	Edge        string    `json:"edge"`
	ConnectedAt time.Time `json:"connected_at"`
}

// NodeInfo describes a node for the admin API.
type NodeInfo struct {
	ID          string    `json:"id"`
	Address     string    `json:"address"`
	Sockets     int       `json:"sockets"`
	ActiveRooms int       `json:"active_rooms"`
	StartedAt   time.Time `json:"started_at"`
}

// info describes a room from what the caller looked up: its stat, its
// instance here, and in a cluster the lease on it when it runs elsewhere
// (the zero Lease: nowhere).
func (rt *Runtime) info(a Addr, st storage.Stat, stored bool, in *instance, owner storage.Lease) RoomInfo {
	ri := RoomInfo{Class: a.Class, Room: a.Room, State: "stored", Owner: owner.Node}
	if in != nil {
		ri.Owner = rt.o.NodeID
	} else if owner.Node != "" {
		// Running on another node: its connections are those persisted.
		ri.State = "active"
		ri.Connections = st.Members
	}
	if stored {
		ri.StorageKeys, ri.StorageBytes = st.Keys, st.Bytes
		if !st.Alarm.IsZero() {
			at := st.Alarm.UTC()
			ri.Alarm = &at
		}
	}
	switch {
	case in != nil:
		ri.State = "active"
		ri.Connections = int(in.nconns.Load())
	case ri.State == "active":
	case st.Members > 0:
		ri.State = "hibernated"
		ri.Connections = st.Members
	}
	return ri
}

// Room describes one room; ErrRoomNotFound when it has neither storage nor
// an instance.
func (rt *Runtime) Room(ctx context.Context, a Addr) (RoomInfo, error) {
	if !rt.HasClass(a.Class) {
		return RoomInfo{}, ErrUnknownClass
	}
	st, stored, err := rt.store.Stat(ctx, storage.Room{Class: a.Class, Name: a.Room})
	if err != nil {
		return RoomInfo{}, fmt.Errorf("rooms: stat %s: %w", a, err)
	}
	in := rt.active(a)
	var owner storage.Lease
	if in == nil {
		if owners, err := rt.o.Coordinator.Owners(ctx, []storage.Room{a.storageRoom()}); err == nil {
			owner = owners[0]
		}
	}
	if !stored && in == nil && owner.Node == "" {
		return RoomInfo{}, ErrRoomNotFound
	}
	return rt.info(a, st, stored, in, owner), nil
}

// Rooms lists rooms that have storage or an instance, in (class, room)
// order, after the room named by cursor ("class/room"), at most limit. The
// second result is the cursor of the next page, empty on the last.
func (rt *Runtime) Rooms(ctx context.Context, class, prefix, cursor string, limit int) ([]RoomInfo, string, error) {
	var after Addr
	if cursor != "" {
		c, r, ok := strings.Cut(cursor, "/")
		if !ok || !ValidClass(c) || !ValidRoom(r) {
			return nil, "", fmt.Errorf("%w: cursor %q", ErrBadRequest, cursor)
		}
		after = Addr{Class: c, Room: r}
	}
	if limit <= 0 {
		limit = 100
	}
	less := func(x, y Addr) bool { return x.Class < y.Class || x.Class == y.Class && x.Room < y.Room }
	stored, err := rt.store.Rooms(ctx, class, prefix, storage.Room{Class: after.Class, Name: after.Room}, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("rooms: list: %w", err)
	}
	byAddr := map[Addr]storage.Stat{}
	var addrs []Addr
	for _, st := range stored {
		a := Addr{Class: st.Room.Class, Room: st.Room.Name}
		byAddr[a] = st
		addrs = append(addrs, a)
	}
	live := map[Addr]*instance{}
	for i := range rt.shards {
		sh := &rt.shards[i]
		sh.mu.Lock()
		for a, in := range sh.rooms {
			if (class == "" || a.Class == class) && strings.HasPrefix(a.Room, prefix) && (cursor == "" || less(after, a)) {
				live[a] = in
				if _, ok := byAddr[a]; !ok {
					addrs = append(addrs, a)
				}
			}
		}
		sh.mu.Unlock()
	}
	sort.Slice(addrs, func(i, j int) bool { return less(addrs[i], addrs[j]) })
	next := ""
	if len(addrs) > limit {
		addrs = addrs[:limit]
		next = addrs[limit-1].String()
	}
	// The owners of the rooms not running here, in one round trip; a
	// lease that cannot be read shows as no owner.
	owners := map[Addr]storage.Lease{}
	var elsewhere []storage.Room
	for _, a := range addrs {
		if live[a] == nil {
			elsewhere = append(elsewhere, a.storageRoom())
		}
	}
	leases, _ := rt.o.Coordinator.Owners(ctx, elsewhere)
	for i, l := range leases {
		owners[Addr{Class: elsewhere[i].Class, Room: elsewhere[i].Name}] = l
	}
	out := make([]RoomInfo, 0, len(addrs))
	for _, a := range addrs {
		st, ok := byAddr[a]
		out = append(out, rt.info(a, st, ok, live[a], owners[a]))
	}
	return out, next, nil
}

// DeleteRoom closes the room's sockets with 4404 and deletes its storage
// and alarm. Deleting a room that does not exist is not an error.
func (rt *Runtime) DeleteRoom(ctx context.Context, a Addr) error {
	_, err := rt.cl.call(ctx, a, func() event { return event{kind: evDelete} }, wireMsg(&linkMsg{typ: tAsk, kind: askDelete, addr: a}))
	return err
}

// Connections lists the room's sockets; a hibernated room's come from
// storage, and it stays asleep.
func (rt *Runtime) Connections(ctx context.Context, a Addr) ([]ConnInfo, error) {
	if rt.active(a) == nil {
		return rt.storedConnections(ctx, a)
	}
	var out []ConnInfo
	err := rt.ask(ctx, a, event{kind: evInspect, inspect: func(in *instance) {
		out = make([]ConnInfo, 0, len(in.list))
		for _, c := range in.list {
			out = append(out, ConnInfo{ID: c.id.String(), User: c.user, Tags: append([]string{}, c.tags()...),
				Edge: c.edge, ConnectedAt: c.ConnectedAt().UTC()})
		}
	}})
	if errors.Is(err, errNotHere) {
		return rt.storedConnections(ctx, a) // it left memory since: its members are stored
	}
	if err != nil {
		return nil, err // the room may still be filling out
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ConnectedAt.Before(out[j].ConnectedAt) })
	return out, nil
}

// storedConnections lists the members a room not in memory here has
// stored; it stays asleep.
func (rt *Runtime) storedConnections(ctx context.Context, a Addr) ([]ConnInfo, error) {
	if _, err := rt.Room(ctx, a); err != nil {
		return nil, err
	}
	members, _, err := hibernation.Load(ctx, rt.store, a.storageRoom())
	if err != nil {
		return nil, fmt.Errorf("rooms: connections of %s: %w", a, err)
	}
	out := make([]ConnInfo, 0, len(members))
	for _, m := range members {
		out = append(out, ConnInfo{ID: SocketID(m.ID).String(), User: User{ID: m.UserID, Name: m.UserName},
			Tags: append([]string{}, m.Tags...), Edge: m.Edge, ConnectedAt: time.Unix(0, m.ConnectedAt).UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ConnectedAt.Before(out[j].ConnectedAt) })
	return out, nil
}

// Kick closes one socket with 4403 "kicked", waking its room if needed.
func (rt *Runtime) Kick(ctx context.Context, a Addr, id SocketID) error {
	if rt.active(a) == nil {
		info, err := rt.Room(ctx, a)
		if errors.Is(err, ErrUnknownClass) {
			return err
		}
		if err != nil || info.Connections == 0 {
			return ErrSocketNotFound // nothing to wake the room for
		}
	}
	_, err := rt.cl.call(ctx, a, func() event { return event{kind: evKick, id: id} }, wireMsg(&linkMsg{typ: tAsk, kind: askKick, addr: a, sock: id}))
	return err
}

// Broadcast sends f to every socket of the room, or those tagged tag, in
// order with the room's own sends. It keeps a copy of f.Data (see Frame):
// when ctx ends first it returns, and the room sends the broadcast later.
func (rt *Runtime) Broadcast(ctx context.Context, a Addr, tag string, f Frame) error {
	f.Data = append([]byte(nil), f.Data...) // the room may run after ctx ends and the caller reuses f.Data
	_, err := rt.cl.call(ctx, a, func() event { return event{kind: evBroadcast, tag: tag, frame: f} },
		wireMsg(&linkMsg{typ: tAsk, kind: askBroadcast, addr: a, text: tag, op: f.Op, data: f.Data}))
	return err
}

// Request hands req to the room's OnRequest and writes its response to w.
func (rt *Runtime) Request(ctx context.Context, a Addr, w http.ResponseWriter, req *http.Request) error {
	return rt.cl.request(ctx, a, w, req)
}

// copyResponse writes a room's response to the client; one that left has
// nobody to tell.
func copyResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// Storage reads the room's committed keys.
func (rt *Runtime) Storage(ctx context.Context, a Addr, prefix string, limit int) ([]KV, error) {
	if !rt.HasClass(a.Class) {
		return nil, ErrUnknownClass
	}
	kvs, err := rt.store.List(ctx, storage.Room{Class: a.Class, Name: a.Room}, storage.ListOptions{Prefix: prefix, End: reservedPrefix, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("rooms: storage of %s: %w", a, err)
	}
	return kvs, nil
}

// Nodes lists the nodes of the cluster; with no shared Coordinator, this one.
func (rt *Runtime) Nodes(ctx context.Context) ([]NodeInfo, error) {
	list, err := rt.o.Coordinator.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	out := make([]NodeInfo, 0, len(list))
	for _, n := range list {
		if n.ID == rt.o.NodeID {
			// This node knows its own figures now, not as of its heartbeat.
			n.Sockets, n.ActiveRooms = int(rt.nsocks.Load()), int(rt.nrooms.Load())
		}
		out = append(out, NodeInfo{ID: n.ID, Address: n.Address, Sockets: n.Sockets, ActiveRooms: n.ActiveRooms, StartedAt: n.StartedAt})
	}
	return out, nil
}

// Ready reports whether the runtime can serve: its store answers and, in a
// cluster, the node registry lists this node.
func (rt *Runtime) Ready(ctx context.Context) error {
	if err := rt.store.Ping(ctx); err != nil {
		return err
	}
	return rt.cl.inRegistry()
}
