package rooms

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/hibernation"
	"github.com/roomgate/roomgate/storage"
)

// Alarm retries: 6 tries in all, the first retry 2 s after the failure,
// doubling after each (DESIGN §1).
const (
	alarmTries   = 6
	alarmBackoff = 2 * time.Second
)

// Options configure a Runtime. A zero field means its default.
type Options struct {
	Store           storage.Store         // required
	Metrics         prometheus.Registerer // required
	Logger          *slog.Logger          // default: discards
	NodeID          string                // this node's id, in the admin API; default "local"
	Address         string                // this node's host:port, in the admin API
	HibernateAfter  time.Duration         // a room with no event for this long leaves memory, its sockets stay open; default 10s
	MaxActiveRooms  int                   // rooms in memory past which the least recently used idle ones are evicted; default 0: no cap
	MaxQueuedEvents int                   // per room; past it a socket's message closes it with 1008; default 10000
	CommitTimeout   time.Duration         // for one commit; default 10s
	AlarmRetryBase  time.Duration         // first retry of a failed OnAlarm, doubling after; default 2s
	StartupWakes    int                   // rooms running at once while a restart wakes those whose sockets died with the last run; default 1024
	Clock           func() time.Time      // the time eviction judges idleness by; default time.Now. Tests move it ahead

	// Cluster mode, when Coordinator is set: each room runs on the node
	// holding its lease, events from other edges reach it over links to
	// the other nodes, and Address is where they dial this node.
	Coordinator   storage.Coordinator
	LeaseTTL      time.Duration // default 5s
	ClusterSecret string        // when set, links must present it
}

func (o *Options) init() error {
	if o.Store == nil {
		return errors.New("rooms: Options.Store is required")
	}
	if o.Metrics == nil {
		return errors.New("rooms: Options.Metrics is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.NodeID == "" {
		o.NodeID = "local"
	}
	if o.HibernateAfter == 0 {
		o.HibernateAfter = 10 * time.Second
	}
	if o.MaxQueuedEvents == 0 {
		o.MaxQueuedEvents = 10000
	}
	if o.CommitTimeout == 0 {
		o.CommitTimeout = 10 * time.Second
	}
	if o.StartupWakes == 0 {
		o.StartupWakes = 1024
	}
	if o.AlarmRetryBase == 0 {
		o.AlarmRetryBase = alarmBackoff
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 5 * time.Second
	}
	if o.Coordinator != nil && o.Address == "" {
		return errors.New("rooms: cluster mode needs Options.Address, where other nodes reach this one")
	}
	if o.HibernateAfter < 0 || o.LeaseTTL < 0 || o.MaxActiveRooms < 0 || o.MaxQueuedEvents < 0 || o.CommitTimeout < 0 || o.AlarmRetryBase < 0 || o.StartupWakes < 0 {
		return errors.New("rooms: negative option")
	}
	return nil
}

// Runtime runs rooms: it routes each socket's events to its room's
// instance, starting instances on demand, and serves the admin API. It
// implements Router and Admin and is safe for concurrent use; Register
// every class before the first socket arrives.
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
	shards [64]shard
	nrooms atomic.Int64            // instances in memory
	nrun   atomic.Int64            // instances with a goroutine (roomgate_rooms_running)
	edge   atomic.Pointer[Sockets] // set by Attach
	nsocks atomic.Int64            // sockets accepted and not yet closed
	policy hibernation.Policy
	press  chan struct{} // nrooms passed MaxActiveRooms: sweep now

	cl *cluster // nil in embedded mode

	alarmMu   sync.Mutex
	alarmBusy map[storage.Room]bool // alarms handed to their room and not finished
	alarmWake chan struct{}
}

type shard struct {
	mu       sync.Mutex
	rooms    map[Addr]*instance
	owners   map[Addr]string // cluster mode: the node that holds the room's lease, as last seen
	fences   map[Addr]fence  // cluster mode: the newest owner token seen for the room's sockets here
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
		policy:    hibernation.Policy{After: o.HibernateAfter, MaxActive: o.MaxActiveRooms},
		press:     make(chan struct{}, 1),
	}
	rt.life, rt.stop = context.WithCancel(context.Background())
	for i := range rt.shards {
		rt.shards[i].rooms = make(map[Addr]*instance)
		rt.shards[i].owners = make(map[Addr]string)
		rt.shards[i].fences = make(map[Addr]fence)
	}
	if o.Coordinator != nil {
		rt.cl = newCluster(rt)
	}
	return rt, nil
}

