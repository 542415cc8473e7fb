package localcoord

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/roomgate/roomgate/storage"
)

// Coordinator is a storage.Coordinator in memory. Make one with New.
type Coordinator struct {
	mu     sync.Mutex
	token  uint64 // the last token given out, for any room
	leases map[storage.Room]lease
	live   int // leases left by the last sweep
	nodes  map[string]node
}

type lease struct {
	storage.Lease
	expires time.Time
}

type node struct {
	rec     storage.NodeRecord
	expires time.Time
}

var _ storage.Coordinator = (*Coordinator)(nil)

// New returns a Coordinator that holds no lease and knows no node.
func New() *Coordinator {
	return &Coordinator{leases: make(map[storage.Room]lease), nodes: make(map[string]node)}
}

// held returns r's lease unless it has expired, dropping it if it has.
// Callers hold c.mu.
func (c *Coordinator) held(r storage.Room, now time.Time) (lease, bool) {
	l, ok := c.leases[r]
	if ok && !now.Before(l.expires) {
		delete(c.leases, r)
		return lease{}, false
	}
	return l, ok
}

// sweep drops expired leases once the map has doubled since the last
// sweep: a room nobody asks about again would otherwise keep its lease in
// memory for good. Each Acquire pays O(1) for it, amortized. Callers hold
// c.mu.
func (c *Coordinator) sweep(now time.Time) {
	if len(c.leases) < 2*max(c.live, 512) {
		return
	}
	for r, l := range c.leases {
		if !now.Before(l.expires) {
			delete(c.leases, r)
		}
	}
	c.live = len(c.leases)
}

// Acquire implements storage.Coordinator. Tokens come from one counter
// for all rooms: each is greater than any given out before, for r or any
// other room, and a room forgotten once its lease expired needs no record
// of its last token.
func (c *Coordinator) Acquire(_ context.Context, r storage.Room, node string, ttl time.Duration) (storage.Lease, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if l, ok := c.held(r, now); ok && l.Node != node {
		return l.Lease, storage.ErrLeaseHeld
	}
	c.token++
	l := lease{Lease: storage.Lease{Node: node, Token: c.token}, expires: now.Add(ttl)}
	c.leases[r] = l
	c.sweep(now)
	return l.Lease, nil
}

// Renew implements storage.Coordinator. Every lease is answered, renewed
// or lost; err is always nil.
func (c *Coordinator) Renew(_ context.Context, node string, ttl time.Duration, rooms []storage.Room, tokens []uint64) ([]storage.LeaseState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	states := make([]storage.LeaseState, len(rooms))
	for i, r := range rooms {
		l, ok := c.held(r, now)
		if !ok || l.Lease != (storage.Lease{Node: node, Token: tokens[i]}) {
			states[i] = storage.LeaseLost
			continue
		}
		l.expires = now.Add(ttl)
		c.leases[r] = l
		states[i] = storage.LeaseRenewed
	}
	return states, nil
}

// Release implements storage.Coordinator. It always returns nil.
func (c *Coordinator) Release(_ context.Context, rooms []storage.Room, leases []storage.Lease) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for i, r := range rooms {
		if l, ok := c.held(r, now); ok && l.Lease == leases[i] {
			delete(c.leases, r)
		}
	}
	return nil
}

// Owners implements storage.Coordinator. It always returns a nil error.
func (c *Coordinator) Owners(_ context.Context, rooms []storage.Room) ([]storage.Lease, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	out := make([]storage.Lease, len(rooms))
	for i, r := range rooms {
		if l, ok := c.held(r, now); ok {
			out[i] = l.Lease
		}
	}
	return out, nil
}

// Heartbeat implements storage.Coordinator. n.Expires is set to now+ttl,
// in UTC and without a monotonic reading, as a record read back from
// Redis has it.
func (c *Coordinator) Heartbeat(_ context.Context, n storage.NodeRecord, ttl time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	expires := time.Now().Add(ttl)
	n.Expires = expires.UTC()
	c.nodes[n.ID] = node{rec: n, expires: expires}
	return nil
}

// Nodes implements storage.Coordinator, dropping expired records as it
// goes.
func (c *Coordinator) Nodes(_ context.Context) ([]storage.NodeRecord, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var out []storage.NodeRecord
	for id, n := range c.nodes {
		if !now.Before(n.expires) {
			delete(c.nodes, id)
			continue
		}
		out = append(out, n.rec)
	}
	slices.SortFunc(out, func(a, b storage.NodeRecord) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Leave implements storage.Coordinator.
func (c *Coordinator) Leave(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, id)
	return nil
}
