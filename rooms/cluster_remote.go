// Remote sockets: a room's sockets held by another node, and delivering
// the room's sends to them one frame per edge.

package rooms

import (
	"context"
	"slices"
	"time"
)

// probe asks node which of ids it still holds; ok is false when it could
// not tell.
func (cl *cluster) probe(ctx context.Context, node string, ids []SocketID) (held map[SocketID]bool, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, linkDeadAfter)
	defer cancel()
	ans, err := cl.callRemote(ctx, node, &linkMsg{typ: tProbe, ids: ids})
	if err != nil {
		return nil, false
	}
	held = make(map[SocketID]bool, len(ans.ids))
	for _, id := range ans.ids {
		held[id] = true
	}
	return held, true
}

// remoteSocket is a socket held by another node (its edge), as the room
// that owns it sees it: sends and closes travel over the link.
type remoteSocket struct {
	id   SocketID
	edge string
	gen  uint64 // the generation of this node's stream to edge when the socket became known
	cl   *cluster
	in   *instance // set once the socket joins a room
}

func newRemoteSocket(cl *cluster, id SocketID, edge string, in *instance) *remoteSocket {
	return &remoteSocket{id: id, edge: edge, gen: cl.generation(edge), cl: cl, in: in}
}

func (s *remoteSocket) ID() SocketID { return s.id }

func (s *remoteSocket) Send(f Frame) error {
	if f.Op != Text && f.Op != Binary {
		return ErrOpcode
	}
	s.in.deliverTo(s.cl, s.edge, []SocketID{s.id}, f)
	return nil
}

func (s *remoteSocket) Close(code int, reason string) {
	s.cl.fwdOut[tClose].Inc()
	s.cl.sendTo(s.edge, &linkMsg{typ: tClose, sock: s.id, code: code, text: reason})
}

func (s *remoteSocket) SetAutoResponse(a *AutoResponse) {
	m := linkMsg{typ: tAuto, sock: s.id}
	if a != nil {
		m.data, m.text = a.Request, string(a.Response)
	}
	s.cl.fwdOut[tAuto].Inc()
	s.cl.sendTo(s.edge, &m)
}

// LastAutoResponse is not known at the owner: the edge answers on its own
// and does not report it (a documented gap).
func (s *remoteSocket) LastAutoResponse() time.Time { return time.Time{} }

// deliverRemote sends o's frame to its sockets at other edges, one frame
// per edge, and returns those held here.
func (in *instance) deliverRemote(cl *cluster, o output) (local []*Conn) {
	var byEdge map[string][]SocketID
	for _, c := range o.to {
		switch rs, remote := c.sock.(*remoteSocket); {
		case c.gone:
		case remote:
			if byEdge == nil {
				byEdge = make(map[string][]SocketID, 2)
			}
			byEdge[rs.edge] = append(byEdge[rs.edge], c.id)
		default:
			local = append(local, c)
		}
	}
	for edge, ids := range byEdge {
		in.deliverTo(cl, edge, ids, o.frame)
	}
	return local
}

// deliverTo sends f to the room's sockets ids on edge, unless frames the
// room sent there before may have been lost since (cluster.deliver): then
// the room's sockets there are closed first (1012: they reconnect, and a
// chat client resumes where it stopped), and f, for sockets now closing,
// is dropped. A socket never sees a later frame after a lost one.
func (in *instance) deliverTo(cl *cluster, edge string, ids []SocketID, f Frame) {
	if in.edgeGen == nil {
		in.edgeGen = make(map[string]uint64, 2)
	}
	for range 2 {
		g := in.edgeGen[edge]
		if cl.deliver(edge, in.addr, in.lease.Token, ids, f, &g) {
			in.edgeGen[edge] = g
			return
		}
		// Sockets that joined after the break missed nothing: they get f
		// on the new stream.
		if ids = in.closeEdge(cl, edge, ids); len(ids) == 0 {
			return
		}
	}
	in.closeEdge(cl, edge, nil) // broke again at once: they knew that stream, and are closed
}

// closeEdge closes the room's sockets on edge that may have missed frames,
// those it knew before the stream broke: the room's last frame there went
// on a stream that broke, and any frame of that stream may be lost. It
// returns those of ids that joined since and stay open. A socket learns
// the generation of the stream when it becomes known (newRemoteSocket).
func (in *instance) closeEdge(cl *cluster, edge string, ids []SocketID) (open []SocketID) {
	last := in.edgeGen[edge]
	in.edgeGen[edge] = cl.generation(edge)
	n := 0
	for _, c := range in.list {
		rs, remote := c.sock.(*remoteSocket)
		if !remote || c.edge != edge || c.gone {
			continue
		}
		if rs.gen > last {
			if slices.Contains(ids, c.id) {
				open = append(open, c.id)
			}
			continue
		}
		c.sock.Close(1012, "link to the room broke, reconnect")
		n++
	}
	cl.rt.m.linkErrors.WithLabelValues("gap").Inc()
	cl.rt.log.Debug("frames to a node may be lost: its sockets in the room are closed", "room", in.addr.String(), "node", edge, "sockets", n)
	return open
}
