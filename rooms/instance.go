// A room in memory: its mailbox, its run loop, parking and draining.

package rooms

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomgate/roomgate/hibernation"
	"github.com/roomgate/roomgate/storage"
)

type eventKind uint8

const (
	evConnect eventKind = iota
	evMessage
	evClose
	evAlarm
	evRequest
	evRPC
	evBroadcast
	evKick
	evDelete
	evInspect
	evWake     // loads the room's members and closes those whose sockets are gone
	evSave     // saves the membership records before an eviction
	evEdgeLost // cluster: the node named in reason is gone, and its sockets with it
	evEdgeGap  // cluster: frames for the node named in reason may have been lost
	evProbed   // cluster: the node named in reason no longer holds the sockets in gone
)

// event is one entry of a room's mailbox.
type event struct {
	kind    eventKind
	sock    Socket
	info    ConnectInfo
	id      SocketID
	frame   Frame
	code    int
	reason  string
	tag     string
	alarm   AlarmInfo
	rec     *httptest.ResponseRecorder // evRequest: the handler's response, read by the asker once answered
	req     *http.Request
	call    *rpcCall // evRPC
	inspect func(*instance)
	reply   reply
	done    func(error) // a forwarded message or close: runs once, when its outputs leave or it fails
	gone    []SocketID  // evProbed
}

// reply carries an event's answer to whoever waits for it; nil when nobody does.
type reply chan error

func (r reply) answer(err error) {
	if r != nil {
		r <- err
	}
}

// output is something an event sends. It is held until the writes of its
// event, and of every event before it, are committed (the output gate).
type output struct {
	to     []*Conn
	frame  Frame
	close  bool
	code   int
	reason string
	done   func(err error) // runs when released (nil) or dropped
	join   *Conn           // a socket let in only once this output is released (cluster connects)
}

// instance is a room in memory: an actor with one goroutine, the only one
// that touches its fields below the mailbox. Events run one at a time, in
// arrival order; their writes are committed in the background, one commit
// in flight at a time, and the next events run meanwhile. Their outputs
// wait for the commit that covers them.
type instance struct {
	rt   *Runtime
	addr Addr
	room storage.Room
	cls  *class

	mu     sync.Mutex // guards queue and queued
	queue  []event
	queued *mailboxCounts // messages per socket in queue, counted only while the mailbox is full; nil otherwise
	parked bool           // no goroutine runs the instance; guarded by its shard's lock
	signal chan struct{}
	born   time.Time // when the instance was built; zero once it served its first event

	nconns atomic.Int32 // len(conns), for the admin API

	// Cluster mode: the room's lease. The token is fixed for the
	// instance's life; the deadline moves with each renewal.
	lease      storage.Lease
	leaseUntil atomic.Int64 // cluster.now() past which the lease may have expired
	lost       atomic.Bool  // the lease is gone: the instance takes no more events

	// Owned by the room's goroutine.
	h         Handler
	rpcs      []RPCMethod // h's methods, once a call asked (nil: not yet)
	started   bool
	loaded    bool // the room's members were read from storage
	auto      *AutoResponse
	dirty     []*Conn                    // sockets whose membership record the current event changed
	dirtyWas  []*connExtra               // their tags and attachment before it, restored if it fails
	unsaved   hibernation.Unsaved[*Conn] // sockets whose record changed since the last save (recUnsaved); some may have left since
	left      []SocketID                 // sockets gone since the last save whose record is stored
	r         Room
	conns     map[SocketID]*Conn
	list      []*Conn
	nremote   int // sockets in list held by other nodes: while 0, sends skip the cluster's delivery
	inEvent   bool
	cur       *writeSet
	curOut    []output
	scratch   writeSet // reused as cur: most events write little or nothing
	curConn   *Conn    // the socket OnConnect is deciding on
	pending   writeSet
	penEvents int // events whose writes are in pending
	inEvents  int // events whose writes are in flight
	penOut    []output
	penFrom   []*Conn              // sockets whose messages made the pending events
	penExtra  map[*Conn]*connExtra // tags and attachments before the pending events changed them, restored if their commit fails
	inflight  *writeSet
	inBatch   *storage.Batch // the commit in flight, whose Bytes the store sets
	size      int64          // the room's committed keys and values, in bytes, when sized
	sized     bool           // size is known: read once (Stat) or reported by the last commit
	inOut     []output
	inFrom    []*Conn
	inExtra   map[*Conn]*connExtra
	edgeGen   map[string]uint64 // cluster: the stream generation of the room's last frame to each node (deliverTo)
	done      chan error        // the commit in flight finished
	onCommit  func(error)       // commitDone, made once: a method value allocates
	alarm     alarmState
	schedFree bool // the room has no schedules, committed or pending: its own alarm is the store's
	schedGen  int  // counts Schedule and CancelSchedule calls
	active    time.Time
}

