// Package storage holds the small interface the room runtime persists
// through, and its errors. Implementations live in subpackages so the
// runtime links only what it is given: storage/filestore (embedded, one
// node) and, in cluster mode, a Redis store (storage/redisstore), which is
// also the cluster's Coordinator; storage/localcoord is the Coordinator of
// a single node. storage/storagetest is the conformance suite every
// implementation passes.
//
// A Store is safe for concurrent use. The runtime keeps at most one Commit
// in flight per room, so a Store may apply one room's batches in the order
// they arrive without further coordination. Commits are asynchronous: a
// store queues them (CommitQueue) and applies as many as wait together.
package storage

import (
	"context"
	"errors"
	"time"
)

// CommitAndWait commits b and waits for the store's answer. Once queued,
// a batch may be applied at any moment, so the wait outlasts ctx: only the
// answer tells whether it was.
func CommitAndWait(ctx context.Context, s Store, r Room, b *Batch) error {
	done := make(chan error, 1)
	s.Commit(ctx, r, b, func(err error) { done <- err })
	return <-done
}

// PrefixEnd is the least string greater than every string starting with
// p, or "" when there is none (p is all 0xff): the exclusive upper bound
// of a prefix scan.
func PrefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}

// Errors a Store returns.
var (
	ErrClosed = errors.New("storage: store is closed")
	ErrFenced = errors.New("storage: fencing token is stale")
)

// Room names one room's storage.
type Room struct {
	Class string
	Name  string
}

func (r Room) String() string { return r.Class + "/" + r.Name }

// KV is one stored key and its value.
type KV struct {
	Key   string
	Value []byte
}

// ListOptions select keys in byte order: those starting with Prefix, at or
// after Start, before End (when set), at most Limit (0: all), last first
// when Reverse.
type ListOptions struct {
	Prefix  string
	Start   string
	End     string
	Limit   int
	Reverse bool
}

// Batch is one commit: the writes of one or more events of a room, applied
// all or nothing. DeleteAll goes first, then Deletes and Puts; a key is in
// at most one of Puts and Deletes. DeleteAll leaves the room's members: its
// sockets stay open.
type Batch struct {
	DeleteAll bool
	Puts      []KV
	Deletes   []string
	Members   []Member     // membership records to write; one with nil Data is removed
	Alarm     *AlarmChange // nil: leave the alarm as it is
	Token     uint64       // fencing token of the committing owner; 0 in embedded mode

	// Bytes is the store's answer, set before it calls done with nil: the
	// room's keys and values once the batch is applied, as Stat counts
	// them. The runtime keeps each room's size from it, without a read.
	Bytes int64
}

// Empty reports whether b changes nothing.
func (b *Batch) Empty() bool {
	return !b.DeleteAll && len(b.Puts) == 0 && len(b.Deletes) == 0 && len(b.Members) == 0 && b.Alarm == nil
}

// Member is one open socket of a room, persisted so that a room evicted from
// memory, or rebuilt on another node, knows its sockets. Data is opaque to
// the store (package hibernation encodes it).
type Member struct {
	ID   uint64
	Data []byte
}

// AlarmChange sets the room's one alarm to At, or deletes it when At is zero.
type AlarmChange struct {
	At time.Time
}

// Stat is what the room index knows of a room.
type Stat struct {
	Room    Room
	Keys    int
	Bytes   int64     // keys and values together
	Alarm   time.Time // zero: none
	Members int       // persisted sockets
}

// Due is an alarm whose time has come.
type Due struct {
	Room Room
	At   time.Time
}

