// The hibernation sweep: evicting idle rooms, under memory pressure too,
// and closing the sockets a restart left behind.

package rooms

import (
	"context"
	"time"

	"github.com/roomgate/roomgate/hibernation"
	"github.com/roomgate/roomgate/storage"
)

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
	defer func() { rt.cl.release(evicted...) }()
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
			if _, err := rt.cl.here(ctx, a, event{kind: evWake}, false, false); err != nil {
				return // draining
			}
		}
		if len(page) < 500 {
			return
		}
	}
}