type alarmState struct {
	busy  bool // an alarm event is queued, running or waiting for a retry
	retry *time.Timer
}

func newInstance(rt *Runtime, a Addr, cls *class) *instance {
	in := &instance{
		rt:     rt,
		addr:   a,
		room:   storage.Room{Class: a.Class, Name: a.Room},
		cls:    cls,
		signal: make(chan struct{}, 1),
		conns:  make(map[SocketID]*Conn),
		done:   make(chan error, 1),
		born:   time.Now(),
	}
	in.r = Room{inst: in, storage: Storage{inst: in}, alarm: Alarm{inst: in}}
	in.onCommit = in.commitDone
	return in
}

// push queues ev. A bounded event (a client's message) finds the mailbox
// full only when the room cannot keep up, and then the socket with the
// most messages queued is refused: its queued messages are dropped and it
// is closed with 1008, so one client flooding a room cannot get everyone
// else closed as they happen to send next. When that socket is ev's own
// (or ties with it), push returns ErrOverloaded and the caller closes it.
//
// An RPC call finds the mailbox full the same way, and is refused with
// ErrOverloaded: its caller waits, and can try again.
func (in *instance) push(ev event, bounded bool) error {
	in.mu.Lock()
	if ev.kind == evRPC && len(in.queue) >= in.rt.o.MaxQueuedEvents {
		in.mu.Unlock()
		return fmt.Errorf("%w: %s has %d events queued", ErrOverloaded, in.addr, in.rt.o.MaxQueuedEvents)
	}
	var shed []event
	if bounded && len(in.queue) >= in.rt.o.MaxQueuedEvents {
		if in.queued == nil {
			in.queued = countMessages(in.queue)
		}
		victim := in.queued.busiest(ev.id)
		in.queue, shed = in.queued.drop(in.queue, victim)
		if victim == ev.id {
			in.mu.Unlock()
			in.shed(shed)
			return ErrOverloaded
		}
	}
	in.queue = append(in.queue, ev)
	if in.queued != nil && ev.kind == evMessage {
		in.queued.add(ev.id)
	}
	in.mu.Unlock()
	in.shed(shed)
	select {
	case in.signal <- struct{}{}:
	default:
	}
	return nil
}

// shed refuses the messages push dropped, all of one socket's, once
// instance.mu is released: a socket of this node is closed here; for one
// on another node, each message's done tells its edge, which closes it.
func (in *instance) shed(dropped []event) {
	if len(dropped) == 0 {
		return
	}
	in.rt.m.overloaded.Add(float64(len(dropped)))
	code, reason := closeCodeOf(ErrOverloaded)
	closed := false
	for i := range dropped {
		switch ev := &dropped[i]; {
		case ev.done != nil:
			ev.done(ErrOverloaded)
		case !closed:
			closed = true
			if s := in.rt.lookup(ev.id); s != nil {
				s.Close(code, reason)
			}
		}
	}
}

func (in *instance) take(buf []event) []event {
	in.mu.Lock()
	buf = append(buf[:0], in.queue...)
	clear(in.queue)
	in.queue = in.queue[:0]
	if cap(in.queue) > 1024 {
		in.queue = nil // do not keep a burst's array for good
	}
	in.queued = nil // the mailbox is empty: nobody is busiest
	in.mu.Unlock()
	return buf
}

