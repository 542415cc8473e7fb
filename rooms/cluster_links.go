// Links between nodes: dialing, registering and losing them, and the
// generations that tell a room its frames to a node may have been lost.

package rooms

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// errLeft fails a link wanted after this node left the cluster.
var errLeft = errors.New("rooms: this node left the cluster")

type dialCall struct {
	done chan struct{}
	l    *link
	err  error
}

// linkTo returns the link to node, dialing it if there is none. Dials to
// one node are shared.
func (cl *cluster) linkTo(ctx context.Context, node string) (*link, error) {
	if l := (*cl.linksView.Load())[node]; l != nil {
		return l, nil // the hot path: every forwarded message and delivery
	}
	cl.mu.Lock()
	if l := cl.links[node]; l != nil {
		cl.mu.Unlock()
		return l, nil
	}
	if d := cl.dials[node]; d != nil {
		cl.mu.Unlock()
		<-d.done
		if d.err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, d.err)
		}
		return d.l, nil
	}
	if cl.left {
		cl.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, errLeft)
	}
	if until, failed := cl.dialFailed[node]; failed && time.Now().Before(until) {
		cl.mu.Unlock()
		// It failed a moment ago: do not make every caller wait for
		// another dial to a node that is likely gone or frozen.
		return nil, fmt.Errorf("%w: node %q unreachable", ErrUnavailable, node)
	}
	d := &dialCall{done: make(chan struct{})}
	cl.dials[node] = d
	cl.mu.Unlock()

	if rec, ok := cl.node(ctx, node); ok {
		d.l, d.err = cl.dialLink(ctx, node, rec.Address)
		if d.err != nil {
			cl.rt.m.linkErrors.WithLabelValues("dial").Inc()
		}
	} else {
		d.err = fmt.Errorf("node %q is not in the registry", node)
	}
	if d.l != nil {
		if d.l = cl.register(d.l); d.l == nil {
			d.err = errLeft
		}
	}
	cl.mu.Lock()
	delete(cl.dials, node)
	if d.err != nil {
		cl.dialFailed[node] = time.Now().Add(linkRedialAfter)
	} else {
		delete(cl.dialFailed, node)
	}
	cl.mu.Unlock()
	close(d.done)
	if d.err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, d.err)
	}
	return d.l, nil
}

// linkRedialAfter is how long after a failed dial to a node its callers
// fail at once.
const linkRedialAfter = 500 * time.Millisecond

// register makes l, which this node dialed, its link to l's peer, and
// returns the link in use. Each node sends its requests only over the link
// it dialed, and answers over the link a request came on: two links per
// pair, one per direction, so the two nodes never race to choose one, and
// each direction's frames stay in one ordered stream. Frames queued while
// the link was dialed go first. Once the node left the cluster, l is
// closed and register returns nil.
func (cl *cluster) register(l *link) *link {
	cl.mu.Lock()
	if cl.left {
		cl.mu.Unlock()
		l.close(nil)
		return nil
	}
	if cur := cl.links[l.peer]; cur != nil && !cur.isClosed() {
		cl.mu.Unlock()
		l.close(nil) // cannot happen: dials to one node are shared
		return cur
	}
	if cl.links[l.peer] == nil {
		cl.rt.m.links.Inc()
	}
	cl.links[l.peer] = l
	cl.linked.Store(true)
	l.gen = cl.gens[l.peer] + 1 // the frames backlogged for it are of this generation too
	if b := cl.backlog[l.peer]; len(b) > 0 {
		l.sendRaw(b)
	}
	delete(cl.backlog, l.peer)
	cl.publishLinks()
	cl.mu.Unlock()
	return l
}

// accepted keeps a link another node dialed, to close it on leave; it
// carries that node's requests and this node's answers, never this node's
// requests. It reports false once the node left the cluster.
func (cl *cluster) accepted(l *link) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.left {
		return false
	}
	cl.inbound[l] = struct{}{}
	cl.linked.Store(true)
	return true
}

// sendTo sends m to node without waiting: over its link, or, while one is
// dialed, queued behind the frames before it. A room's goroutine sends
// this way, so a frozen or vanished edge never holds a room up.
func (cl *cluster) sendTo(node string, m *linkMsg) {
	if l := (*cl.linksView.Load())[node]; l != nil && l.send(m) == nil {
		return
	}
	cl.mu.Lock()
	dial := cl.sendLocked(node, m)
	cl.mu.Unlock()
	if dial {
		cl.goOwned(func() { cl.dialBacklog(node) })
	}
}

