// The Runtime as the hibernation sweeper drives it: package hibernation
// decides which rooms leave memory and when; this file evicts them under
// the shard locks, asks them to save, and wakes them.

package rooms

import (
	"context"

	"github.com/roomgate/roomgate/hibernation"
	"github.com/roomgate/roomgate/storage"
)

// sweepRooms implements hibernation.Rooms for the Runtime, apart from its
// exported API.
type sweepRooms struct{ rt *Runtime }

// Visit implements hibernation.Rooms: decide runs under each shard's lock,
// which send takes too, so no event can reach a room between the decision
// and its eviction.
func (h sweepRooms) Visit(decide func(*instance, hibernation.State) hibernation.Reason) {
	rt := h.rt
	for i := range rt.shards {
		sh := &rt.shards[i]
		sh.mu.Lock()
		for _, in := range sh.rooms {
			if r := decide(in, in.sweepState()); r != hibernation.Keep {
				rt.evict(sh, in, r)
			}
		}
		sh.mu.Unlock()
	}
}

// Revisit implements hibernation.Rooms.
func (h sweepRooms) Revisit(in *instance, decide func(*instance, hibernation.State) hibernation.Reason) {
	sh := h.rt.shard(in.addr)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.rooms[in.addr] != in {
		return // evicted, or left and built again, since
	}
	if r := decide(in, in.sweepState()); r != hibernation.Keep {
		h.rt.evict(sh, in, r)
	}
}

// Evicted implements hibernation.Rooms: in a cluster, the leases of the
// rooms a sweep evicted are released together, so each room wakes
// wherever its next event starts.
func (h sweepRooms) Evicted(ins []*instance) {
	h.rt.cl.release(ins...)
}

// Save implements hibernation.Rooms.
func (h sweepRooms) Save(in *instance) {
	h.rt.send(in.addr, event{kind: evSave}, false) // only fails while draining, which saves anyway
}

// InMemory implements hibernation.Rooms.
func (h sweepRooms) InMemory() int { return int(h.rt.nrooms.Load()) }

// Running implements hibernation.Rooms.
func (h sweepRooms) Running() int { return int(h.rt.nrun.Load()) }

// Hosts implements hibernation.Rooms.
func (h sweepRooms) Hosts(class string) bool { return h.rt.HasClass(class) }

// Wake implements hibernation.Rooms.
func (h sweepRooms) Wake(r storage.Room) error {
	_, err := h.rt.cl.here(h.rt.life, Addr{Class: r.Class, Room: r.Name}, event{kind: evWake}, false, false)
	return err
}

// sweepState is what the sweeper sees of in; the caller holds its shard's
// lock. A running room's fields are its goroutine's: only a parked room's
// are read.
func (in *instance) sweepState() hibernation.State {
	if !in.parked {
		return hibernation.State{}
	}
	return hibernation.State{Parked: true, Unsaved: in.hasUnsaved(), LastActive: in.active}
}

// evict drops a parked instance; the caller holds sh.mu. Dropping it loses
// only the handler's fields: the sockets stay open and keep the room's
// address, and the next event builds an instance that loads them.
func (rt *Runtime) evict(sh *shard, in *instance, reason hibernation.Reason) {
	rt.remove(sh, in)
	rt.m.evictions.WithLabelValues(string(reason)).Inc()
	if in.nconns.Load() > 0 {
		rt.m.rooms.WithLabelValues("hibernated").Inc()
	}
}

// closeLostMembers wakes, once at start, every room with persisted
// members, so rooms hear of the sockets that died with the last run
// (hibernation.Sweeper.WakeLost).
func (rt *Runtime) closeLostMembers(ctx context.Context) {
	if err := rt.sweeper.WakeLost(ctx); err != nil {
		rt.log.Warn("list rooms to close lost sockets", "err", err)
	}
}
