package hibernation

import (
	"context"
	"fmt"
	"time"

	"github.com/roomgate/roomgate/storage"
)

// Reason says why a room leaves memory. The runtime labels its eviction
// metric with it.
type Reason string

// The Reasons a sweep returns; Keep leaves the room in memory.
const (
	Keep     Reason = ""
	Idle     Reason = "idle"     // no event for Policy.After
	Pressure Reason = "pressure" // more rooms in memory than Policy.MaxActive
)

// State is a room in memory as a sweep sees it, read under its shard's lock.
type State struct {
	// Parked: no goroutine runs the room; nothing is queued, in flight or
	// held back. Only a parked room can be evicted.
	Parked bool
	// The fields below are set only for a parked room: a running room's
	// fields belong to its goroutine.
	Unsaved    bool      // membership records changed since the last save
	LastActive time.Time // when its last event ended
}

// Rooms is the room runtime as a Sweeper drives it; R is the runtime's
// handle of a room in memory (package rooms: its instance).
//
// The runtime keeps its rooms in shards, each under a lock that delivering
// an event takes too. A room is evicted only while parked and under its
// shard's lock, by Visit or Revisit themselves: an event then either
// reaches the instance, which runs again, or finds none and builds a new
// one that loads the room's members. The Sweeper holds no lock of its own
// across these calls; it hands Visit and Revisit the decision to run under
// the lock.
//
// The Sweeper calls these from Run's goroutine and from WakeLost's, with
// no lock of the runtime held.
type Rooms[R any] interface {
	// Visit calls decide for each room in memory, one shard after
	// another, holding the shard's lock while decide runs on its rooms.
	// When decide returns a Reason other than Keep, Visit evicts the room
	// at once, under that lock. decide must not call back into Rooms.
	Visit(decide func(r R, s State) Reason)
	// Revisit is Visit for room r alone, if r is still in memory (the
	// same instance, not one built since): for a decision an earlier
	// Visit prepared, which the room may have outdated meanwhile.
	Revisit(r R, decide func(r R, s State) Reason)
	// Evicted is called at the end of a sweep that evicted rooms, with
	// them, so the runtime releases what they held in one go (in a
	// cluster, their leases).
	Evicted(rooms []R)
	// Save asks room r to save its membership records: it runs again to
	// do so, and parks once they are committed. It must not block.
	Save(r R)
	// InMemory returns how many rooms are in memory, parked or running.
	InMemory() int
	// Running returns how many rooms have a goroutine.
	Running() int
	// Hosts reports whether the runtime runs rooms of class; WakeLost
	// skips the others.
	Hosts(class string) bool
	// Wake starts room r so that it loads its members and closes those
	// whose sockets are gone. An error (the runtime is draining) ends
	// WakeLost.
	Wake(r storage.Room) error
}

// Options configure a Sweeper. A zero field means its default.
type Options struct {
	Policy       Policy
	Store        storage.Store    // where WakeLost finds rooms with members; required by WakeLost
	StartupWakes int              // rooms running at once during WakeLost; default 1024
	Clock        func() time.Time // the time idleness is judged by; default time.Now
}

// Sweeper evicts rooms as its Policy says, and wakes the rooms whose
// sockets died with the last run. It starts nothing until Run, which the
// runtime runs once; Added and WakeLost may be called concurrently with it.
type Sweeper[R any] struct {
	rooms Rooms[R]
	o     Options
	press chan struct{} // InMemory passed the cap: sweep now
}

const (
	// maxSavesPerSweep bounds the rooms a sweep wakes to save their records.
	maxSavesPerSweep = 1024
	// pressDamping is the least time between two sweeps that Added asks
	// for: while too few rooms are parked to bring the count under the
	// cap, every new room asks, and one sweep per 100 ms is enough.
	pressDamping = 100 * time.Millisecond
	// saveWait is how long Run lets the saves of a sweep commit before it
	// sweeps again, when that sweep held saves back.
	saveWait = 100 * time.Millisecond
	// wakePage is how many rooms WakeLost lists at a time.
	wakePage = 500
	// wakePoll is how often WakeLost checks whether a room stopped running
	// while StartupWakes are.
	wakePoll = 10 * time.Millisecond
)

