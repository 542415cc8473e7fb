// The Runtime: classes, routing an event to its room's instance, and Run.

package rooms

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomgate/roomgate/hibernation"
	"github.com/roomgate/roomgate/storage"
)

// Runtime runs rooms: it routes each socket's events to its room's
// instance, starting instances on demand, and serves the admin API. It
// implements Router and Admin and is safe for concurrent use; Register
// every class before the first socket arrives.
//
// # Lock order
//
// The locks of package rooms nest one way only, outermost first:
//
//	cluster.hbMu, cluster.placeMu  →  shard.mu  →  instance.mu, routeShard.mu
//	cluster.mu  →  link.mu
//
// hbMu is held while a departed node's rooms are told (tellRooms takes
// each shard's lock, then sendWith pushes under it); placeMu while
// inOrder checks whether the room runs here; a shard's lock while an
// event is pushed (instance.mu) and a new instance forgets the room's
// cached owner (routeShard.mu). cluster.mu is held while deliver,
// sendLocked and register hand a frame to a link (link.mu); cluster.mu and
// a shard's lock are never held together (linkLost and tellRooms take
// them one after the other). alarmMu, cluster.bgMu, instance.mu,
// routeShard.mu and link.mu are leaves. A room's own state has no lock: only its goroutine
// touches it. The gateway's Socket methods may be called with any of
// these held (gateway/doc.go continues the order).
type Runtime struct {
	o       Options
	store   storage.Store
	log     *slog.Logger
	m       *metrics
	classes map[string]*class
	started time.Time

	life   context.Context // instances run under it; Run's drain cancels it
	stop   context.CancelFunc
	wg     sync.WaitGroup // one per running instance
	seed   maphash.Seed
	shards [shards]shard
	nrooms atomic.Int64            // instances in memory
	nrun   atomic.Int64            // instances with a goroutine (roomgate_rooms_running)
	edge   atomic.Pointer[Sockets] // set by Attach
	nsocks atomic.Int64            // sockets accepted and not yet closed

	sweeper *hibernation.Sweeper[*instance] // evicts idle rooms; rooms enter memory only in sendWith, which tells it

	cl *cluster // placement, leases and links: the same code with one node or many

	alarmMu   sync.Mutex
	alarmBusy map[storage.Room]bool // alarms handed to their room and not finished
	alarmWake chan struct{}
}

// shards is how many locks the rooms in memory are spread over.
const shards = 64

type shard struct {
	mu       sync.Mutex
	rooms    map[Addr]*instance
	draining bool
}

// New builds a Runtime with no classes. It starts nothing: instances start
// as events arrive, and Run fires alarms and drains.
func New(o Options) (*Runtime, error) {
	if err := o.init(); err != nil {
		return nil, err
	}
	m, err := newMetrics(o.Metrics)
	if err != nil {
		return nil, err
	}
	rt := &Runtime{
		o:         o,
		store:     o.Store,
		log:       o.Logger,
		m:         m,
		classes:   make(map[string]*class),
		started:   time.Now(),
		seed:      maphash.MakeSeed(),
		alarmBusy: make(map[storage.Room]bool),
		alarmWake: make(chan struct{}, 1),
	}
	rt.sweeper = hibernation.NewSweeper[*instance](sweepRooms{rt}, hibernation.Options{
		Policy:       hibernation.Policy{After: o.HibernateAfter, MaxActive: o.MaxActiveRooms},
		Store:        o.Store,
		StartupWakes: o.StartupWakes,
		Clock:        o.Clock,
	})
	rt.life, rt.stop = context.WithCancel(context.Background())
	for i := range rt.shards {
		rt.shards[i].rooms = make(map[Addr]*instance)
	}
	rt.cl = newCluster(rt)
	return rt, nil
}

// Register adds a class: newHandler makes the Handler of each room
// instance. It panics on a programmer error: an invalid or duplicate name,
// a Handler with an On… method the runtime would never call (a name or
// a signature that matches none of the handler interfaces), or RPC
// methods (RPCHandler) with an invalid or duplicate name, which Register
// calls newHandler once to find.
func (rt *Runtime) Register(name string, newHandler func() Handler) {
	if !ValidClass(name) {
		panic(fmt.Sprintf("rooms: invalid class name %q", name))
	}
	if _, dup := rt.classes[name]; dup {
		panic(fmt.Sprintf("rooms: class %q registered twice", name))
	}
	h := newHandler()
	if err := checkHandler(h); err != nil {
		panic(fmt.Sprintf("rooms: class %q: %v", name, err))
	}
	methods, err := classMethods(h)
	if err != nil {
		panic(fmt.Sprintf("rooms: class %q: %v", name, err))
	}
	rt.classes[name] = &class{name: name, new: newHandler, methods: methods}
}

