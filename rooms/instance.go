package rooms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
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

	mu     sync.Mutex // guards queue
	queue  []event
	parked bool // no goroutine runs the instance; guarded by its shard's lock
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
	started   bool
	loaded    bool // the room's members were read from storage
	auto      *AutoResponse
	dirty     []*Conn      // sockets whose membership record the current event changed
	dirtyWas  []*connExtra // their tags and attachment before it, restored if it fails
	unsaved   []*Conn      // sockets whose record changed since the last save (recUnsaved); some may have left since
	left      []SocketID   // sockets gone since the last save whose record is stored
	r         Room
	conns     map[SocketID]*Conn
	list      []*Conn
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
	inOut     []output
	inFrom    []*Conn
	inExtra   map[*Conn]*connExtra
	edgeGen   map[string]uint64 // cluster: the stream generation of the room's last frame to each node (deliverTo)
	done      chan error        // the commit in flight finished
	onCommit  func(error)       // commitDone, made once: a method value allocates
	alarm     alarmState
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

// push queues ev; bounded events fail with ErrOverloaded past the room's
// limit, so a flood cannot grow a mailbox without end.
func (in *instance) push(ev event, bounded bool) error {
	in.mu.Lock()
	if bounded && len(in.queue) >= in.rt.o.MaxQueuedEvents {
		in.mu.Unlock()
		return ErrOverloaded
	}
	in.queue = append(in.queue, ev)
	in.mu.Unlock()
	select {
	case in.signal <- struct{}{}:
	default:
	}
	return nil
}