// Register adds a class: newHandler makes the Handler of each room
// instance. It panics on an invalid or duplicate name, a programmer error.
func (rt *Runtime) Register(name string, newHandler func() Handler) {
	if !ValidClass(name) {
		panic(fmt.Sprintf("rooms: invalid class name %q", name))
	}
	if _, dup := rt.classes[name]; dup {
		panic(fmt.Sprintf("rooms: class %q registered twice", name))
	}
	rt.classes[name] = &class{name: name, new: newHandler}
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
	var bg sync.WaitGroup
	bg.Go(func() { rt.evictIdle(ctx) })
	if rt.cl != nil {
		// Leases are renewed until the very end of the drain: the rooms
		// still commit, and a commit needs an unexpired token.
		clusterCtx, stopCluster := context.WithCancel(context.Background())
		defer stopCluster()
		go rt.cl.run(clusterCtx)
	} else {
		// In a cluster, a room learns of lost sockets from the registry
		// and from the edges when it wakes (cluster.edgeLost, load).
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
	if rt.cl != nil {
		rt.cl.leave(held)
	}
	return nil
}

func (rt *Runtime) shard(a Addr) *shard {
	var h maphash.Hash
	h.SetSeed(rt.seed)
	h.WriteString(a.Class)
	h.WriteByte(0)
	h.WriteString(a.Room)
	return &rt.shards[h.Sum64()%uint64(len(rt.shards))]
}

// send queues ev for room a, starting its instance if needed. In cluster
// mode it reaches only a room running here (errNotHere otherwise); the
// Router and Admin methods place rooms first.
func (rt *Runtime) send(a Addr, ev event, bounded bool) error {
	return rt.sendWith(a, ev, bounded, nil)
}

// sendWith is send; in cluster mode lease, when not nil, is the room's
// lease just taken, with which a new instance starts.
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
		if rt.cl != nil && lease == nil {
			return errNotHere
		}
		in = newInstance(rt, a, cls)
		if lease != nil {
			in.lease = lease.Lease
			in.leaseUntil.Store(rt.cl.deadline(lease.start))
			delete(sh.owners, a)
			rt.m.leases.Inc()
		}
		sh.rooms[a] = in
		rt.m.rooms.WithLabelValues("active").Inc()
		rt.m.wakes.Inc()
		if ev.kind == evWake {
			// A room the start-up scan found with members: count it as
			// hibernated until its load, which uncounts it, as for a
			// room this run evicted.
			rt.m.rooms.WithLabelValues("hibernated").Inc()
		}
		if rt.policy.Excess(int(rt.nrooms.Add(1))) > 0 {
			select {
			case rt.press <- struct{}{}:
			default:
			}
		}
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
	var err error
	if rt.cl != nil {
		err = rt.cl.connect(ctx, a, s, info)
	} else {
		err = rt.ask(ctx, a, event{kind: evConnect, sock: s, info: info})
	}
	if err == nil {
		rt.nsocks.Add(1)
	}
	return err
}

// Attach implements Router: rooms that wake find their members' sockets
// through s.
func (rt *Runtime) Attach(s Sockets) { rt.edge.Store(&s) }

// Message implements Router. It queues a copy of f and returns without
// waiting for the room; a room with too many queued events refuses it with
// ErrOverloaded.
func (rt *Runtime) Message(ctx context.Context, a Addr, s Socket, f Frame) error {
	if rt.cl != nil {
		return rt.cl.message(a, s, f)
	}
	f.Data = append([]byte(nil), f.Data...)
	return rt.send(a, event{kind: evMessage, id: s.ID(), frame: f}, true)
}

// Closed implements Router.
func (rt *Runtime) Closed(a Addr, s Socket, code int, reason string) {
	rt.nsocks.Add(-1)
	if rt.cl != nil {
		if err := rt.cl.closed(a, s.ID(), code, reason); err != nil {
			go rt.cl.closedLater(a, s.ID(), code, reason)
		}
		return
	}
	if err := rt.send(a, event{kind: evClose, id: s.ID(), code: code, reason: reason}, false); err != nil {
		rt.log.Warn("socket close not delivered", "room", a.String(), "err", err)
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
		if rt.cl != nil {
			rt.m.leases.Dec()
		}
	}
}

