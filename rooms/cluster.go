package rooms

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/storage"
)

// ErrUnavailable is returned when the cluster cannot place a room: its
// coordinator (Redis) does not answer, or the room's owner cannot be
// reached while it still holds the lease.
var ErrUnavailable = errors.New("rooms: room unavailable, try again")

var (
	// errMoved fails an event that reached a node which no longer runs its
	// room; the client is told to reconnect (1012), as on a drain.
	errMoved = fmt.Errorf("%w: room moved to another node", ErrDraining)
	// errNotHere is send's answer for a room with no instance on this node
	// when it was given no lease to start one.
	errNotHere = errors.New("rooms: room is not running on this node")
	// errNotOwner answers a forwarded event for a room another node holds.
	errNotOwner = errors.New("rooms: another node owns the room")
)

// cluster is the Runtime's cluster mode: room leases with fencing tokens,
// the node registry, and links to the other nodes over which events go to
// a room's owner and its sends come back to the edges.
type cluster struct {
	rt          *Runtime
	coord       storage.Coordinator
	self        string
	address     string
	secret      string
	ttl         time.Duration
	incarnation uint64
	epoch       time.Time // lease deadlines are monotonic nanoseconds since epoch

	mu         sync.Mutex
	links      map[string]*link                 // node → the link that reaches it
	linksView  atomic.Pointer[map[string]*link] // a copy of links for readers, replaced on change
	dials      map[string]*dialCall
	dialFailed map[string]time.Time // node → until when a new dial is not tried
	backlog    map[string][]byte    // frames for a node whose link is being dialed
	// gens[node] counts the breaks in this node's stream of frames to node:
	// a link to it lost, or frames for it dropped. Frames may have gone
	// with each, so a room that sent there before a break closes its
	// sockets there before it sends them anything more (deliverTo).
	gens         map[string]uint64
	incarnations map[string]uint64
	inbound      map[*link]struct{} // links other nodes dialed
	nodes        atomic.Pointer[map[string]storage.NodeRecord]
	hbMu         sync.Mutex   // one heartbeat at a time, so node lists are compared in order
	registered   atomic.Int64 // cl.now() of the last heartbeat Redis took; 0 before the first

	placeMu sync.Mutex
	placing map[Addr]*placement // rooms whose lease this node is asking for
	queued  map[Addr][]func()   // events forwarded for a room being placed, in order
	nqueued atomic.Int32        // len(queued): while 0, forwarded events skip placeMu

	fwdIn, fwdOut [linkTypes]prometheus.Counter
}

type dialCall struct {
	done chan struct{}
	l    *link
	err  error
}

// heldLease is a lease this node just acquired, with when it asked: the
// lease surely ends no earlier than start + TTL.
type heldLease struct {
	storage.Lease
	start time.Time
}

func newCluster(rt *Runtime) *cluster {
	cl := &cluster{rt: rt, coord: rt.o.Coordinator, self: rt.o.NodeID, address: rt.o.Address, secret: rt.o.ClusterSecret,
		ttl: rt.o.LeaseTTL, incarnation: rand.Uint64(), epoch: time.Now(),
		links: map[string]*link{}, dials: map[string]*dialCall{}, dialFailed: map[string]time.Time{}, backlog: map[string][]byte{}, gens: map[string]uint64{},
		incarnations: map[string]uint64{}, inbound: map[*link]struct{}{}, placing: map[Addr]*placement{}, queued: map[Addr][]func(){}}
	names := [linkTypes]string{tConnect: "connect", tMessage: "message", tClosed: "closed", tAsk: "ask", tDeliver: "deliver",
		tClose: "close", tAuto: "auto", tProbe: "probe", tAck: "ack", tReply: "reply", tPing: "ping"}
	for t := tConnect; t < linkTypes; t++ {
		cl.fwdIn[t] = rt.m.forwarded.WithLabelValues("in", names[t])
		cl.fwdOut[t] = rt.m.forwarded.WithLabelValues("out", names[t])
	}
	empty := map[string]storage.NodeRecord{}
	cl.nodes.Store(&empty)
	cl.publishLinks()
	return cl
}

