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
)

// Options configure a Runtime. A zero field means its default.
type Options struct {
	Store           storage.Store         // required
	Metrics         prometheus.Registerer // required
	Logger          *slog.Logger          // default: discards
	NodeID          string                // this node's id, in the admin API; default "local"
	Address         string                // this node's host:port, in the admin API
	HibernateAfter  time.Duration         // a room with no event for this long leaves memory, its sockets stay open; default 10s
	MaxActiveRooms  int                   // rooms in memory past which the least recently used idle ones are evicted; default 0: no cap
	MaxQueuedEvents int                   // per room; past it a socket's message closes it with 1008; default 10000
	CommitTimeout   time.Duration         // for one commit; default 10s
	AlarmRetryBase  time.Duration         // first retry of a failed OnAlarm, doubling after; default 2s
	StartupWakes    int                   // rooms running at once while a restart wakes those whose sockets died with the last run; default 1024
	Clock           func() time.Time      // the time eviction judges idleness by; default time.Now. Tests move it ahead

	// Cluster mode, when Coordinator is set: each room runs on the node
	// holding its lease, events from other edges reach it over links to
	// the other nodes, and Address is where they dial this node.
	Coordinator   storage.Coordinator
	LeaseTTL      time.Duration // default 5s
	ClusterSecret string        // when set, links must present it
	// Transport carries the links; default TCP, upgraded from HTTP on
	// the node's own listener (LinkHandler). For tests: the hosts of an
	// in-memory linknet.Network drop, delay and partition links.
	Transport linknet.Transport
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
	if o.CommitTimeout == 0 {
		o.CommitTimeout = 10 * time.Second
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
	if o.Coordinator != nil && o.Address == "" {
		return errors.New("rooms: cluster mode needs Options.Address, where other nodes reach this one")
	}
	if o.HibernateAfter < 0 || o.LeaseTTL < 0 || o.MaxActiveRooms < 0 || o.MaxQueuedEvents < 0 || o.CommitTimeout < 0 || o.AlarmRetryBase < 0 || o.StartupWakes < 0 {
		return errors.New("rooms: negative option")
	}
	return nil
}