// evictIdle evicts parked rooms that stayed idle for HibernateAfter, and,
// when more rooms than MaxActiveRooms are in memory, the least recently
// used parked ones, until ctx ends.
func (rt *Runtime) evictIdle(ctx context.Context) {
	t := time.NewTicker(min(max(rt.o.HibernateAfter/4, 10*time.Millisecond), time.Second))
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-rt.press:
			// While too few rooms are parked to bring the count under the
			// cap, every new room signals; one sweep per 100 ms is enough.
			if time.Since(last) < 100*time.Millisecond {
				continue
			}
		}
		last = time.Now()
		for rt.sweep(rt.o.Clock()) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond) // let the saves just sent commit
		}
	}
}

// sweep evicts what the policy says. Only a parked instance can go: it has
// no goroutine, nothing queued and nothing uncommitted. One whose
// membership records are not saved yet is sent evSave first, and goes on a
// later sweep; at most maxSavesPerSweep a sweep, so a node where many rooms
// fall idle together does not start a goroutine for each at once (each
// parks again once its save is committed). It reports whether it held
// saves back, so the caller sweeps again soon. Dropping
// an instance loses only the handler's fields: its sockets stay open and
// keep their room address, and the next event for the room builds a new
// instance that loads them.
func (rt *Runtime) sweep(now time.Time) (more bool) {
	var idle []hibernation.Candidate[*instance]
	var save []Addr
	var evicted []*instance
	defer func() {
		if rt.cl != nil {
			rt.cl.release(evicted...)
		}
	}()
	excess := rt.policy.Excess(int(rt.nrooms.Load()))
	for i := range rt.shards {
		sh := &rt.shards[i]
		sh.mu.Lock()
		for _, in := range sh.rooms {
			switch {
			case !in.parked:
			case in.hasUnsaved():
				if excess > 0 || rt.policy.Idle(in.active, now) {
					if more = len(save) == maxSavesPerSweep; !more {
						save = append(save, in.addr)
					}
				}
			case rt.policy.Idle(in.active, now):
				rt.evict(sh, in, "idle")
				evicted = append(evicted, in)
			case excess > 0:
				idle = append(idle, hibernation.Candidate[*instance]{Room: in, LastActive: in.active.UnixNano()})
			}
		}
		sh.mu.Unlock()
	}
	for _, a := range save {
		rt.send(a, event{kind: evSave}, false) // only fails while draining, which saves anyway
	}
	excess = rt.policy.Excess(int(rt.nrooms.Load()))
	if excess == 0 {
		return more
	}
	for _, c := range hibernation.LeastRecent(idle, excess) {
		sh := rt.shard(c.Room.addr)
		sh.mu.Lock()
		// Parked since the pass above, but it may have woken, taken a
		// socket and parked again meanwhile: its records come first.
		if c.Room.parked && sh.rooms[c.Room.addr] == c.Room && !c.Room.hasUnsaved() {
			rt.evict(sh, c.Room, "pressure")
			evicted = append(evicted, c.Room)
		}
		sh.mu.Unlock()
	}
	return more
}

// maxSavesPerSweep bounds the rooms a sweep wakes to save their records.
const maxSavesPerSweep = 1024

// evict drops a parked instance; the caller holds sh.mu, and in a cluster
// releases its lease afterwards (with the sweep's others), so the room
// wakes wherever its next event starts.
func (rt *Runtime) evict(sh *shard, in *instance, reason string) {
	rt.remove(sh, in)
	rt.m.evictions.WithLabelValues(reason).Inc()
	if in.nconns.Load() > 0 {
		rt.m.rooms.WithLabelValues("hibernated").Inc()
	}
}