// now is the monotonic clock lease deadlines are kept in.
func (cl *cluster) now() int64 { return int64(time.Since(cl.epoch)) }

// deadline is when a lease taken or renewed at start must be taken as
// lost: a tenth of the TTL early, for clock drift between here and Redis.
func (cl *cluster) deadline(start time.Time) int64 {
	return int64(start.Sub(cl.epoch) + cl.ttl - cl.ttl/10)
}

// LinkHandler serves the links of other nodes; mount it at LinkPath.
func (rt *Runtime) LinkHandler() http.Handler {
	if rt.cl == nil {
		return http.NotFoundHandler()
	}
	return rt.cl
}

// run keeps the node registered and its leases renewed until ctx ends.
func (cl *cluster) run(ctx context.Context) {
	every := max(cl.ttl/3, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	prune := time.Now()
	cl.heartbeat(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cl.renew(ctx)
		cl.heartbeat(ctx)
		if time.Since(prune) > time.Minute {
			// Cached owners only save lookups: a wrong owner bounces the
			// event back. Fences matter only around a takeover. Start
			// afresh now and then, so rooms that moved or went quiet do
			// not stay in the maps.
			prune = time.Now()
			stale := cl.now() - int64(time.Minute)
			for i := range cl.rt.shards {
				sh := &cl.rt.shards[i]
				sh.mu.Lock()
				clear(sh.owners)
				for a, f := range sh.fences {
					if f.seen < stale {
						delete(sh.fences, a)
					}
				}
				sh.mu.Unlock()
			}
		}
	}
}

// heartbeat records this node as alive and reads who else is; nodes that
// disappeared from the registry died, and their sockets are closed in
// every room here.
func (cl *cluster) heartbeat(ctx context.Context) {
	cl.hbMu.Lock()
	defer cl.hbMu.Unlock()
	rec := storage.NodeRecord{ID: cl.self, Address: cl.address, Sockets: int(cl.rt.nsocks.Load()),
		ActiveRooms: int(cl.rt.nrooms.Load()), StartedAt: cl.rt.started.UTC()}
	if err := cl.coord.Heartbeat(ctx, rec, cl.ttl); err != nil {
		if ctx.Err() == nil {
			cl.rt.log.Warn("heartbeat", "err", err)
		}
		return
	}
	cl.registered.Store(max(cl.now(), 1))
	cl.readNodes(ctx)
}

// readNodes refreshes the cached registry, and takes every node that left
// it since the last read for dead. Both readers, the heartbeat and a
// lookup of a node that may have just joined, do both: a lookup that saw
// a node gone first would otherwise hide it from the heartbeat, and its
// sockets would stay in the rooms for good. The caller holds hbMu.
func (cl *cluster) readNodes(ctx context.Context) {
	list, err := cl.coord.Nodes(ctx)
	if err != nil {
		return
	}
	now := make(map[string]storage.NodeRecord, len(list))
	for _, n := range list {
		now[n.ID] = n
	}
	for id := range *cl.nodes.Swap(&now) {
		if _, ok := now[id]; !ok && id != cl.self {
			cl.rt.log.Warn("node left the cluster", "node", id)
			cl.edgeLost(id)
		}
	}
}

// inRegistry says why this node cannot serve yet, or nil. Until the
// registry lists it, other nodes refuse its links and take its sockets
// for dead, so a load balancer must not send it clients.
func (cl *cluster) inRegistry() error {
	at := cl.registered.Load()
	if at == 0 {
		return errors.New("not yet in the cluster's node registry")
	}
	if age := time.Duration(cl.now() - at); age > cl.ttl {
		return fmt.Errorf("no heartbeat reached the node registry for %s", age.Round(time.Millisecond))
	}
	return nil
}

// node returns id's registry record, reading the registry again when the
// cached copy does not have it: it may have just joined.
func (cl *cluster) node(ctx context.Context, id string) (storage.NodeRecord, bool) {
	if rec, ok := (*cl.nodes.Load())[id]; ok {
		return rec, true
	}
	cl.hbMu.Lock()
	cl.readNodes(ctx)
	cl.hbMu.Unlock()
	rec, ok := (*cl.nodes.Load())[id]
	return rec, ok
}

// alive reports whether node is in the registry.
func (cl *cluster) alive(node string) bool {
	_, ok := (*cl.nodes.Load())[node]
	return ok || node == cl.self
}

// renew extends the lease of every room in memory here, in one round trip.
// A room whose lease was taken, or could not be renewed before its
// deadline, stops running here at once.
func (cl *cluster) renew(ctx context.Context) {
	var ins []*instance
	var rooms []storage.Room
	var tokens []uint64
	for i := range cl.rt.shards {
		sh := &cl.rt.shards[i]
		sh.mu.Lock()
		for _, in := range sh.rooms {
			ins = append(ins, in)
			rooms = append(rooms, in.room)
			tokens = append(tokens, in.lease.Token)
		}
		sh.mu.Unlock()
	}
	if len(ins) == 0 {
		return
	}
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, cl.ttl/3)
	states, err := cl.coord.Renew(rctx, cl.self, cl.ttl, rooms, tokens)
	cancel()
	for i, in := range ins {
		state := storage.LeaseUnknown
		if i < len(states) {
			state = states[i]
		}
		switch {
		case state == storage.LeaseRenewed:
			in.leaseUntil.Store(cl.deadline(start))
		case !cl.rt.holds(in):
			// Evicted while the renewal was on its way: its lease was
			// given up on purpose, not taken.
		case state == storage.LeaseLost:
			cl.rt.log.Warn("room lease taken over", "room", in.addr.String())
			cl.lose(in)
		case cl.now() >= in.leaseUntil.Load():
			cl.rt.log.Warn("room lease not renewed in time", "room", in.addr.String(), "err", err)
			cl.lose(in)
		}
	}
}

