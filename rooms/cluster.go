// Cluster mode's state and its registry: the heartbeat, the node list,
// and leaving the cluster. Leases, links, forwarding and remote sockets
// are in the other cluster_*.go files.

package rooms

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/rooms/internal/linknet"
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
//
// # Lock order
//
// The comment on Runtime gives the order of every lock in package rooms.
// One rule here shipped once as a deadlock: nothing that takes cl.mu runs
// under link.mu or from a send made under cl.mu. A link that fails there
// is marked closed at once and its loss (linkLost, which takes cl.mu) is
// settled on a goroutine (TestDeliveryThatOverflowsALinkBreaksTheStream).
// The transport's own locks are leaves: it calls the cluster (Admit,
// Accept) holding none.
//
// # Goroutines
//
// Every goroutine the cluster starts runs through goOwned: the links'
// readers, writers, backlog dials and an overflowed link's loss, and the
// background work (closes retried, lease releases, probes, answers
// awaited, events queued behind a placement). leave waits for them all
// (closeLinks) after closing every link; none starts after that.
type cluster struct {
	rt          *Runtime
	coord       storage.Coordinator
	self        string
	address     string
	secret      string
	ttl         time.Duration
	incarnation uint64
	epoch       time.Time // lease deadlines are monotonic nanoseconds since epoch
	transport   linknet.Transport
	unlisten    func()             // stops the transport handing this node links
	life        context.Context    // ends when the node leaves: dials in the background give up
	endLife     context.CancelFunc // ends life

	mu         sync.Mutex
	left       bool                             // the node left the cluster: no link is taken or dialed
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
	// linked is set once any link has been up. Until then no other owner
	// can have sent to this node's sockets, and a room's own sends need
	// no fence check (release).
	linked atomic.Bool

	routes [shards]routeShard // spread like the runtime's shards

	placeMu sync.Mutex
	placing map[Addr]*placement // rooms whose lease this node is asking for
	queued  map[Addr][]func()   // events forwarded for a room being placed, in order
	nqueued atomic.Int32        // len(queued): while 0, forwarded events skip placeMu

	bgMu   sync.Mutex
	bgDone bool           // leave waits for bg: no goroutine starts
	bg     sync.WaitGroup // every goroutine the cluster starts (goOwned)

	fwdIn, fwdOut [linkTypes]prometheus.Counter
}

func newCluster(rt *Runtime) *cluster {
	cl := &cluster{rt: rt, coord: rt.o.Coordinator, self: rt.o.NodeID, address: rt.o.Address, secret: rt.o.ClusterSecret,
		ttl: rt.o.LeaseTTL, incarnation: rand.Uint64(), epoch: time.Now(), transport: rt.o.Transport,
		links: map[string]*link{}, dials: map[string]*dialCall{}, dialFailed: map[string]time.Time{}, backlog: map[string][]byte{}, gens: map[string]uint64{},
		incarnations: map[string]uint64{}, inbound: map[*link]struct{}{}, placing: map[Addr]*placement{}, queued: map[Addr][]func(){}}
	names := [linkTypes]string{tConnect: "connect", tMessage: "message", tClosed: "closed", tAsk: "ask", tDeliver: "deliver",
		tClose: "close", tAuto: "auto", tProbe: "probe", tAck: "ack", tReply: "reply", tPing: "ping"}
	for t := tConnect; t < linkTypes; t++ {
		cl.fwdIn[t] = rt.m.forwarded.WithLabelValues("in", names[t])
		cl.fwdOut[t] = rt.m.forwarded.WithLabelValues("out", names[t])
	}
	for i := range cl.routes {
		cl.routes[i].owners = make(map[Addr]string)
		cl.routes[i].fences = make(map[Addr]fence)
	}
	empty := map[string]storage.NodeRecord{}
	cl.nodes.Store(&empty)
	cl.publishLinks()
	cl.life, cl.endLife = context.WithCancel(context.Background())
	cl.unlisten = cl.transport.Listen(cl)
	return cl
}

// now is the monotonic clock lease deadlines are kept in.
func (cl *cluster) now() int64 { return int64(time.Since(cl.epoch)) }

// deadline is when a lease taken or renewed at start must be taken as
// lost: a tenth of the TTL early, for clock drift between here and Redis.
func (cl *cluster) deadline(start time.Time) int64 {
	return int64(start.Sub(cl.epoch) + cl.ttl - cl.ttl/10)
}

// LinkHandler serves the links of other nodes; mount it at LinkPath. With
// no shared Coordinator no other node is registered, and every link is
// refused.
func (rt *Runtime) LinkHandler() http.Handler { return linknet.Handler(rt.cl) }

// background runs f on a goroutine the cluster owns (a close retried, a
// lease release, a probe, an answer awaited, events queued for a
// placement), with a ctx that ends when the node leaves the cluster; leave
// waits for it. Once the node has left, f does not run: its rooms are
// gone, and the registry has told the other nodes.
func (cl *cluster) background(f func(ctx context.Context)) {
	cl.goOwned(func() { f(cl.life) })
}

// routeShard is what this node remembers of rooms that may run elsewhere.
// Its lock is taken alone, or inside a runtime shard's.
type routeShard struct {
	mu     sync.Mutex
	owners map[Addr]string // the node that holds the room's lease, as last seen
	fences map[Addr]fence  // the newest owner token seen for the room's sockets here
}

func (cl *cluster) route(a Addr) *routeShard { return &cl.routes[cl.rt.shardOf(a)] }

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
			for i := range cl.routes {
				r := &cl.routes[i]
				r.mu.Lock()
				clear(r.owners)
				for a, f := range r.fences {
					if f.seen < stale {
						delete(r.fences, a)
					}
				}
				r.mu.Unlock()
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
	cl.closeLinks()
}