func (in *instance) take(buf []event) []event {
	in.mu.Lock()
	buf = append(buf[:0], in.queue...)
	clear(in.queue)
	in.queue = in.queue[:0]
	if cap(in.queue) > 1024 {
		in.queue = nil // do not keep a burst's array for good
	}
	in.mu.Unlock()
	return buf
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
// parked room can be evicted (Runtime.sweep): it has nothing in flight.
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
		if cl := in.rt.cl; cl != nil && (in.lost.Load() || cl.now() >= in.leaseUntil.Load()) {
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

// writes is the current event's write set. Outside an event a write would
// belong to no commit: it is refused, as a send is, not silently lost.
func (in *instance) writes() (*writeSet, error) {
	if !in.inEvent {
		return nil, errOutsideEvent
	}
	return in.cur, nil
}

// layers are the uncommitted writes, newest first.
func (in *instance) layers() []*writeSet {
	l := make([]*writeSet, 0, 3)
	if in.inEvent {
		l = append(l, in.cur)
	}
	l = append(l, &in.pending)
	if in.inflight != nil {
		l = append(l, in.inflight)
	}
	return l
}

var errOutsideEvent = errors.New("rooms: a room can send and write only from a handler while it runs")

func (in *instance) emit(o output) error {
	if !in.inEvent {
		return errOutsideEvent
	}
	in.curOut = append(in.curOut, o)
	return nil
}

func (in *instance) connecting(c *Conn) bool { return in.inEvent && in.curConn == c }

func (in *instance) targets(tag string, except []SocketID) []*Conn {
	out := make([]*Conn, 0, len(in.list))
	for _, c := range in.list {
		if (tag == "" || contains(c.tags(), tag)) && !contains(except, c.id) {
			out = append(out, c)
		}
	}
	return out
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (in *instance) addConn(c *Conn) {
	c.idx = int32(len(in.list))
	in.list = append(in.list, c)
	in.conns[c.id] = c
	in.nconns.Store(int32(len(in.list)))
}

func (in *instance) removeConn(c *Conn) {
	if in.conns[c.id] != c {
		return
	}
	delete(in.conns, c.id)
	last := in.list[len(in.list)-1]
	in.list[c.idx], last.idx = last, c.idx
	in.list[len(in.list)-1] = nil
	in.list = in.list[:len(in.list)-1]
	c.gone = true
	c.rec &^= recUnsaved // it stays in in.unsaved, skipped there
	in.nconns.Store(int32(len(in.list)))
}

// call runs a handler method in an event scope and turns a panic into an error.
func (in *instance) call(ctx context.Context, f func() error) (w *writeSet, outs []output, err error) {
	in.scratch.reset()
	in.cur, in.curOut, in.inEvent = &in.scratch, in.curOut[:0], true
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: panic: %v\n%s", ErrFailed, p, debug.Stack())
		}
		for i, c := range in.dirty {
			switch {
			case err != nil:
				c.extra = in.dirtyWas[i] // the failed event's changes go with its writes
			case !c.gone:
				in.markUnsaved(c)
				if in.penExtra == nil {
					in.penExtra = make(map[*Conn]*connExtra)
				}
				if _, seen := in.penExtra[c]; !seen {
					in.penExtra[c] = in.dirtyWas[i]
				}
			}
			c.dirty = false
		}
		clear(in.dirty)
		clear(in.dirtyWas)
		in.dirty, in.dirtyWas = in.dirty[:0], in.dirtyWas[:0]
		w, outs = in.cur, in.curOut
		in.cur, in.inEvent, in.curConn = nil, false, nil
	}()
	return nil, nil, f()
}

// ensureStarted builds the handler if the instance has none and runs OnStart.
func (in *instance) ensureStarted(ctx context.Context) error {
	if in.h == nil {
		in.h, in.started = in.cls.new(), false
	}
	if in.started {
		return nil
	}
	if s, ok := in.h.(StartHandler); ok {
		w, outs, err := in.call(ctx, func() error { return s.OnStart(ctx, &in.r) })
		if err != nil {
			in.reset("start", err)
			return fmt.Errorf("%w: OnStart: %w", ErrFailed, err)
		}
		in.accept(ctx, w, outs, nil)
	}
	in.started = true
	if !in.born.IsZero() {
		in.rt.m.wakeSeconds.Observe(time.Since(in.born).Seconds())
		in.born = time.Time{}
	}
	return nil
}

// reset discards the handler after a failure; the next event rebuilds it
// from storage. Sockets stay open.
func (in *instance) reset(reason string, err error) {
	in.h, in.started = nil, false
	in.rt.m.failures.WithLabelValues(reason).Inc()
	in.rt.log.LogAttrs(context.Background(), slog.LevelWarn, "room failed",
		slog.String("room", in.addr.String()), slog.String("during", reason), slog.Any("err", err))
}

// accept adds a successful event's writes and outputs to the pipeline.
func (in *instance) accept(ctx context.Context, w *writeSet, outs []output, from *Conn) {
	if in.rt.cl != nil && in.hasUnsaved() {
		// In a cluster another node may have to take the room over at any
		// moment, and must know every socket: records go with the event
		// that changed them.
		in.collectUnsaved(w)
	}
	if !w.empty() || in.inflight != nil {
		in.penEvents++ // it waits for a commit
	}
	if !w.empty() {
		w.applyTo(&in.pending)
	}
	in.penOut = append(in.penOut, outs...)
	clear(outs) // outs may be the scratch list the next event reuses
	if from != nil {
		in.penFrom = append(in.penFrom, from)
	}
	in.pump(ctx)
}

// pump starts a commit of the pending writes when none is in flight, or
// releases outputs that wait for nothing.
func (in *instance) pump(ctx context.Context) {
	if in.inflight != nil {
		return // committed() pumps again
	}
	if in.pending.empty() {
		outs := in.penOut
		clear(in.penFrom)
		in.penOut, in.penFrom, in.penEvents, in.penExtra = nil, in.penFrom[:0], 0, nil
		in.release(outs)
		clear(outs)
		if in.penOut == nil {
			in.penOut = outs[:0] // keep the backing array: this is the hot path
		}
		return
	}
	w := in.pending
	in.inflight, in.inOut, in.inFrom, in.inEvents, in.inExtra = &w, in.penOut, in.penFrom, in.penEvents, in.penExtra
	in.pending, in.penOut, in.penFrom, in.penEvents, in.penExtra = writeSet{}, nil, nil, 0, nil
	b := w.batch()
	b.Token = in.lease.Token
	in.rt.commit(ctx, in.room, b, in.onCommit)
}

// commitDone takes the store's answer to the commit in flight, on the
// store's goroutine; the room's loop picks it up. It never blocks: a room
// has at most one commit in flight.
func (in *instance) commitDone(err error) { in.done <- err }

// committed finishes the commit in flight. On failure nothing it or any
// later event sent leaves: they all saw its writes. Their sockets are
// closed with 1011, so no client waits in silence.
func (in *instance) committed(ctx context.Context, err error) {
	w, outs, from, extras := in.inflight, in.inOut, in.inFrom, in.inExtra
	in.inflight, in.inOut, in.inFrom, in.inEvents, in.inExtra = nil, nil, nil, 0, nil
	if err == nil {
		if w.alarm != nil {
			in.rt.alarmChanged()
		}
		in.release(outs)
		in.pump(ctx)
		return
	}
	outs = append(outs, in.penOut...)
	from = append(from, in.penFrom...)
	lost := in.pending
	// Tags and attachments go back to what they were before the failed
	// events, the older snapshot last, so it wins.
	for _, was := range []map[*Conn]*connExtra{in.penExtra, extras} {
		for c, x := range was {
			c.extra = x
		}
	}
	in.pending, in.penOut, in.penFrom, in.penEvents, in.penExtra = writeSet{}, nil, nil, 0, nil
	in.reset("commit", err)
	code, reason := 1011, "storage failed"
	if errors.Is(err, storage.ErrFenced) {
		// Another node took the room over: what this one did since is void.
		in.rt.m.fencedCommits.WithLabelValues("store").Inc()
		if in.rt.cl != nil {
			in.rt.cl.lose(in)
		}
		code, reason = 1012, "room moved, reconnect"
	}
	// A socket whose connect waited for this commit is refused (the edge
	// closes it), so it is no member: no record, and no OnClose.
	for _, o := range outs {
		if o.join != nil {
			in.removeConn(o.join)
		}
	}
	// Otherwise membership is not the events' to lose: a socket that
	// joined is still open, one that left is gone. Its record is saved
	// again, as it is now.
	for _, ws := range []*writeSet{w, &lost} {
		for id, rec := range ws.members {
			switch c := in.conns[id]; {
			case c != nil:
				in.markUnsaved(c)
			case rec == nil: // a deletion
				in.left = append(in.left, id)
			}
		}
	}
	failed := fmt.Errorf("%w: %w", ErrFailed, err)
	if errors.Is(err, storage.ErrFenced) {
		failed = errMoved // the client reconnects and finds the new owner
	}
	for _, o := range outs {
		if o.done != nil {
			o.done(failed)
		}
	}
	for _, c := range from {
		if !c.gone && !c.origin {
			c.origin = true
			c.sock.Close(code, reason)
		}
	}
	for _, c := range from {
		c.origin = false
	}
}

// release sends what committed events produced, in order. In a cluster,
// sends to sockets on other nodes go one link frame per node and output,
// whatever the number of sockets there; all carry the lease's token, so an
// edge drops frames of a former owner once it has heard from a newer one.
// This node's own sockets are held to the same fence.
func (in *instance) release(outs []output) {
	cl := in.rt.cl
	checked, fenced := false, false // once per release: the token is the instance's
	for _, o := range outs {
		if cl != nil && len(o.to) > 0 {
			if !checked {
				checked, fenced = true, !cl.fenceOK(in.addr, in.lease.Token)
			}
			if fenced {
				if o.done != nil {
					o.done(errMoved)
				}
				continue
			}
		}
		switch {
		case o.close:
			for _, c := range o.to {
				if !c.gone {
					c.sock.Close(o.code, o.reason)
				}
			}
		case len(o.to) > 0:
			local := o.to
			if cl != nil {
				local = in.deliverRemote(cl, o)
			}
			if len(local) >= fanoutMin {
				fanout(local, o.frame)
			} else {
				send(local, o.frame)
			}
		}
		if o.done != nil {
			o.done(nil)
		}
	}
}

// fanoutMin is the broadcast size from which writing is split across CPUs.
// A socket write on loopback costs the kernel some microseconds, so 5,000
// sockets take tens of milliseconds on one core.
const fanoutMin = 256

// fanout writes f to every socket of to, split across GOMAXPROCS goroutines.
// It returns when all are written: outputs are released one after another,
// which keeps every socket's frames in order.
func fanout(to []*Conn, f Frame) {
	parts := min(runtime.GOMAXPROCS(0), len(to)/(fanoutMin/2))
	size := (len(to) + parts - 1) / parts
	var wg sync.WaitGroup
	for i := size; i < len(to); i += size {
		wg.Add(1)
		go func(part []*Conn) {
			defer wg.Done()
			send(part, f)
		}(to[i:min(i+size, len(to))])
	}
	send(to[:size], f)
	wg.Wait()
}

func send(to []*Conn, f Frame) {
	for _, c := range to {
		if !c.gone {
			c.sock.Send(f) // a slow or closing socket ends itself
		}
	}
}

// failClose queues closing c after what it was sent before: the event that
// failed sent nothing, and the client must not wait in silence.
func (in *instance) failClose(ctx context.Context, c *Conn, err error) {
	code, reason := 1011, "room handler failed"
	var ce *CloseError
	if errors.As(err, &ce) {
		code, reason = ce.Code, ce.Reason
	}
	in.penOut = append(in.penOut, output{to: c.self[:], close: true, code: code, reason: reason})
	in.penFrom = append(in.penFrom, c) // should the commit ahead fail, it is closed all the same
	in.pump(ctx)
}

func (in *instance) handle(ctx context.Context, ev *event) {
	in.rt.m.events.Inc()
	defer in.settle(ev) // whatever path it takes, a forwarded event is answered
	if !in.loaded && !in.load(ctx, ev) {
		return
	}
	switch ev.kind {
	case evWake:
		ev.reply.answer(nil)
		return
	case evSave:
		in.saveMembers(ctx)
		return
	case evEdgeLost:
		for _, c := range append([]*Conn(nil), in.list...) {
			if c.edge == ev.reason {
				// Should the node be alive after all (a late heartbeat),
				// its socket must not stay open outside the room.
				c.sock.Close(1012, "room lost your node, reconnect")
				in.closeConn(ctx, &event{kind: evClose}, c, 1006, "edge node lost")
			}
		}
		return
	case evEdgeGap:
		if g, sent := in.edgeGen[ev.reason]; sent && g != in.rt.cl.generation(ev.reason) {
			in.closeEdge(in.rt.cl, ev.reason)
		}
		return
	case evProbed:
		for _, id := range ev.gone {
			if c := in.conns[id]; c != nil && c.edge == ev.reason {
				in.closeConn(ctx, &event{kind: evClose}, c, 1006, "connection lost")
			}
		}
		return
	case evDelete:
		in.deleteRoom(ctx, ev)
		return
	case evInspect:
		ev.inspect(in)
		ev.reply.answer(nil)
		return
	case evClose:
		if c := in.conns[ev.id]; c != nil {
			in.closeConn(ctx, ev, c, ev.code, ev.reason)
		}
		return
	}
	if ev.kind == evAlarm {
		in.alarm.busy = true
	}
	h, ok := in.handlerFor(ctx, ev)
	if !ok {
		return
	}
	switch ev.kind {
	case evConnect:
		edge := in.rt.o.NodeID
		if rs, ok := ev.sock.(*remoteSocket); ok {
			edge, rs.in = rs.edge, in
		}
		c := &Conn{id: ev.sock.ID(), sock: ev.sock, inst: in, user: ev.info.User, query: ev.info.Query,
			edge: edge, connectedAt: time.Now().UnixNano()}
		c.self[0] = c
		in.addConn(c)
		if in.auto != nil {
			ev.sock.SetAutoResponse(in.auto)
		}
		w, outs := &writeSet{}, []output(nil)
		if ch, ok := h.(ConnectHandler); ok {
			var err error
			w, outs, err = in.call(ctx, func() error {
				in.curConn = c
				return ch.OnConnect(ctx, &in.r, c)
			})
			if err != nil {
				in.removeConn(c)
				if errors.Is(err, ErrFailed) { // a panic, not a refusal
					in.reset("handler", err)
				}
				var ce *CloseError
				if !errors.As(err, &ce) && !errors.Is(err, ErrFailed) {
					err = fmt.Errorf("%w: %w", ErrRefused, err)
				}
				ev.reply.answer(err)
				return
			}
		}
		in.markUnsaved(c)
		if in.rt.cl != nil {
			// In a cluster the socket's membership record is written with
			// this event, and the socket is accepted only once it is
			// committed: a new owner must know every socket that was let in.
			in.accept(ctx, w, append(outs, output{done: ev.reply.answer, join: c}), c)
			return
		}
		ev.reply.answer(nil)
		in.accept(ctx, w, outs, c)
	case evMessage:
		c := in.conns[ev.id]
		if c == nil {
			// Closed while the message waited, or a socket the room no
			// longer knows: one of a node it took for dead. It must not
			// talk into the void; reconnecting makes it a member again.
			if ev.done != nil {
				ev.done(ErrSocketNotFound)
				ev.done = nil
			} else if s := in.rt.lookup(ev.id); s != nil {
				s.Close(1012, "room lost this socket, reconnect")
			}
			return
		}
		in.run1(ctx, ev, c, func() error { return h.OnMessage(ctx, &in.r, c, ev.frame) })
	case evAlarm:
		in.runAlarm(ctx, ev, h)
	case evRequest:
		rh, ok := h.(RequestHandler)
		if !ok {
			ev.reply.answer(ErrNoRequestHandler)
			return
		}
		w, outs, err := in.call(ctx, func() error { return rh.OnRequest(ctx, &in.r, ev.rec, ev.req) })
		if err != nil {
			in.reset("handler", err)
			ev.reply.answer(fmt.Errorf("%w: %w", ErrFailed, err))
			return
		}
		// The response is released like a send; the HTTP goroutine writes it.
		in.accept(ctx, w, append(outs, output{done: ev.reply.answer}), nil)
	case evBroadcast:
		outs := []output{{to: in.targets(ev.tag, nil), frame: ev.frame, done: ev.reply.answer}}
		in.accept(ctx, &writeSet{}, outs, nil)
	case evKick:
		c := in.conns[ev.id]
		if c == nil {
			ev.reply.answer(ErrSocketNotFound)
			return
		}
		outs := []output{{to: []*Conn{c}, close: true, code: 4403, reason: "kicked", done: ev.reply.answer}}
		in.accept(ctx, &writeSet{}, outs, nil)
	}
}

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
		if len(in.unsaved) >= 2*len(in.list)+64 {
			in.compactUnsaved()
		}
		in.unsaved = append(in.unsaved, c)
	}
}

