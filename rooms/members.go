// Membership records: which sockets a room has, saved so that a room
// that leaves memory, or another node, finds them again.

package rooms

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/roomgate/roomgate/hibernation"
)

// markUnsaved notes that c's membership record changed: c joined, its
// tags or attachment changed, or it left.
func (in *instance) markUnsaved(c *Conn) {
	switch {
	case c.gone:
		if c.rec&recStored != 0 {
			in.left = append(in.left, c.id)
		}
	case c.rec&recUnsaved == 0:
		c.rec |= recUnsaved
		in.unsaved.Add(c, len(in.list), dueSave)
	}
}

// dueSave reports whether c's record is to be saved: it changed since the
// last save and c is still a member.
func dueSave(c *Conn) bool { return !c.gone && c.rec&recUnsaved != 0 }

func (in *instance) hasUnsaved() bool { return len(in.unsaved) > 0 || len(in.left) > 0 }

// saveMembers commits the membership records that changed since the last
// save. Records are needed only once the instance leaves memory, so they
// are saved just before (the sweeper sends evSave to an idle room that has
// unsaved records, and evicts it once they are committed) and on drain,
// not with every connect: a burst of connects costs nothing in storage,
// and a socket that comes and goes while its room is awake costs no write
// at all. What a crash loses is the records of sockets that died with the
// process.
func (in *instance) saveMembers(ctx context.Context) {
	w := &writeSet{}
	in.collectUnsaved(w)
	in.accept(ctx, w, nil, nil)
}

// collectUnsaved adds the records that changed since the last save to w.
// It visits only those sockets, not the room's: in a cluster it runs after
// every connect, and a room filling with thousands of sockets must not
// cost the square of their number.
func (in *instance) collectUnsaved(w *writeSet) {
	for _, c := range in.unsaved {
		if dueSave(c) {
			w.member(c.id, c.record())
			c.rec = recStored
		}
	}
	for _, id := range in.left {
		w.member(id, nil)
	}
	in.unsaved.Reset()
	in.left = nil
}

// load reads the room's members when the instance is new: after a wake, a
// restart, or on another node, the room must see every socket it had.
// Members whose socket is gone (the node restarted, or held it elsewhere)
// are closed with 1006 as if the connection had just dropped. A failed
// read fails ev, and the next event tries again.
func (in *instance) load(ctx context.Context, ev *event) bool {
	members, bad, err := hibernation.Load(ctx, in.rt.store, in.room)
	if err != nil {
		in.rt.m.failures.WithLabelValues("wake").Inc()
		in.rt.log.LogAttrs(ctx, slog.LevelWarn, "room wake failed",
			slog.String("room", in.addr.String()), slog.Any("err", err))
		in.failEvent(ctx, ev, fmt.Errorf("%w: wake: %w", ErrFailed, err))
		return false
	}
	in.loaded = true
	if len(members)+len(bad) > 0 {
		in.rt.m.rooms.WithLabelValues("hibernated").Dec()
	}
	var lost []*Conn
	for _, m := range members {
		var s Socket
		switch {
		case m.Edge == in.rt.o.NodeID:
			s = in.rt.lookup(SocketID(m.ID))
		case in.rt.cl.alive(m.Edge):
			// Open as far as the registry knows; its edge is asked below.
			s = newRemoteSocket(in.rt.cl, SocketID(m.ID), m.Edge, in)
		}
		// The socket whose close woke the room has already left the edge;
		// its own close, with its real code, is the event that follows.
		closing := ev.kind == evClose && ev.id == SocketID(m.ID)
		if s == nil {
			s = lostSocket(m.ID)
		}
		c := fromRecord(in, m, s)
		in.addConn(c)
		if _, gone := s.(lostSocket); gone && !closing {
			lost = append(lost, c)
		}
	}
	if len(bad) > 0 {
		w := &writeSet{}
		for _, id := range bad {
			w.member(SocketID(id), nil)
			// The room cannot know this socket any more; it must not
			// stay open and unheard.
			in.rt.m.failures.WithLabelValues("membership").Inc()
			if s := in.rt.lookup(SocketID(id)); s != nil {
				s.Close(1011, "room lost its membership")
			}
		}
		in.accept(ctx, w, nil, nil)
	}
	for _, c := range lost {
		in.closeConn(ctx, &event{kind: evClose}, c, 1006, "connection lost")
	}
	if in.nremote > 0 {
		in.probeEdges()
	}
	return true
}

// probeEdges asks each other node holding members of the room which of
// them it still holds, in the background so the wake does not wait on
// the network: a node that restarted, or a close that was lost with a
// former owner, would otherwise leave members that no longer exist. The
// answers come back as evProbed events.
func (in *instance) probeEdges() {
	cl := in.rt.cl
	byEdge := map[string][]SocketID{}
	for _, c := range in.list {
		if rs, ok := c.sock.(*remoteSocket); ok {
			byEdge[rs.edge] = append(byEdge[rs.edge], c.id)
		}
	}
	for edge, ids := range byEdge {
		cl.background(func(ctx context.Context) {
			held, ok := cl.probe(ctx, edge, ids)
			if !ok {
				return // cannot tell; if the node is gone, the registry says so soon (edgeLost)
			}
			var gone []SocketID
			for _, id := range ids {
				if !held[id] {
					gone = append(gone, id)
				}
			}
			if len(gone) > 0 {
				cl.rt.sendWith(in.addr, event{kind: evProbed, reason: edge, gone: gone}, false, nil)
			}
		})
	}
}