// closeLostMembers wakes, once at start, every room with persisted members:
// this node has just started, so those of its sockets are gone, and each
// room must hear of them (OnClose with 1006) instead of keeping them for
// good. The wake loads the members and closes those that are lost. At most
// StartupWakes rooms run at once: a node that stopped with 100,000 such
// rooms would otherwise start 100,000 goroutines and their commits in one
// burst; paced, it wakes about that many a second (a room parks a second
// after its last event).
func (rt *Runtime) closeLostMembers(ctx context.Context) {
	var after storage.Room
	for ctx.Err() == nil {
		page, err := rt.store.Rooms(ctx, "", "", after, 500)
		if err != nil {
			if ctx.Err() == nil {
				rt.log.Warn("list rooms to close lost sockets", "err", err)
			}
			return
		}
		for _, st := range page {
			after = st.Room
			a := Addr{Class: st.Room.Class, Room: st.Room.Name}
			if st.Members == 0 || !rt.HasClass(a.Class) {
				continue
			}
			for rt.nrun.Load() >= int64(rt.o.StartupWakes) {
				select {
				case <-ctx.Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			if err := rt.send(a, event{kind: evWake}, false); err != nil {
				return // draining
			}
		}
		if len(page) < 500 {
			return
		}
	}
}

// fireAlarms hands due alarms to their rooms until ctx ends. It sleeps
// until the earliest alarm, or a second, or until a commit changes an alarm.
func (rt *Runtime) fireAlarms(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-rt.alarmWake:
		}
		wait := time.Second
		rt.alarmMu.Lock()
		busy := len(rt.alarmBusy)
		rt.alarmMu.Unlock()
		// Ask for enough that busy alarms (running, retrying, or of a class
		// no longer registered) cannot hide the others.
		due, err := rt.store.DueAlarms(ctx, time.Now(), 256+busy)
		if err != nil && ctx.Err() == nil {
			rt.log.Warn("read due alarms", "err", err)
		}
		for _, d := range due {
			rt.alarmMu.Lock()
			busy := rt.alarmBusy[d.Room]
			rt.alarmBusy[d.Room] = true
			rt.alarmMu.Unlock()
			if busy {
				continue
			}
			a := Addr{Class: d.Room.Class, Room: d.Room.Name}
			ev := event{kind: evAlarm, alarm: AlarmInfo{Scheduled: d.At}}
			var err error
			if rt.cl != nil {
				// Every node polls the one index; an alarm runs where its
				// room does, or here if the room has no owner: the owner
				// died, and its alarms are taken over. One its owner runs
				// is not this node's to count as busy.
				var remote string
				if remote, err = rt.cl.here(ctx, a, ev, false, false); remote != "" {
					rt.alarmFinishedQuietly(d.Room, true)
					continue
				}
			} else {
				err = rt.send(a, ev, false)
			}
			if err != nil {
				if errors.Is(err, ErrUnknownClass) {
					continue // stays busy: no code can ever run it, and it must not hide the others
				}
				rt.log.Warn("alarm not delivered", "room", a.String(), "err", err)
				rt.alarmFinishedQuietly(d.Room, rt.cl != nil) // a cluster retries on its next pass
			}
		}
		// An alarm due now is either handed out above or busy; a busy one's
		// end wakes this loop (alarmFinished). So only a future alarm
		// shortens the sleep, and a busy alarm never makes the loop spin.
		if next, ok, err := rt.store.NextAlarm(ctx); err == nil && ok && next.After(time.Now()) {
			wait = min(wait, time.Until(next))
		}
		t.Reset(wait)
	}
}

func (rt *Runtime) alarmFinished(r storage.Room) { rt.alarmFinishedQuietly(r, false) }

// alarmFinishedQuietly frees r's alarm for the scheduler, waking it unless
// quiet: after a failed commit the next regular pass is soon enough.
func (rt *Runtime) alarmFinishedQuietly(r storage.Room, quiet bool) {
	rt.alarmMu.Lock()
	delete(rt.alarmBusy, r)
	rt.alarmMu.Unlock()
	if !quiet {
		rt.alarmChanged()
	}
}

func (rt *Runtime) alarmChanged() {
	select {
	case rt.alarmWake <- struct{}{}:
	default:
	}
}