// Classes returns the registered class names in order.
func (rt *Runtime) Classes() []string {
	names := make([]string, 0, len(rt.classes))
	for n := range rt.classes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Run fires alarms and evicts idle rooms until ctx ends, then drains: every
// instance runs what it has queued and commits its writes, and Run returns
// when all have stopped. Stop the gateway first, so the sockets' last
// events are already queued.
func (rt *Runtime) Run(ctx context.Context) error {
	var bg, clusterLoop sync.WaitGroup
	// Leases are renewed until the very end of the drain: the rooms still
	// commit, and a commit needs an unexpired token.
	clusterCtx, stopCluster := context.WithCancel(context.Background())
	defer func() {
		stopCluster()
		clusterLoop.Wait()
	}()
	clusterLoop.Go(func() { rt.cl.run(clusterCtx) })
	bg.Go(func() { rt.sweeper.Run(ctx) })
	if rt.o.WakeLostOnStart {
		bg.Go(func() { rt.closeLostMembers(ctx) })
	}
	rt.fireAlarms(ctx)
	bg.Wait()
	// Once draining, no instance is created, so this list is every room
	// this node runs: running ones leave the map as they finish, and in a
	// cluster all their leases are released at the end.
	var held []*instance
	for i := range rt.shards {
		sh := &rt.shards[i]
		sh.mu.Lock()
		sh.draining = true
		for _, in := range sh.rooms {
			held = append(held, in)
			if in.parked && in.hasUnsaved() {
				// Records are saved only before an eviction, and a room
				// parks long before that: started again, its drain saves
				// them, or the next run would hear sockets that left
				// close again and miss those that joined.
				in.parked = false
				rt.wg.Add(1)
				rt.nrun.Add(1)
				go in.run(rt.life)
			}
		}
		sh.mu.Unlock()
	}
	rt.stop()
	rt.wg.Wait()
	// Parked rooms hold nothing uncommitted or unsaved now; drop them so a
	// late event finds no instance and gets ErrDraining instead of a queue
	// nobody reads.
	for i := range rt.shards {
		sh := &rt.shards[i]
		sh.mu.Lock()
		for _, in := range sh.rooms {
			rt.remove(sh, in)
		}
		sh.mu.Unlock()
	}
	// The cluster loop stops before the node leaves the registry: a
	// heartbeat under way would write it back, alive for another TTL.
	stopCluster()
	clusterLoop.Wait()
	rt.cl.leave(held)
	return nil
}

func (rt *Runtime) shard(a Addr) *shard { return &rt.shards[rt.shardOf(a)] }

// shardOf spreads rooms over the runtime's shards, and the cluster's.
func (rt *Runtime) shardOf(a Addr) int {
	var h maphash.Hash
	h.SetSeed(rt.seed)
	h.WriteString(a.Class)
	h.WriteByte(0)
	h.WriteString(a.Room)
	return int(h.Sum64() % shards)
}

// send queues ev for room a if it runs here (errNotHere otherwise); the
// Router and Admin methods place rooms first.
func (rt *Runtime) send(a Addr, ev event, bounded bool) error {
	return rt.sendWith(a, ev, bounded, nil)
}

// sendWith is send; lease, when not nil, is the room's lease just taken,
// with which a new instance starts.
func (rt *Runtime) sendWith(a Addr, ev event, bounded bool, lease *heldLease) error {
	cls := rt.classes[a.Class]
	if cls == nil {
		return ErrUnknownClass
	}
	sh := rt.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	in := sh.rooms[a]
	switch {
	case in == nil:
		if sh.draining {
			return ErrDraining
		}
		if lease == nil {
			return errNotHere
		}
		in = newInstance(rt, a, cls)
		in.lease = lease.Lease
		in.leaseUntil.Store(rt.cl.deadline(lease.start))
		rt.cl.forgetOwner(a, "")
		rt.m.leases.Inc()
		sh.rooms[a] = in
		rt.m.rooms.WithLabelValues("active").Inc()
		rt.m.wakes.Inc()
		if ev.kind == evWake {
			// A room the start-up scan found with members: count it as
			// hibernated until its load, which uncounts it, as for a
			// room this run evicted.
			rt.m.rooms.WithLabelValues("hibernated").Inc()
		}
		rt.sweeper.Added(int(rt.nrooms.Add(1)))
		rt.wg.Add(1)
		rt.nrun.Add(1) // counted from here, so a burst of wakes sees itself
		go in.run(rt.life)
	case in.parked:
		if sh.draining {
			return ErrDraining // a parked room has nothing to commit
		}
		in.parked = false
		rt.wg.Add(1)
		rt.nrun.Add(1) // counted from here, so a burst of wakes sees itself
		go in.run(rt.life)
	}
	err := in.push(ev, bounded)
	if errors.Is(err, ErrOverloaded) {
		rt.m.overloaded.Inc()
	}
	return err
}

// ask sends ev and waits for its answer.
func (rt *Runtime) ask(ctx context.Context, a Addr, ev event) error {
	ev.reply = make(chan error, 1)
	if err := rt.send(a, ev, false); err != nil {
		return err
	}
	select {
	case err := <-ev.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (rt *Runtime) active(a Addr) *instance {
	sh := rt.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.rooms[a]
}

// commit hands b to the store and returns; done gets the store's answer.
// The room waits for it in its own loop: no goroutine per commit, and the
// store's flusher wakes the room directly.
func (rt *Runtime) commit(ctx context.Context, r storage.Room, b *storage.Batch, done func(error)) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rt.o.CommitTimeout)
	start := time.Now()
	rt.store.Commit(ctx, r, b, func(err error) {
		cancel()
		rt.m.commitSeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			rt.m.failures.WithLabelValues("commit").Inc()
		}
		done(err)
	})
}