// compactUnsaved drops the sockets that left from the unsaved list. A
// busy room is saved only when it falls idle, so without this its list
// would keep every socket that ever joined, and their attachments with them.
func (in *instance) compactUnsaved() {
	kept := in.unsaved[:0]
	for _, c := range in.unsaved {
		if !c.gone && c.rec&recUnsaved != 0 {
			kept = append(kept, c)
		}
	}
	clear(in.unsaved[len(kept):])
	in.unsaved = kept
}

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
		if !c.gone && c.rec&recUnsaved != 0 {
			w.member(c.id, c.record())
			c.rec = recStored
		}
	}
	for _, id := range in.left {
		w.member(id, nil)
	}
	clear(in.unsaved)
	in.unsaved, in.left = in.unsaved[:0], nil
	if cap(in.unsaved) > 256 {
		in.unsaved = nil // a burst of connects is over: do not keep its array
	}
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
		case in.rt.cl != nil && in.rt.cl.alive(m.Edge):
			// Open as far as the registry knows; its edge is asked below.
			s = &remoteSocket{id: SocketID(m.ID), edge: m.Edge, cl: in.rt.cl, in: in}
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
	if in.rt.cl != nil {
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
		go func() {
			held, ok := cl.probe(context.Background(), edge, ids)
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
		}()
	}
}

