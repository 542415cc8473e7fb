// Options of a Runtime and their defaults.

package rooms

import (
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/rooms/internal/linknet"
	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/localcoord"
)

// soleLeaseTTL is the lease of a node that shares its store with none: a
// day, renewed every eight hours.
const soleLeaseTTL = 24 * time.Hour

// Options configure a Runtime. A zero field means its default.
type Options struct {
	Store           storage.Store         // required
	Metrics         prometheus.Registerer // required
	Logger          *slog.Logger          // default: discards
	NodeID          string                // this node's id, in the admin API; default "local"
	Address         string                // this node's host:port, in the admin API
	HibernateAfter  time.Duration         // a room with no event for this long leaves memory, its sockets stay open; default 10s
	MaxActiveRooms  int                   // rooms in memory past which the least recently used idle ones are evicted; default 0: no cap
	MaxQueuedEvents int                   // per room; past it the socket with the most queued messages is closed with 1008; default 10000
	MaxSockets      int                   // per room; past it Connect fails with ErrRoomFull; default 32768, as Durable Objects allows
	MaxRoomBytes    int64                 // a room's stored keys and values; a write past it fails with ErrLimit; default 128 MiB
	CommitTimeout   time.Duration         // for one commit; default 10s
	CallTimeout     time.Duration         // an RPC call's deadline when its ctx has none; default 10s
	AlarmRetryBase  time.Duration         // first retry of a failed OnAlarm, doubling after; default 2s
	StartupWakes    int                   // rooms running at once while a restart wakes those whose sockets died with the last run; default 1024
	Clock           func() time.Time      // the time eviction judges idleness by; default time.Now. Tests move it ahead

	// Every room runs on the node holding its lease, taken through
	// Coordinator: one shared by the nodes of a cluster (Redis), where
	// events from other edges reach the room over links to the other
	// nodes and Address is where they dial this node; or, when nil, an
	// in-process one of which this node is the only member. The same
	// placement and lease code runs either way.
	Coordinator   storage.Coordinator
	LeaseTTL      time.Duration // default 5s; with no Coordinator, always soleLeaseTTL
	ClusterSecret string        // when set, links must present it
	// Transport carries the links; default TCP, upgraded from HTTP on
	// the node's own listener (LinkHandler). For tests: the hosts of an
	// in-memory linknet.Network drop, delay and partition links.
	Transport linknet.Transport

	// Shortcuts that are safe only when no other node can take a room
	// over, because none shares the store: all three are on when Coordinator
	// is nil, and off with a shared one unless set.
	//
	// LazyMembers saves a socket's membership record only before its room
	// leaves memory (or drains), not with the event that changed it: a
	// burst of connects costs no writes. A crash loses only the records of
	// sockets that died with the process.
	LazyMembers bool
	// WakeLostOnStart wakes, once at start, every room with persisted
	// members, so each hears (OnClose, 1006) of the sockets that died with
	// the last run. In a cluster the registry tells the rooms instead.
	WakeLostOnStart bool
	// Unfenced commits carry no fencing token: the store's own lock on its
	// directory keeps any other process out, and the in-process
	// Coordinator's tokens start again with each process, below those a
	// store would have kept.
	Unfenced bool
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
	if o.MaxRoomBytes == 0 {
		// Durable Objects' limit for a key-value object (a SQLite one
		// allows 10 GB). A room's state is read into one node's memory and
		// its keys in one Redis hash slot: large rooms belong in their own
		// database.
		o.MaxRoomBytes = 128 << 20
	}
	if o.MaxSockets == 0 {
		o.MaxSockets = 32768
	}
	if o.CommitTimeout == 0 {
		o.CommitTimeout = 10 * time.Second
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = 10 * time.Second
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
	if o.Transport == nil {
		o.Transport = linknet.TCP{}
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 5 * time.Second
	}
	switch {
	case o.Coordinator == nil:
		o.Coordinator = localcoord.New()
		o.LazyMembers, o.WakeLostOnStart, o.Unfenced = true, true, true
		// No other node can take a lease over, so one that lapsed while
		// the process stood still (SIGSTOP, a frozen VM, swapping) would
		// drop rooms for nobody's sake, and with them the membership
		// records LazyMembers had not saved: their sockets would stay
		// open and hear nothing.
		o.LeaseTTL = soleLeaseTTL
	case o.Address == "":
		return errors.New("rooms: a shared Coordinator needs Options.Address, where other nodes reach this one")
	}
	if o.HibernateAfter < 0 || o.LeaseTTL < 0 || o.MaxActiveRooms < 0 || o.MaxQueuedEvents < 0 || o.MaxSockets < 0 || o.MaxRoomBytes < 0 || o.CommitTimeout < 0 || o.CallTimeout < 0 || o.AlarmRetryBase < 0 || o.StartupWakes < 0 {
		return errors.New("rooms: negative option")
	}
	return nil
}