// HasClass implements Router.
func (rt *Runtime) HasClass(class string) bool { return rt.classes[class] != nil }

// Connect implements Router: the room's OnConnect accepts or refuses s.
func (rt *Runtime) Connect(ctx context.Context, a Addr, s Socket, info ConnectInfo) error {
	err := rt.cl.connect(ctx, a, s, info)
	if err == nil {
		rt.nsocks.Add(1)
	}
	return err
}

// Attach implements Router: rooms that wake find their members' sockets
// through s.
func (rt *Runtime) Attach(s Sockets) { rt.edge.Store(&s) }

// Message implements Router. It queues a copy of f.Data and returns without
// waiting for the room; a room with too many queued events refuses it with
// ErrOverloaded.
func (rt *Runtime) Message(ctx context.Context, a Addr, s Socket, f Frame) error {
	return rt.cl.message(a, s, f)
}

// Closed implements Router.
func (rt *Runtime) Closed(a Addr, s Socket, code int, reason string) {
	rt.nsocks.Add(-1)
	switch err := rt.cl.closed(a, s.ID(), code, reason); {
	case err == nil:
	case errors.Is(err, ErrDraining) && !errors.Is(err, errMoved):
		// This node is stopping and the room does not run here: retrying
		// cannot help, and in a cluster the registry tells its owner.
		rt.log.Warn("socket close not delivered", "room", a.String(), "err", err)
	default:
		rt.cl.closeLater(a, s.ID(), code, reason)
	}
}

// lookup returns the open socket with id, or nil.
func (rt *Runtime) lookup(id SocketID) Socket {
	if edge := rt.edge.Load(); edge != nil {
		return (*edge).Socket(id)
	}
	return nil
}

// holds reports whether in still runs its room here.
func (rt *Runtime) holds(in *instance) bool {
	sh := rt.shard(in.addr)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.rooms[in.addr] == in
}

// remove takes in out of its shard's map; the caller holds sh.mu.
func (rt *Runtime) remove(sh *shard, in *instance) {
	if sh.rooms[in.addr] == in {
		delete(sh.rooms, in.addr)
		rt.nrooms.Add(-1)
		rt.m.rooms.WithLabelValues("active").Dec()
		rt.m.leases.Dec()
	}
}

// Admin API.