// sendLocked sends m on node's link, or queues it while the link is
// dialed; the caller holds cl.mu, and starts dialBacklog once it has let
// go when told to dial. (Should the node be leaving, nobody dials, and the
// frames wait, bounded, for nothing.)
func (cl *cluster) sendLocked(node string, m *linkMsg) (dial bool) {
	if l := cl.links[node]; l != nil && l.send(m) == nil {
		return false
	}
	if len(cl.backlog[node]) > maxLinkBacklog {
		// Frames are dropped: a later delivery of a room that sent here
		// sees the new generation and closes its sockets first. (Telling
		// every room now would send closes into the same full backlog.)
		cl.gens[node]++
		cl.rt.m.linkErrors.WithLabelValues("dropped").Inc()
		return false
	}
	_, dialing := cl.backlog[node]
	cl.backlog[node] = appendLinkMsg(cl.backlog[node], m)
	return !dialing
}

// dialBacklog dials node for the frames queued for it; should the dial
// fail, they are dropped. It gives up when the node leaves the cluster.
func (cl *cluster) dialBacklog(node string) {
	ctx, cancel := context.WithTimeout(cl.life, 2*linkDialLimit)
	defer cancel()
	if _, err := cl.linkTo(ctx, node); err == nil {
		return
	}
	cl.mu.Lock()
	if cl.links[node] == nil {
		// The edge is gone (or frozen); so are, or will be, its sockets:
		// the registry closes them in the rooms. Should it be alive after
		// all, a room's next delivery there sees the new generation and
		// closes them first. (Telling every room now would have each send
		// closes to a node that cannot be reached, fail again, and so on.)
		delete(cl.backlog, node)
		cl.gens[node]++
		cl.rt.m.linkErrors.WithLabelValues("dropped").Inc()
	}
	cl.mu.Unlock()
}

// publishLinks makes the links map visible to linkTo's lock-free path;
// the caller holds cl.mu (or owns cl alone).
func (cl *cluster) publishLinks() {
	view := make(map[string]*link, len(cl.links))
	for n, l := range cl.links {
		view[n] = l
	}
	cl.linksView.Store(&view)
}

// peerSeen notes node's incarnation; a new one means the node restarted,
// and the sockets it held before are gone.
func (cl *cluster) peerSeen(node string, inc uint64) {
	cl.mu.Lock()
	old, known := cl.incarnations[node]
	cl.incarnations[node] = inc
	cl.mu.Unlock()
	if known && old != inc {
		cl.rt.log.Warn("node restarted", "node", node)
		cl.edgeLost(node)
	}
}

// linkLost settles what a closed link left unanswered. Messages whose
// event may not have run close their socket with 1012, so the client
// reconnects and learns what happened; closes are sent again to wherever
// the room is now; calls fail. Rooms here whose sockets were on the peer
// hear of them once the registry says the peer is gone.
func (cl *cluster) linkLost(l *link, pending map[uint64]pendingCall, err error) {
	cl.mu.Lock()
	broke := false
	if cl.links[l.peer] == l {
		delete(cl.links, l.peer)
		cl.rt.m.links.Dec()
		cl.publishLinks()
		if broke = err != nil; broke { // not a node leaving the cluster in order
			cl.gens[l.peer]++
		}
	}
	delete(cl.inbound, l)
	cl.mu.Unlock()
	if broke {
		cl.gapped(l.peer)
	}
	if err != nil && len(pending) > 0 {
		cl.rt.m.linkErrors.WithLabelValues("lost").Inc()
		cl.rt.log.Warn("link to node lost", "node", l.peer, "unanswered", len(pending), "err", err)
	}
	for i := range cl.routes {
		r := &cl.routes[i]
		r.mu.Lock()
		for a, n := range r.owners {
			if n == l.peer {
				delete(r.owners, a)
			}
		}
		r.mu.Unlock()
	}
	for _, p := range pending {
		switch p.typ {
		case tMessage:
			if s := cl.rt.lookup(p.sock); s != nil {
				s.Close(1012, "room owner lost, reconnect")
			}
		case tClosed:
			cl.closeLater(p.addr, p.sock, p.code, p.text)
		default:
			if p.reply != nil {
				m := linkMsg{typ: tReply}
				encodeErr(&m, errMoved)
				p.reply <- m
			}
		}
	}
}

