package hibernation

import (
	"slices"
	"time"
)

// Policy says when a room leaves memory.
type Policy struct {
	After     time.Duration // a room with no event for this long is evicted
	MaxActive int           // rooms in memory per node past which the least recently used idle ones go; 0: no cap
}

// Idle reports whether a room whose last event ended at last is due for
// eviction at now.
func (p Policy) Idle(last, now time.Time) bool { return now.Sub(last) >= p.After }

// Candidate is a room in memory as the pressure check sees it.
type Candidate[T any] struct {
	Room       T
	LastActive int64 // Unix nanoseconds of its last event
}

// Excess returns how many rooms to evict when active rooms are in memory:
// down to 90% of the cap, so a node at its cap does not run a scan for
// every new room.
func (p Policy) Excess(active int) int {
	if p.MaxActive <= 0 || active <= p.MaxActive {
		return 0
	}
	return active - p.MaxActive*9/10
}

// LeastRecent returns the n candidates whose last event is oldest, oldest
// first. It reorders c.
func LeastRecent[T any](c []Candidate[T], n int) []Candidate[T] {
	slices.SortFunc(c, func(a, b Candidate[T]) int {
		switch {
		case a.LastActive < b.LastActive:
			return -1
		case a.LastActive > b.LastActive:
			return 1
		}
		return 0
	})
	return c[:min(n, len(c))]
}