// failEvent fails ev without running it, so that nobody waits in silence:
// a message's sender is closed (1011), an alarm is retried, whoever asks
// gets err. A close needs nothing: a record left behind is closed as lost
// on the next wake.
func (in *instance) failEvent(ctx context.Context, ev *event, err error) {
	switch ev.kind {
	case evMessage:
		switch c := in.conns[ev.id]; {
		case c != nil:
			in.failClose(ctx, c, err)
		case ev.done != nil:
			ev.done(err) // the edge closes the socket
			ev.done = nil
		default:
			if s := in.rt.lookup(ev.id); s != nil {
				s.Close(1011, "room unavailable") // the room could not load its members
			}
		}
	case evAlarm:
		in.alarm.busy = true
		in.alarmFailed(ctx, ev, err)
	case evClose:
		if ev.done != nil {
			ev.done(err) // the edge tries again
			ev.done = nil
		}
	default:
		ev.reply.answer(err)
	}
}

// closeConn says goodbye to c: OnClose, then its membership record goes
// with the event's writes, whatever the handler did.
func (in *instance) closeConn(ctx context.Context, ev *event, c *Conn, code int, reason string) {
	// Build the handler first: a rebuilt one's OnStart must still see the
	// socket that OnClose then says goodbye to.
	h, ok := in.handlerFor(ctx, ev)
	in.removeConn(c)
	w, outs := &writeSet{}, []output(nil)
	if ch, isCH := h.(CloseHandler); ok && isCH {
		var err error
		w, outs, err = in.call(ctx, func() error { return ch.OnClose(ctx, &in.r, c, code, reason) })
		if err != nil {
			in.reset("handler", err)
			w, outs = &writeSet{}, nil
		}
	}
	in.markUnsaved(c)
	in.accept(ctx, w, in.withDone(ev, outs), nil)
}