// mailboxCounts counts each socket's messages in a full mailbox. It is
// built in one pass over the mailbox the first time a message finds it
// full, kept up to date while more arrive, and dropped when the room takes
// its events: a room that keeps up, and its idle sockets, never pay for it.
type mailboxCounts struct {
	n    map[SocketID]int
	top  SocketID // the socket with the most messages, while topN >= 0
	topN int      // -1: unknown since top's messages were dropped
}

func countMessages(queue []event) *mailboxCounts {
	c := &mailboxCounts{n: make(map[SocketID]int)}
	for i := range queue {
		if queue[i].kind == evMessage {
			c.add(queue[i].id)
		}
	}
	return c
}

func (c *mailboxCounts) add(id SocketID) {
	c.n[id]++
	if n := c.n[id]; c.topN >= 0 && n > c.topN {
		c.top, c.topN = id, n
	}
}

// busiest returns the socket to refuse when sender's message finds the
// mailbox full: the one with the most messages queued, unless sender,
// counting the new one, has as many.
func (c *mailboxCounts) busiest(sender SocketID) SocketID {
	if c.topN < 0 {
		c.topN = 0
		for id, n := range c.n {
			if n > c.topN {
				c.top, c.topN = id, n
			}
		}
	}
	if c.topN == 0 || c.n[sender]+1 >= c.topN {
		return sender
	}
	return c.top
}

// drop takes id's messages out of queue, returning what is left and them.
func (c *mailboxCounts) drop(queue []event, id SocketID) (rest, dropped []event) {
	if c.n[id] == 0 {
		return queue, nil
	}
	rest = queue[:0]
	for _, ev := range queue {
		if ev.kind == evMessage && ev.id == id {
			dropped = append(dropped, ev)
		} else {
			rest = append(rest, ev)
		}
	}
	clear(queue[len(rest):])
	delete(c.n, id)
	if id == c.top {
		c.topN = -1
	}
	return rest, dropped
}

// backlogged reports whether the events waiting for commits reached the
// mailbox's bound.
func (in *instance) backlogged() bool {
	return in.penEvents+in.inEvents >= in.rt.o.MaxQueuedEvents
}

// parkAfter is how long a room keeps its goroutine without an event. A
// parked room stays in memory, its sockets and handler intact, and its
// goroutine starts again with the next event: an idle room costs no
// goroutine (DESIGN §2), and a restart costs about a microsecond. Only a
// parked room can be evicted (hibernation.Sweeper): it has nothing in flight.
const parkAfter = time.Second

func (in *instance) run(ctx context.Context) {
	defer in.rt.wg.Done()
	in.rt.m.running.Inc()
	defer func() {
		in.rt.m.running.Dec()
		in.rt.nrun.Add(-1) // added where the goroutine was started
	}()
	// in.active moves only with the events below: a restart for evSave
	// must not make an idle room look used.
	wait := min(parkAfter, in.rt.o.HibernateAfter)
	idle := time.NewTimer(wait)
	defer idle.Stop()
	var batch []event
	for {
		if cl := in.rt.cl; in.lost.Load() || cl.now() >= in.leaseUntil.Load() {
			// Another node may run the room now: take no more events.
			cl.lose(in)
			in.abandon()
			return
		}
		// While commits lag, events stop leaving the mailbox: its bound
		// (ErrOverloaded) then holds back the clients, instead of the
		// uncommitted writes and held sends growing without end.
		if !in.backlogged() {
			batch = in.take(batch)
			busy := false
			for i := range batch {
				in.handle(ctx, &batch[i])
				busy = busy || batch[i].kind != evSave
			}
			clear(batch)
			if busy { // a save is the runtime's, and must not put off the eviction it prepares
				in.active = time.Now()
			}
			if cap(batch) > 1024 {
				batch = nil // a burst's array would stay with a parked room
			}
		}
		select {
		case <-in.signal:
		case err := <-in.done:
			in.committed(ctx, err)
			// A room woken only to save its records, idle for long, parks
			// as soon as they are committed.
			if time.Since(in.active) >= wait && in.tryPark(ctx) {
				return
			}
		case <-idle.C:
			if rest := wait - time.Since(in.active); rest > 0 {
				idle.Reset(rest)
			} else if in.tryPark(ctx) {
				return
			} else {
				idle.Reset(wait)
			}
		case <-ctx.Done():
			in.drain()
			return
		}
	}
}