// lose stops running in here: the next event for its room is placed
// afresh. A running instance finishes what it committed and fails the
// rest (abandon, which then releases the lease); a parked one has nothing
// in flight and is simply dropped.
func (cl *cluster) lose(in *instance) {
	if in.lost.Swap(true) {
		return
	}
	cl.rt.m.leasesLost.Inc()
	sh := cl.rt.shard(in.addr)
	sh.mu.Lock()
	if sh.rooms[in.addr] == in {
		cl.rt.remove(sh, in)
	}
	parked := in.parked
	sh.mu.Unlock()
	if parked {
		cl.release(in)
		return
	}
	select {
	case in.signal <- struct{}{}:
	default:
	}
}

// release gives up leases this node no longer needs, all in one round
// trip, in the background: a sweep may evict thousands of rooms at once,
// and a goroutine and a pool connection for each would crowd out the rooms
// still running. One not released expires within the TTL.
func (cl *cluster) release(ins ...*instance) {
	if len(ins) > 0 {
		go cl.releaseNow(ins)
	}
}

// releaseNow gives up the leases of ins in one round trip, within a TTL.
// (A lease already taken over stays with its new holder.)
func (cl *cluster) releaseNow(ins []*instance) {
	rooms, leases := make([]storage.Room, len(ins)), make([]storage.Lease, len(ins))
	for i, in := range ins {
		rooms[i], leases[i] = in.room, in.lease
	}
	ctx, cancel := context.WithTimeout(context.Background(), cl.ttl)
	defer cancel()
	err := cl.coord.Release(ctx, rooms, leases)
	if err != nil && ctx.Err() == nil && !errors.Is(err, storage.ErrClosed) { // closed: the node is stopping
		cl.rt.log.Warn("release leases", "rooms", len(rooms), "err", err) // they expire within the TTL
	}
}

// placement is one node's request for a room's lease; events of the room
// that arrive meanwhile wait for it, so the node asks Redis once and a
// room never starts twice here.
type placement struct {
	done   chan struct{}
	remote string // the owner, when another node holds the lease
	err    error
}