// handlerFor returns the started handler, failing ev when OnStart fails.
func (in *instance) handlerFor(ctx context.Context, ev *event) (Handler, bool) {
	if err := in.ensureStarted(ctx); err != nil {
		in.failEvent(ctx, ev, err)
		return nil, false
	}
	return in.h, true
}

// run1 runs one handler call for ev; from is the socket whose message it is.
func (in *instance) run1(ctx context.Context, ev *event, from *Conn, f func() error) {
	w, outs, err := in.call(ctx, f)
	if err != nil {
		in.reset("handler", err)
		if from != nil {
			in.failClose(ctx, from, err)
		}
		return
	}
	in.accept(ctx, w, in.withDone(ev, outs), from)
}

// withDone adds ev's done to its outputs: it runs when they are released.
func (in *instance) withDone(ev *event, outs []output) []output {
	if ev.done != nil {
		outs = append(outs, output{done: ev.done})
		ev.done = nil
	}
	return outs
}

// settle answers a forwarded event that made no outputs: it was dropped
// (its socket had closed) or failed, and a failure closed the socket.
func (in *instance) settle(ev *event) {
	if ev.done != nil {
		ev.done(nil)
		ev.done = nil
	}
}

// runAlarm runs OnAlarm. The alarm is cleared with the run's writes unless
// the handler set a new one; a failure retries with backoff.
func (in *instance) runAlarm(ctx context.Context, ev *event, h Handler) {
	// The alarm may have moved or gone since it was handed out, or since the
	// retry was scheduled: then this run is stale, and the new alarm must
	// stand untouched.
	at, set, err := in.r.alarm.Get(ctx)
	if err != nil {
		in.alarmFailed(ctx, ev, err)
		return
	}
	if !set || at.UnixNano() != ev.alarm.Scheduled.UnixNano() {
		in.alarmEnd()
		return
	}
	ah, ok := h.(AlarmHandler)
	if !ok {
		in.accept(ctx, &writeSet{alarm: &storage.AlarmChange{}}, []output{in.alarmDoneOutput()}, nil)
		return
	}
	w, outs, err := in.call(ctx, func() error {
		in.cur.alarm = &storage.AlarmChange{}
		return ah.OnAlarm(ctx, &in.r, ev.alarm)
	})
	if err != nil {
		in.reset("alarm", err)
		in.alarmFailed(ctx, ev, err)
		return
	}
	in.rt.m.alarmsFired.Inc()
	in.accept(ctx, w, append(outs, in.alarmDoneOutput()), nil)
}