// NewSweeper returns a Sweeper of rooms with options o.
func NewSweeper[R any](rooms Rooms[R], o Options) *Sweeper[R] {
	if o.StartupWakes == 0 {
		o.StartupWakes = 1024
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return &Sweeper[R]{rooms: rooms, o: o, press: make(chan struct{}, 1)}
}

// Added tells the sweeper that a room entered memory, inMemory being how
// many are now. Past the policy's cap it has Run sweep soon. It never
// blocks, so the runtime may call it under its shard's lock.
func (s *Sweeper[R]) Added(inMemory int) {
	if s.o.Policy.Excess(inMemory) > 0 {
		select {
		case s.press <- struct{}{}:
		default:
		}
	}
}

// Run sweeps until ctx ends: every quarter of Policy.After (at least every
// second, at most every 10 ms), when Added signals the cap (at most every
// 100 ms), and again while a sweep held saves back.
func (s *Sweeper[R]) Run(ctx context.Context) {
	t := time.NewTicker(min(max(s.o.Policy.After/4, 10*time.Millisecond), time.Second))
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.press:
			if time.Since(last) < pressDamping {
				continue
			}
		}
		last = time.Now()
		for s.sweep(s.o.Clock()) && ctx.Err() == nil {
			time.Sleep(saveWait) // let the saves just asked for commit
		}
	}
}

// sweep evicts what the policy says at now. Only a parked room can go: it
// has no goroutine, nothing queued and nothing uncommitted. One whose
// membership records are not saved yet is asked to save them first, and
// goes on a later sweep; at most maxSavesPerSweep a sweep, so a node where
// many rooms fall idle together does not start a goroutine for each at
// once (each parks again once its save is committed). It reports whether
// it held saves back, so the caller sweeps again soon. Evicting a room
// loses only its handler's fields: its sockets stay open and keep their
// room address, and the room's next event builds a new instance that
// loads them.
func (s *Sweeper[R]) sweep(now time.Time) (more bool) {
	p := s.o.Policy
	var idle []Candidate[R]
	var save, evicted []R
	defer func() {
		if len(evicted) > 0 {
			s.rooms.Evicted(evicted)
		}
	}()
	excess := p.Excess(s.rooms.InMemory())
	s.rooms.Visit(func(r R, st State) Reason {
		switch {
		case !st.Parked:
		case st.Unsaved:
			if excess > 0 || p.Idle(st.LastActive, now) {
				if more = len(save) == maxSavesPerSweep; !more {
					save = append(save, r)
				}
			}
		case p.Idle(st.LastActive, now):
			evicted = append(evicted, r)
			return Idle
		case excess > 0:
			idle = append(idle, Candidate[R]{Room: r, LastActive: st.LastActive.UnixNano()})
		}
		return Keep
	})
	for _, r := range save {
		s.rooms.Save(r)
	}
	excess = p.Excess(s.rooms.InMemory())
	if excess == 0 {
		return more
	}
	for _, c := range LeastRecent(idle, excess) {
		// Parked at the pass above, but it may have woken, taken a
		// socket and parked again meanwhile: its records come first.
		s.rooms.Revisit(c.Room, func(r R, st State) Reason {
			if !st.Parked || st.Unsaved {
				return Keep
			}
			evicted = append(evicted, r)
			return Pressure
		})
	}
	return more
}

// WakeLost wakes, once at start, every room with persisted members: the
// node has just started, so those of its sockets are gone, and each room
// must hear of them (OnClose with 1006) instead of keeping them for good.
// The wake loads the members and closes those that are lost. At most
// StartupWakes rooms run at once: a node that stopped with 100,000 such
// rooms would otherwise start 100,000 goroutines and their commits in one
// burst; paced, it wakes about that many a second (a room parks a second
// after its last event). It returns when every such room was woken, ctx
// ended or the runtime refused a wake, with an error only when the store
// could not list the rooms.
func (s *Sweeper[R]) WakeLost(ctx context.Context) error {
	var after storage.Room
	for ctx.Err() == nil {
		page, err := s.o.Store.Rooms(ctx, "", "", after, wakePage)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("hibernation: list rooms to wake: %w", err)
		}
		for _, st := range page {
			after = st.Room
			if st.Members == 0 || !s.rooms.Hosts(st.Room.Class) {
				continue
			}
			for s.rooms.Running() >= s.o.StartupWakes {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wakePoll):
				}
			}
			if err := s.rooms.Wake(st.Room); err != nil {
				return nil // draining
			}
		}
		if len(page) < wakePage {
			return nil
		}
	}
	return nil
}