// tryPark ends the goroutine when nothing needs it: nothing queued,
// nothing uncommitted, no alarm running. The shard lock makes the check and
// the change atomic with respect to new events.
func (in *instance) tryPark(ctx context.Context) bool {
	if in.inflight == nil && !in.pending.empty() {
		in.pump(ctx) // retry what a failed commit left
		return false
	}
	if in.inflight != nil || !in.pending.empty() || len(in.penOut) > 0 || in.alarm.busy {
		return false
	}
	return in.stopIfIdle(func() bool {
		if in.lost.Load() {
			return false // it abandons instead; cluster.lose reads parked under the same lock
		}
		in.parked = true
		return true
	})
}

// drain runs what is queued and commits everything before the runtime stops.
func (in *instance) drain() {
	ctx := context.WithoutCancel(context.Background())
	var batch []event
	saves := 0
	for {
		batch = in.take(batch)
		for i := range batch {
			in.handle(ctx, &batch[i])
		}
		if in.hasUnsaved() && in.inflight == nil && saves < 3 {
			in.saveMembers(ctx) // bounded: a store that fails now may fail forever
			saves++
		}
		if len(batch) == 0 && in.inflight == nil && in.leave() {
			return
		}
		if in.inflight != nil {
			in.committed(ctx, <-in.done)
		}
	}
}

// leave takes the instance out of the map, unless an event slipped in
// after the last take; a later event starts a new instance, or, once the
// runtime drains, gets ErrDraining.
func (in *instance) leave() bool {
	return in.stopIfIdle(func() bool { in.rt.remove(in.rt.shard(in.addr), in); return true })
}

// stopIfIdle runs stop, and reports what it reports, if no event is
// queued. It holds the shard lock that send takes, so no event can arrive
// between the check and stop.
func (in *instance) stopIfIdle(stop func() bool) bool {
	sh := in.rt.shard(in.addr)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.queue) > 0 {
		return false
	}
	return stop()
}

// abandon ends an instance whose room this node no longer holds. Events
// that reached it are not run here: each is failed so that its client
// hears (moved). What it already ran is committed if the store still
// takes this node's token, and dropped if another node's newer token
// fences it out.
func (in *instance) abandon() {
	ctx := context.WithoutCancel(context.Background())
	for _, ev := range in.take(nil) {
		in.moved(&ev)
	}
	if in.inflight == nil {
		in.pump(ctx)
	}
	for in.inflight != nil {
		in.committed(ctx, <-in.done)
	}
	if in.alarm.retry != nil {
		in.alarm.retry.Stop()
	}
	if in.alarm.busy {
		in.rt.alarmFinished(in.room)
	}
	in.h = nil
	// It commits no more: the lease, if still this node's, is given up so
	// another node need not wait for it to expire. (A new instance of the
	// room here takes the lease anew, with a token that fences this one out.)
	in.rt.cl.release(in)
}

// moved fails ev, which reached an instance that lost its room.
func (in *instance) moved(ev *event) {
	switch ev.kind {
	case evMessage:
		if ev.done != nil {
			ev.done(errMoved)
		} else if s := in.rt.lookup(ev.id); s != nil {
			s.Close(1012, "room moved, reconnect")
		}
	case evClose:
		if ev.done != nil {
			ev.done(errMoved) // the edge sends it again, to the new owner
		} else {
			in.rt.cl.closeLater(in.addr, ev.id, ev.code, ev.reason)
		}
	case evAlarm:
		in.rt.alarmFinished(in.room)
	default:
		ev.reply.answer(errMoved)
	}
}