// Admin API.

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
	ri := RoomInfo{Class: a.Class, Room: a.Room, State: "stored", Owner: rt.o.NodeID}
	if rt.cl != nil && in == nil {
		ri.Owner = ""
		if owner.Node != "" {
			// Running on another node: its connections are those persisted.
			ri.Owner, ri.State = owner.Node, "active"
			ri.Connections = st.Members
		}
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
	if rt.cl != nil && in == nil {
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
	// In a cluster, the owners of the rooms not running here, in one round
	// trip; a lease that cannot be read shows as no owner.
	owners := map[Addr]storage.Lease{}
	if rt.cl != nil {
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
	if rt.cl != nil {
		_, err := rt.cl.call(ctx, a, func() event { return event{kind: evDelete} }, &linkMsg{typ: tAsk, kind: askDelete, addr: a})
		return err
	}
	return rt.ask(ctx, a, event{kind: evDelete})
}

// Connections lists the room's sockets; a hibernated room's come from
// storage, and it stays asleep.
func (rt *Runtime) Connections(ctx context.Context, a Addr) ([]ConnInfo, error) {
	if rt.active(a) == nil {
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
	var out []ConnInfo
	err := rt.ask(ctx, a, event{kind: evInspect, inspect: func(in *instance) {
		out = make([]ConnInfo, 0, len(in.list))
		for _, c := range in.list {
			out = append(out, ConnInfo{ID: c.id.String(), User: c.user, Tags: append([]string{}, c.tags()...),
				Edge: c.edge, ConnectedAt: c.ConnectedAt().UTC()})
		}
	}})
	if err != nil {
		return nil, err // the room may still be filling out
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
	if rt.cl != nil {
		_, err := rt.cl.call(ctx, a, func() event { return event{kind: evKick, id: id} }, &linkMsg{typ: tAsk, kind: askKick, addr: a, sock: id})
		return err
	}
	return rt.ask(ctx, a, event{kind: evKick, id: id})
}

// Broadcast sends f to every socket of the room, or those tagged tag, in
// order with the room's own sends.
func (rt *Runtime) Broadcast(ctx context.Context, a Addr, tag string, f Frame) error {
	if rt.cl != nil {
		_, err := rt.cl.call(ctx, a, func() event { return event{kind: evBroadcast, tag: tag, frame: f} },
			&linkMsg{typ: tAsk, kind: askBroadcast, addr: a, text: tag, op: f.Op, data: f.Data})
		return err
	}
	return rt.ask(ctx, a, event{kind: evBroadcast, tag: tag, frame: f})
}

// Request hands req to the room's OnRequest and writes its response to w.
func (rt *Runtime) Request(ctx context.Context, a Addr, w http.ResponseWriter, req *http.Request) error {
	if rt.cl != nil {
		return rt.cl.request(ctx, a, w, req)
	}
	rec := httptest.NewRecorder()
	if err := rt.ask(ctx, a, event{kind: evRequest, rec: rec, req: req}); err != nil {
		return err
	}
	// Answered: the room is done with rec, and the write happens here, on
	// the HTTP goroutine, so a slow client never holds up the room.
	copyResponse(w, rec.Result())
	return nil
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
	kvs, err := rt.store.List(ctx, storage.Room{Class: a.Class, Name: a.Room}, storage.ListOptions{Prefix: prefix, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("rooms: storage of %s: %w", a, err)
	}
	return kvs, nil
}

// Nodes lists the nodes of the cluster; in embedded mode, this one.
func (rt *Runtime) Nodes(ctx context.Context) ([]NodeInfo, error) {
	if rt.cl != nil {
		list, err := rt.o.Coordinator.Nodes(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		out := make([]NodeInfo, 0, len(list))
		for _, n := range list {
			out = append(out, NodeInfo{ID: n.ID, Address: n.Address, Sockets: n.Sockets, ActiveRooms: n.ActiveRooms, StartedAt: n.StartedAt})
		}
		return out, nil
	}
	n := NodeInfo{ID: rt.o.NodeID, Address: rt.o.Address, StartedAt: rt.started.UTC(),
		Sockets: int(rt.nsocks.Load()), ActiveRooms: int(rt.nrooms.Load())}
	return []NodeInfo{n}, nil
}

// Ready reports whether the runtime can serve: its store answers and, in a
// cluster, the node registry lists this node.
func (rt *Runtime) Ready(ctx context.Context) error {
	if err := rt.store.Ping(ctx); err != nil {
		return err
	}
	if rt.cl != nil {
		return rt.cl.inRegistry()
	}
	return nil
}