// alarmFailed schedules the next try, or gives up after the last.
func (in *instance) alarmFailed(ctx context.Context, ev *event, err error) {
	next := ev.alarm
	next.Retry++
	if next.Retry >= alarmTries {
		in.rt.log.Warn("alarm given up", "room", in.addr.String(), "tries", next.Retry, "err", err)
		in.accept(ctx, &writeSet{alarm: &storage.AlarmChange{}}, []output{in.alarmDoneOutput()}, nil)
		return
	}
	delay := in.rt.o.AlarmRetryBase << (next.Retry - 1)
	in.alarm.retry = time.AfterFunc(delay, func() {
		if in.rt.send(in.addr, event{kind: evAlarm, alarm: next}, false) != nil {
			// The room left this node; wherever it runs now, the alarm is
			// still due in storage and fires there.
			in.rt.alarmFinished(in.room)
		}
	})
}

// alarmDoneOutput ends the alarm's run once the commit that clears (or
// moves) it is durable: until then the store still lists it as due, and the
// scheduler must not hand it out again. After a failed commit the scheduler
// finds it due again on its next regular pass, not at once.
func (in *instance) alarmDoneOutput() output {
	return output{done: func(err error) {
		in.alarm.busy = false
		in.rt.alarmFinishedQuietly(in.room, err != nil)
	}}
}