// Store is a room's durable state: its keys, its alarm, its members, and
// the index of rooms that have any of them.
type Store interface {
	// Get returns the values of keys, nil where a key is absent.
	Get(ctx context.Context, r Room, keys ...string) ([][]byte, error)
	// List returns the keys o selects with their values.
	List(ctx context.Context, r Room, o ListOptions) ([]KV, error)
	// Commit queues b and returns without waiting; the store applies it
	// atomically and durably, sets b.Bytes, and then calls done, exactly
	// once: with nil when the batch survives a crash of the process and of the machine,
	// or with the error (ErrFenced, ErrClosed, ctx's error if it ended
	// before the batch was queued or applied). done runs on the store's
	// goroutine; on the caller's before Commit returns when the batch is
	// refused at once; or, for a batch that waited for room in a full
	// queue and was refused there, on that wait's own goroutine. It must
	// not block.
	Commit(ctx context.Context, r Room, b *Batch, done func(error))
	// Members returns the room's membership records in id order.
	Members(ctx context.Context, r Room) ([]Member, error)
	// Stat describes one room; ok is false when it has no keys, no alarm
	// and no members.
	Stat(ctx context.Context, r Room) (s Stat, ok bool, err error)
	// Rooms lists rooms with keys, an alarm or members, in (class, name) order,
	// starting after the room named by after (zero: from the start).
	Rooms(ctx context.Context, class, prefix string, after Room, limit int) ([]Stat, error)
	// DueAlarms returns up to limit alarms due at or before now, earliest first.
	DueAlarms(ctx context.Context, now time.Time, limit int) ([]Due, error)
	// NextAlarm returns the earliest alarm of all rooms; ok is false when there is none.
	NextAlarm(ctx context.Context) (at time.Time, ok bool, err error)
	// Ping reports whether the store can serve.
	Ping(ctx context.Context) error
	// Close releases the store; later calls return ErrClosed.
	Close() error
}

// ErrLeaseHeld is returned when a room's lease belongs to another node.
var ErrLeaseHeld = errors.New("storage: room lease is held by another node")

// Lease is one node's hold on a room in cluster mode.
type Lease struct {
	Node  string
	Token uint64 // fencing token: grows with every acquisition of the room
}

// NodeRecord is a node of the cluster as its last heartbeat described it.
type NodeRecord struct {
	ID          string    `json:"id"`
	Address     string    `json:"address"`
	Sockets     int       `json:"sockets"`
	ActiveRooms int       `json:"active_rooms"`
	StartedAt   time.Time `json:"started_at"`
	Expires     time.Time `json:"expires"`
}

// LeaseState is what a renewal found of one lease.
type LeaseState int8

const (
	LeaseUnknown LeaseState = iota // not asked: Redis (or its shard) did not answer
	LeaseRenewed                   // still the node's, extended
	LeaseLost                      // another node's now, or nobody's
)

// Coordinator is what the nodes of a cluster agree through: room leases,
// with their fencing tokens, and the registry of live nodes.
type Coordinator interface {
	// Acquire takes r's lease for node for ttl if nobody else holds it,
	// with a token greater than any given out for r before; a lease node
	// itself holds is taken anew, with a new token. When another node
	// holds it, it returns that node's lease and ErrLeaseHeld.
	Acquire(ctx context.Context, r Room, node string, ttl time.Duration) (Lease, error)
	// Renew extends the leases of rooms that node still holds, all in one
	// round trip; states[i] says what became of rooms[i]'s lease. A lease
	// that could not be asked about (a Redis Cluster shard away) is
	// LeaseUnknown and the others are answered all the same; err, when
	// not nil, says why some or all are unknown.
	Renew(ctx context.Context, node string, ttl time.Duration, rooms []Room, tokens []uint64) (states []LeaseState, err error)
	// Release gives up each of rooms' leases that leases[i] still holds,
	// all in one round trip (a draining node releases every room it ran).
	Release(ctx context.Context, rooms []Room, leases []Lease) error
	// Owners returns the lease held on each of rooms, all in one round trip;
	// a room nobody holds gets the zero Lease. A lease that cannot be read
	// leaves its room's zero and makes the call return an error, with the
	// other rooms' leases.
	Owners(ctx context.Context, rooms []Room) ([]Lease, error)
	// Heartbeat records n as alive until now+ttl.
	Heartbeat(ctx context.Context, n NodeRecord, ttl time.Duration) error
	// Nodes returns the nodes whose last heartbeat has not expired, by id.
	Nodes(ctx context.Context) ([]NodeRecord, error)
	// Leave removes node id from the registry at once.
	Leave(ctx context.Context, id string) error
}