// place finds where a's events run and, when the room is free, takes its
// lease and starts it here with start (which queues the caller's event).
// remote names the owner when another node holds the lease; retry means
// the room runs here now, started by another event meanwhile: send again.
func (cl *cluster) place(ctx context.Context, a Addr, useCache bool, start func(*heldLease) error) (remote string, retry bool, err error) {
	if !cl.rt.HasClass(a.Class) {
		return "", false, ErrUnknownClass
	}
	sh := cl.rt.shard(a)
	sh.mu.Lock()
	if sh.rooms[a] != nil {
		sh.mu.Unlock()
		return "", true, nil
	}
	if n, ok := sh.owners[a]; ok && useCache {
		sh.mu.Unlock()
		return n, false, nil
	}
	sh.mu.Unlock()

	cl.placeMu.Lock()
	if p := cl.placing[a]; p != nil {
		cl.placeMu.Unlock()
		select {
		case <-p.done:
		case <-ctx.Done():
			return "", false, ctx.Err()
		}
		return p.remote, p.remote == "" && p.err == nil, p.err
	}
	p := &placement{done: make(chan struct{})}
	cl.placing[a] = p
	cl.placeMu.Unlock()
	defer func() {
		cl.placeMu.Lock()
		delete(cl.placing, a)
		cl.placeMu.Unlock()
		close(p.done)
	}()
	// A placement that ended between the check above and this one's start
	// may have started the room here: acquiring its lease again would
	// raise the fence past the running instance's token.
	sh.mu.Lock()
	running := sh.rooms[a] != nil
	sh.mu.Unlock()
	if running {
		return "", true, nil
	}

	begin := time.Now()
	actx, cancel := context.WithTimeout(ctx, cl.ttl)
	l, err := cl.coord.Acquire(actx, a.storageRoom(), cl.self, cl.ttl)
	cancel()
	switch {
	case err == nil:
		p.err = start(&heldLease{Lease: l, start: begin})
		return "", false, p.err
	case errors.Is(err, storage.ErrLeaseHeld):
		sh.mu.Lock()
		sh.owners[a] = l.Node
		sh.mu.Unlock()
		p.remote = l.Node
		return l.Node, false, nil
	default:
		cl.rt.m.failures.WithLabelValues("lease").Inc()
		cl.rt.log.Warn("room lease unavailable", "room", a.String(), "err", err)
		p.err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		return "", false, p.err
	}
}

// knownOwner is the node a's events go to as far as this node knows
// without asking Redis: "" when the room runs here or is not known.
func (cl *cluster) knownOwner(a Addr) string {
	sh := cl.rt.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.rooms[a] != nil {
		return ""
	}
	return sh.owners[a]
}

func (cl *cluster) forgetOwner(a Addr, node string) {
	sh := cl.rt.shard(a)
	sh.mu.Lock()
	if sh.owners[a] == node {
		delete(sh.owners, a)
	}
	sh.mu.Unlock()
}

// here delivers ev to a's instance on this node, taking the room's lease
// if it is free. remote names the owner when another node holds it.
func (cl *cluster) here(ctx context.Context, a Addr, ev event, bounded, useCache bool) (remote string, err error) {
	for range 3 {
		err := cl.rt.sendWith(a, ev, bounded, nil)
		if !errors.Is(err, errNotHere) {
			return "", err
		}
		remote, retry, err := cl.place(ctx, a, useCache, func(l *heldLease) error { return cl.rt.sendWith(a, ev, bounded, l) })
		if !retry {
			return remote, err
		}
	}
	return "", ErrUnavailable
}

