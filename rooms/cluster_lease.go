// Leases and placement: which node runs a room, keeping the lease renewed,
// and fencing out a former owner.

package rooms

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/roomgate/roomgate/storage"
)

// heldLease is a lease this node just acquired, with when it asked: the
// lease surely ends no earlier than start + TTL.
type heldLease struct {
	storage.Lease
	start time.Time
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
		cl.background(func(context.Context) { cl.releaseNow(ins) })
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
	if cl.rt.active(a) != nil {
		return "", true, nil
	}
	if useCache {
		if n := cl.cachedOwner(a); n != "" {
			return n, false, nil
		}
	}

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
		r := cl.route(a)
		r.mu.Lock()
		r.owners[a] = l.Node
		r.mu.Unlock()
		p.remote = l.Node
		return l.Node, false, nil
	default:
		cl.rt.m.failures.WithLabelValues("lease").Inc()
		cl.rt.log.Warn("room lease unavailable", "room", a.String(), "err", err)
		p.err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		return "", false, p.err
	}
}

// cachedOwner is the node that held a's lease when this node last asked,
// or "": an event sent there may bounce (errNotOwner), and is sent again.
func (cl *cluster) cachedOwner(a Addr) string {
	r := cl.route(a)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.owners[a]
}

// forgetOwner drops a's cached owner if it is node, or whoever it is when
// node is "".
func (cl *cluster) forgetOwner(a Addr, node string) {
	r := cl.route(a)
	r.mu.Lock()
	if n, ok := r.owners[a]; ok && (node == "" || n == node) {
		delete(r.owners, a)
	}
	r.mu.Unlock()
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
	cl.background(func(context.Context) {
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
	})
}

// fenceOK reports whether a frame from the owner with token may reach a's
// sockets: not if a newer owner of a has already sent here. A former
// owner, frozen while another took over, never gets a late frame between
// the new owner's.
func (cl *cluster) fenceOK(a Addr, token uint64) bool {
	r := cl.route(a)
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.fences[a]
	if token < cur.token {
		cl.rt.m.fencedCommits.WithLabelValues("edge").Inc()
		return false
	}
	r.fences[a] = fence{token: token, seen: cl.now()}
	return true
}

// fence is the newest owner token an edge has seen for a room, and when.
type fence struct {
	token uint64
	seen  int64 // cluster.now()
}