// alarmEnd ends an alarm run that needs no commit.
func (in *instance) alarmEnd() {
	if in.alarm.retry != nil {
		in.alarm.retry.Stop()
		in.alarm.retry = nil
	}
	in.alarm.busy = false
	in.rt.alarmFinished(in.room)
}

// deleteRoom closes every socket with 4404 after what it was sent before,
// and wipes the room's storage and alarm.
func (in *instance) deleteRoom(ctx context.Context, ev *event) {
	in.h, in.started = nil, false
	if in.alarm.busy {
		in.alarmEnd() // a retry would run OnAlarm for a room that no longer exists
	}
	outs := []output{{to: append([]*Conn(nil), in.list...), close: true, code: 4404, reason: "room deleted"}}
	outs = append(outs, output{done: ev.reply.answer})
	in.accept(ctx, &writeSet{deleteAll: true, alarm: &storage.AlarmChange{}}, outs, nil)
}

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
	g := in.edgeGen[edge]
	if cl.deliver(edge, in.addr, in.lease.Token, ids, f, &g) {
		in.edgeGen[edge] = g
		return
	}
	in.closeEdge(cl, edge)
}

// closeEdge closes the room's sockets on edge, whose stream from this node
// broke: some frames for them may be lost.
func (in *instance) closeEdge(cl *cluster, edge string) {
	in.edgeGen[edge] = cl.generation(edge)
	n := 0
	for _, c := range in.list {
		if c.edge == edge && !c.gone {
			c.sock.Close(1012, "link to the room broke, reconnect")
			n++
		}
	}
	cl.rt.m.linkErrors.WithLabelValues("gap").Inc()
	cl.rt.log.Debug("frames to a node may be lost: its sockets in the room are closed", "room", in.addr.String(), "node", edge, "sockets", n)
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
			go in.rt.cl.closedLater(in.addr, ev.id, ev.code, ev.reason)
		}
	case evAlarm:
		in.rt.alarmFinished(in.room)
	default:
		ev.reply.answer(errMoved)
	}
}