// inOrder runs f, which delivers a forwarded event of room a, on the
// link's reader when the room runs here; otherwise placing the room may
// wait on Redis, and f runs on a goroutine of the room's own that keeps
// the order of the events forwarded meanwhile. The reader never waits, so
// one slow room cannot hold up the other rooms on the link.
//
// A message (refuse set) is refused once MaxQueuedEvents wait for the
// room, as a running room's mailbox refuses it: while Redis is slow the
// queue drains at one placement attempt per event, and must not grow
// without bound. Closes, connects and admin calls are never refused here.
func (cl *cluster) inOrder(a Addr, f, refuse func()) {
	cl.placeMu.Lock()
	if q, busy := cl.queued[a]; busy {
		if refuse != nil && len(q) >= cl.rt.o.MaxQueuedEvents {
			cl.placeMu.Unlock()
			cl.rt.m.overloaded.Inc()
			refuse()
			return
		}
		cl.queued[a] = append(q, f)
		cl.placeMu.Unlock()
		return
	}
	if cl.rt.active(a) != nil {
		cl.placeMu.Unlock()
		f()
		return
	}
	cl.queued[a] = []func(){f}
	cl.nqueued.Add(1)
	cl.placeMu.Unlock()
	go func() {
		for {
			cl.placeMu.Lock()
			q := cl.queued[a]
			if len(q) == 0 {
				delete(cl.queued, a)
				cl.nqueued.Add(-1)
				cl.placeMu.Unlock()
				return
			}
			cl.queued[a] = q[:0:0]
			cl.placeMu.Unlock()
			for _, f := range q {
				f()
			}
		}
	}()
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
		d.l = cl.register(d.l)
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
// the link was dialed go first.
func (cl *cluster) register(l *link) *link {
	cl.mu.Lock()
	if cur := cl.links[l.peer]; cur != nil && !cur.isClosed() {
		cl.mu.Unlock()
		l.close(nil) // cannot happen: dials to one node are shared
		return cur
	}
	if cl.links[l.peer] == nil {
		cl.rt.m.links.Inc()
	}
	cl.links[l.peer] = l
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
// requests.
func (cl *cluster) accepted(l *link) {
	cl.mu.Lock()
	cl.inbound[l] = struct{}{}
	cl.mu.Unlock()
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
		go cl.dialBacklog(node)
	}
}

// sendLocked sends m on node's link, or queues it while the link is
// dialed; the caller holds cl.mu, and starts dialBacklog once it has let
// go when told to dial.
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
// fail, they are dropped.
func (cl *cluster) dialBacklog(node string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*linkDialLimit)
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
	for i := range cl.rt.shards {
		sh := &cl.rt.shards[i]
		sh.mu.Lock()
		for a, n := range sh.owners {
			if n == l.peer {
				delete(sh.owners, a)
			}
		}
		sh.mu.Unlock()
	}
	for _, p := range pending {
		switch p.typ {
		case tMessage:
			if s := cl.rt.lookup(p.sock); s != nil {
				s.Close(1012, "room owner lost, reconnect")
			}
		case tClosed:
			go cl.closedLater(p.addr, p.sock, p.code, p.text)
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

// closedLater reports a socket's close to its room's current owner,
// retrying while the room has none: the close must not be lost, or the
// room would keep the socket for good.
func (cl *cluster) closedLater(a Addr, id SocketID, code int, reason string) {
	backoff := 100 * time.Millisecond
	deadline := time.Now().Add(3*cl.ttl + time.Second)
	for time.Now().Before(deadline) {
		if cl.closed(a, id, code, reason) == nil {
			return
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
	cl.rt.log.Warn("socket close not delivered", "room", a.String(), "socket", id.String())
}

// Router, cluster mode.

func (cl *cluster) connect(ctx context.Context, a Addr, s Socket, info ConnectInfo) error {
	remote, err := cl.call(ctx, a, func() event { return event{kind: evConnect, sock: s, info: info} },
		&linkMsg{typ: tConnect, addr: a, sock: s.ID(), info: info})
	if remote != nil && errors.Is(err, ErrDraining) {
		// The link to the owner closed with the connect unanswered: the
		// owner may have let the socket in before it went. The socket is
		// refused here, so the room must hear it is gone.
		go cl.closedLater(a, s.ID(), 1006, "connect lost")
	}
	return err
}

// call runs an event that answers (connect, admin calls) wherever its room
// runs: here, or on the owner through a tConnect or tAsk. A wrong cached
// owner is corrected from its answer. remote is the owner's answer when
// the room ran elsewhere.
func (cl *cluster) call(ctx context.Context, a Addr, mk func() event, m *linkMsg) (remote *linkMsg, err error) {
	for range 3 {
		ev := mk()
		ev.reply = make(chan error, 1)
		owner, err := cl.here(ctx, a, ev, false, true)
		if err != nil {
			return nil, err
		}
		if owner == "" {
			select {
			case err := <-ev.reply:
				return nil, err
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		ans, err := cl.callRemote(ctx, owner, m)
		if errors.Is(err, errNotOwner) {
			cl.forgetOwner(a, owner)
			continue
		}
		return &ans, err
	}
	return nil, ErrUnavailable
}

func (cl *cluster) callRemote(ctx context.Context, node string, m *linkMsg) (linkMsg, error) {
	l, err := cl.linkTo(ctx, node)
	if err != nil {
		cl.forgetOwner(m.addr, node)
		return linkMsg{}, err
	}
	reply := make(chan linkMsg, 1)
	if err := l.call(m, reply); err != nil {
		return linkMsg{}, errMoved
	}
	cl.fwdOut[m.typ].Inc()
	select {
	case ans := <-reply:
		return ans, decodeErr(&ans)
	case <-ctx.Done():
		return linkMsg{}, ctx.Err()
	}
}

func (cl *cluster) message(a Addr, s Socket, f Frame) error {
	remote := cl.knownOwner(a)
	if remote == "" {
		ev := event{kind: evMessage, id: s.ID(), frame: f}
		ev.frame.Data = append([]byte(nil), f.Data...) // the room keeps it; f.Data is the gateway's
		var err error
		if remote, err = cl.here(context.Background(), a, ev, true, true); err != nil || remote == "" {
			return err
		}
	}
	l, err := cl.linkTo(context.Background(), remote)
	if err != nil {
		cl.forgetOwner(a, remote)
		return errMoved // the owner is unreachable: the client reconnects, and finds the room anew
	}
	cl.fwdOut[tMessage].Inc()
	if err := l.call(&linkMsg{typ: tMessage, addr: a, sock: s.ID(), op: f.Op, data: f.Data}, nil); err != nil {
		return errMoved
	}
	return nil
}

func (cl *cluster) closed(a Addr, id SocketID, code int, reason string) error {
	remote, err := cl.here(context.Background(), a, event{kind: evClose, id: id, code: code, reason: reason}, false, true)
	if err != nil || remote == "" {
		return err
	}
	l, err := cl.linkTo(context.Background(), remote)
	if err != nil {
		cl.forgetOwner(a, remote)
		return err
	}
	cl.fwdOut[tClosed].Inc()
	return l.call(&linkMsg{typ: tClosed, addr: a, sock: id, code: code, text: reason}, nil)
}

// dispatch handles one frame from a peer, on the link's reader goroutine:
// events are queued in order, and nothing here waits for a room.
func (cl *cluster) dispatch(l *link, m *linkMsg) {
	cl.fwdIn[m.typ].Inc()
	switch m.typ {
	case tPing:
	case tMessage:
		seq := m.seq
		ev := event{kind: evMessage, id: m.sock, frame: Frame{Op: m.op, Data: m.data}, done: func(err error) { cl.answer(l, tAck, seq, err, nil) }}
		if cl.nqueued.Load() == 0 {
			// The hot path: no room waits for placement, so none of this
			// link's earlier events can be behind; a running room takes
			// the event straight away.
			if err := cl.rt.sendWith(m.addr, ev, true, nil); !errors.Is(err, errNotHere) {
				if err != nil {
					cl.answer(l, tAck, seq, err, nil)
				}
				return
			}
		}
		cl.inOrder(m.addr, func() { cl.forwarded(l, m, ev, true) }, func() { ev.done(ErrOverloaded) })
	case tClosed:
		seq := m.seq
		ev := event{kind: evClose, id: m.sock, code: m.code, reason: m.text, done: func(err error) { cl.answer(l, tAck, seq, err, nil) }}
		cl.inOrder(m.addr, func() { cl.forwarded(l, m, ev, false) }, nil)
	case tConnect:
		rs := &remoteSocket{id: m.sock, edge: l.peer, cl: cl}
		ev := event{kind: evConnect, sock: rs, info: m.info, reply: make(chan error, 1)}
		cl.inOrder(m.addr, func() { cl.forwardedCall(l, m, ev, nil) }, nil)
	case tAsk:
		cl.inOrder(m.addr, func() { cl.ask(l, m) }, nil)
	case tAck, tReply:
		p, ok := l.answered(m.seq)
		if !ok {
			return
		}
		if p.reply != nil {
			p.reply <- *m
			return
		}
		err := decodeErr(m)
		switch {
		case err == nil:
		case p.typ == tMessage:
			// The owner closes the socket itself when a handler fails; a
			// message it could not take at all closes it here.
			if errors.Is(err, errNotOwner) {
				cl.forgetOwner(p.addr, l.peer)
			}
			if s := cl.rt.lookup(p.sock); s != nil {
				code, reason := closeCodeOf(err)
				s.Close(code, reason)
			}
		case p.typ == tClosed:
			if errors.Is(err, errNotOwner) {
				cl.forgetOwner(p.addr, l.peer)
			}
			go cl.closedLater(p.addr, p.sock, p.code, p.text)
		}
	case tDeliver:
		if !cl.fenceOK(m.addr, m.token) {
			// A former owner's frame, after the new owner's: the client
			// may have missed it for good, so it reconnects and resyncs
			// (chat resumes with ?since=).
			for _, id := range m.ids {
				if s := cl.rt.lookup(id); s != nil {
					s.Close(1012, "room moved, reconnect")
				}
			}
			return
		}
		f := Frame{Op: m.op, Data: m.data}
		for _, id := range m.ids {
			if s := cl.rt.lookup(id); s != nil {
				s.Send(f)
			}
		}
	case tClose:
		// Not fenced: a close from any owner, even a former one, is safe;
		// the client reconnects. Dropping it could leave a socket open
		// that no room knows.
		if s := cl.rt.lookup(m.sock); s != nil {
			s.Close(m.code, m.text)
		}
	case tAuto:
		if s := cl.rt.lookup(m.sock); s != nil {
			if m.data == nil {
				s.SetAutoResponse(nil)
			} else {
				s.SetAutoResponse(&AutoResponse{Request: m.data, Response: []byte(m.text)})
			}
		}
	case tProbe:
		held := m.ids[:0]
		for _, id := range m.ids {
			if cl.rt.lookup(id) != nil {
				held = append(held, id)
			}
		}
		l.send(&linkMsg{typ: tReply, seq: m.seq, ids: held})
	}
}

// forwarded queues an event a peer sent this node as the room's owner.
func (cl *cluster) forwarded(l *link, m *linkMsg, ev event, bounded bool) {
	remote, err := cl.here(context.Background(), m.addr, ev, bounded, false)
	if remote != "" {
		err = errNotOwner
	}
	if err != nil {
		cl.answer(l, tAck, m.seq, err, nil)
	}
}

// forwardedCall queues an event that answers, and answers the peer when
// the room has. The wait runs apart so the link keeps reading.
func (cl *cluster) forwardedCall(l *link, m *linkMsg, ev event, result func() []byte) {
	seq := m.seq
	remote, err := cl.here(context.Background(), m.addr, ev, false, false)
	if remote != "" {
		err = errNotOwner
	}
	if err != nil {
		cl.answer(l, tReply, seq, err, nil)
		return
	}
	go func() {
		err := <-ev.reply
		var data []byte
		if err == nil && result != nil {
			data = result()
		}
		cl.answer(l, tReply, seq, err, data)
	}()
}

func (cl *cluster) answer(l *link, typ linkType, seq uint64, err error, data []byte) {
	m := linkMsg{typ: typ, seq: seq, data: data}
	encodeErr(&m, err)
	cl.fwdOut[typ].Inc()
	l.send(&m)
}

// ask runs an admin call a peer forwarded.
func (cl *cluster) ask(l *link, m *linkMsg) {
	ev := event{reply: make(chan error, 1)}
	var result func() []byte
	switch m.kind {
	case askKick:
		ev.kind, ev.id = evKick, m.sock
	case askBroadcast:
		ev.kind, ev.tag, ev.frame = evBroadcast, m.text, Frame{Op: m.op, Data: m.data}
	case askDelete:
		ev.kind = evDelete
	case askRequest:
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(m.data)))
		if err != nil {
			cl.answer(l, tReply, m.seq, fmt.Errorf("%w: forwarded request: %w", ErrBadRequest, err), nil)
			return
		}
		ev.kind, ev.req, ev.rec = evRequest, req, httptest.NewRecorder()
		result = func() []byte {
			b, _ := httputil.DumpResponse(ev.rec.Result(), true)
			return b
		}
	default:
		cl.answer(l, tReply, m.seq, ErrBadRequest, nil)
		return
	}
	cl.forwardedCall(l, m, ev, result)
}

// fenceOK reports whether a frame from the owner with token may reach a's
// sockets: not if a newer owner of a has already sent here. A former
// owner, frozen while another took over, never gets a late frame between
// the new owner's.
func (cl *cluster) fenceOK(a Addr, token uint64) bool {
	sh := cl.rt.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cur := sh.fences[a]
	if token < cur.token {
		cl.rt.m.fencedCommits.WithLabelValues("edge").Inc()
		return false
	}
	sh.fences[a] = fence{token: token, seen: cl.now()}
	return true
}

// fence is the newest owner token an edge has seen for a room, and when.
type fence struct {
	token uint64
	seen  int64 // cluster.now()
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
		go cl.dialBacklog(node)
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
	cl   *cluster
	in   *instance // set once the socket joins a room
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

// Errors over the link: a small table, so the edge maps the owner's error
// to the same close code and HTTP status a local room would have caused.
var linkErrs = []error{nil, ErrUnknownClass, ErrRefused, ErrFailed, ErrOverloaded, ErrDraining,
	ErrRoomNotFound, ErrSocketNotFound, ErrNoRequestHandler, ErrBadRequest, ErrLimit, errNotOwner, ErrUnavailable}

// codeCloseError marks a CloseError: its code travels in token.
const codeCloseError = 100

func encodeErr(m *linkMsg, err error) {
	if err == nil {
		return
	}
	m.text = err.Error()
	var ce *CloseError
	if errors.As(err, &ce) {
		m.code, m.token, m.text = codeCloseError, uint64(ce.Code), ce.Reason
		return
	}
	m.code = len(linkErrs) // unknown: kept as text
	for i, e := range linkErrs[1:] {
		if errors.Is(err, e) {
			m.code = i + 1
			break
		}
	}
}

func decodeErr(m *linkMsg) error {
	switch {
	case m.code == 0:
		return nil
	case m.code == codeCloseError:
		return &CloseError{Code: int(m.token), Reason: m.text}
	case m.code < len(linkErrs):
		return fmt.Errorf("%w (on the room's node: %s)", linkErrs[m.code], m.text)
	default:
		return errors.New(m.text)
	}
}

// closeCodeOf is the close code for a socket whose message the owner
// could not take.
func closeCodeOf(err error) (int, string) {
	switch {
	case errors.Is(err, ErrOverloaded):
		return 1008, "room overloaded"
	case errors.Is(err, ErrDraining), errors.Is(err, errNotOwner), errors.Is(err, ErrUnavailable), errors.Is(err, ErrSocketNotFound):
		return 1012, "room moved, reconnect"
	default:
		return 1011, "room handler failed"
	}
}

// request hands an HTTP request to the room's OnRequest wherever it runs;
// a remote room's request and response travel in HTTP/1.1 wire form.
func (cl *cluster) request(ctx context.Context, a Addr, w http.ResponseWriter, req *http.Request) error {
	// The body is read once: the room may run here or on another node.
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	wire := req.Clone(ctx)
	wire.Body, wire.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	var dump bytes.Buffer
	if err := wire.Write(&dump); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	rec := httptest.NewRecorder()
	m := &linkMsg{typ: tAsk, kind: askRequest, addr: a, data: dump.Bytes()}
	ans, err := cl.call(ctx, a, func() event { return event{kind: evRequest, rec: rec, req: req} }, m)
	if err != nil {
		return err
	}
	if ans != nil { // answered by another node
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(ans.data)), req)
		if err != nil {
			return fmt.Errorf("rooms: response from the room's node: %w", err)
		}
		copyResponse(w, resp)
		return nil
	}
	copyResponse(w, rec.Result())
	return nil
}

// leave ends this node's part in the cluster once its rooms have drained:
// their leases are released so other nodes take the rooms at once, not
// after the TTL, and the node leaves the registry.
func (cl *cluster) leave(held []*instance) {
	var kept []*instance
	for _, in := range held {
		if !in.lost.Load() {
			kept = append(kept, in)
		}
	}
	cl.releaseNow(kept)
	ctx, cancel := context.WithTimeout(context.Background(), cl.ttl)
	defer cancel()
	cl.coord.Leave(ctx, cl.self)
	cl.mu.Lock()
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
}