// edgeLost closes, in every room here, the sockets node held: it died or
// restarted.
func (cl *cluster) edgeLost(node string) { cl.tellRooms(evEdgeLost, node) }

// gapped tells every room with sockets that frames for node may have been
// lost: each that sent there closes its sockets there (deliverTo), even if
// it sends nothing more.
func (cl *cluster) gapped(node string) { cl.tellRooms(evEdgeGap, node) }

// tellRooms sends an event of kind about node to every room here that has
// sockets.
func (cl *cluster) tellRooms(kind eventKind, node string) {
	var addrs []Addr
	for i := range cl.rt.shards {
		sh := &cl.rt.shards[i]
		sh.mu.Lock()
		for a, in := range sh.rooms {
			if in.nconns.Load() > 0 {
				addrs = append(addrs, a)
			}
		}
		sh.mu.Unlock()
	}
	for _, a := range addrs {
		cl.rt.sendWith(a, event{kind: kind, reason: node}, false, nil)
	}
}

// deliver sends f to the sockets ids at node, one link frame for all.
// deliver sends a room's frame to its sockets on node, unless the stream
// to node broke since the room's last frame there (*gen, 0 before the
// first): then it sends nothing and reports false, and the room closes
// its sockets there first. The check and the send are one step under
// cl.mu, so no frame of the room reaches node after a break unnoticed.
func (cl *cluster) deliver(node string, a Addr, token uint64, ids []SocketID, f Frame, gen *uint64) bool {
	m := &linkMsg{typ: tDeliver, addr: a, token: token, ids: ids, op: f.Op, data: f.Data}
	if l := (*cl.linksView.Load())[node]; l != nil && l.gen == *gen && l.send(m) == nil {
		cl.fwdOut[tDeliver].Inc() // the hot path: a link of the room's generation
		return true
	}
	cl.mu.Lock()
	cur := cl.gens[node] + 1
	if *gen != 0 && *gen != cur {
		cl.mu.Unlock()
		return false
	}
	*gen = cur
	if l := cl.links[node]; l != nil {
		// A link that fails this frame (closed, its loss still on its way
		// to linkLost; or the frame too big for any link) breaks the
		// stream: backlogged for the next link, the frame would arrive
		// after what the old link lost, before the room's closes.
		err := l.send(m)
		cl.mu.Unlock()
		if err != nil {
			return false
		}
		cl.fwdOut[tDeliver].Inc()
		return true
	}
	dial := cl.sendLocked(node, m) // no link yet: the backlog
	cl.mu.Unlock()
	if dial {
		cl.goOwned(func() { cl.dialBacklog(node) })
	}
	cl.fwdOut[tDeliver].Inc()
	return true
}

// generation is the current generation of the stream to node.
func (cl *cluster) generation(node string) uint64 {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.gens[node] + 1
}

// goOwned runs each of fs on a goroutine that leave waits for, and reports
// true; once leave is waiting it runs none and reports false. Every
// goroutine the links start goes through it: readers, writers, backlog
// dials, and the loss of a link that overflowed.
func (cl *cluster) goOwned(fs ...func()) bool {
	cl.bgMu.Lock()
	defer cl.bgMu.Unlock()
	if cl.bgDone {
		return false
	}
	for _, f := range fs {
		cl.bg.Go(f)
	}
	return true
}

// closeLinks ends this node's links for good: no link is taken or dialed
// from now on, every open one is closed, and it returns once every
// goroutine the links started has finished.
func (cl *cluster) closeLinks() {
	cl.unlisten()
	cl.endLife() // a dial in the background gives up
	cl.mu.Lock()
	cl.left = true
	links := make([]*link, 0, len(cl.links)+len(cl.inbound))
	for _, l := range cl.links {
		links = append(links, l)
	}
	for l := range cl.inbound {
		links = append(links, l)
	}
	cl.mu.Unlock()
	for _, l := range links {
		l.close(nil)
	}
	cl.bgMu.Lock()
	cl.bgDone = true
	cl.bgMu.Unlock()
	cl.bg.Wait()
}
