package rooms

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	rooms         *prometheus.GaugeVec
	running       prometheus.Gauge
	wakes         prometheus.Counter
	evictions     *prometheus.CounterVec
	wakeSeconds   prometheus.Histogram
	events        prometheus.Counter
	commitSeconds prometheus.Histogram
	failures      *prometheus.CounterVec
	overloaded    prometheus.Counter
	limited       *prometheus.CounterVec
	alarmsFired   prometheus.Counter
	badInput      *prometheus.CounterVec
	rpcCalls      *prometheus.CounterVec

	// Cluster mode.
	fencedCommits *prometheus.CounterVec
	leasesLost    prometheus.Counter
	leases        prometheus.Gauge
	forwarded     *prometheus.CounterVec
	linkErrors    *prometheus.CounterVec
	links         prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rooms: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "roomgate_rooms", Help: "Rooms on this node by state: active (in memory) or hibernated (out of memory, sockets open).",
		}, []string{"state"}),
		wakes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomgate_room_wakes_total", Help: "Room instances built: a room came into memory for an event.",
		}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomgate_room_evictions_total", Help: "Rooms evicted from memory, by reason: idle (hibernate-after) or pressure (max-active-rooms).",
		}, []string{"reason"}),
		wakeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "roomgate_room_wake_seconds", Help: "Time from building a room instance to the end of its OnStart: reading its members and starting the handler.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roomgate_rooms_running", Help: "Room instances with a goroutine: those that had an event in the last second.",
		}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomgate_room_events_total", Help: "Events run by rooms: connects, messages, closes, alarms, requests.",
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "roomgate_room_commit_seconds", Help: "Time to commit one batch of a room's writes.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomgate_room_failures_total", Help: "Room failures by what failed: start, handler, alarm, commit (the instance is reset); wake (its members could not be read); membership (a corrupt membership record: its socket is closed); lease (cluster: a room's lease could not be taken or read, e.g. Redis down or a corrupt lease: its event is refused with 1012/503).",
		}, []string{"reason"}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomgate_room_overloaded_total", Help: "Messages refused because their room had too many queued events: the new message, or those queued by the socket with the most, which is closed; and RPC calls refused for the same reason.",
		}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomgate_room_limited_total", Help: "Requests refused by a room limit, by kind: storage_quota (a write that would take a room past -max-room-bytes fails with ErrLimit); schedule (a schedule name over 256 bytes, a payload over 16 KiB, or a time the stores cannot hold); reserved_key (a storage key starting with byte 0xff, kept for schedules).",
		}, []string{"kind"}),
		alarmsFired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomgate_alarms_fired_total", Help: "Alarms whose OnAlarm succeeded.",
		}),
		badInput: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomgate_room_bad_input_total", Help: "Client messages a room class refused, by class and kind.",
		}, []string{"class", "kind"}),
		rpcCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomgate_rpc_calls_total", Help: "RPC calls this node made to rooms (Runtime.Call, Room.Call, REST), by outcome: ok, user_error (the method answered a UserError), failed (the method failed or its commit did), no_such_method, bad_argument, call_cycle, timeout, other (e.g. draining).",
		}, []string{"outcome"}),
		fencedCommits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomgate_fenced_commits_total", Help: "Writes refused because another node took the room over: commits Redis refused for a stale fencing token (where=store), and frames an edge dropped from a former owner (where=edge).",
		}, []string{"where"}),
		leasesLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomgate_leases_lost_total", Help: "Rooms this node stopped running because their lease was taken over or could not be renewed in time.",
		}),
		leases: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roomgate_leases", Help: "Room leases this node holds (cluster mode).",
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomgate_forwarded_total", Help: "Link frames between nodes, by direction (in, out) and type.",
		}, []string{"direction", "type"}),
		linkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomgate_link_errors_total", Help: "Node-to-node link failures: dial, lost (a link closed under traffic), refused (bad secret or handshake), malformed (a bad frame), dropped (frames for a node that could not be reached), gap (a room closed its sockets on a node after frames for them may have been lost).",
		}, []string{"reason"}),
		links: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roomgate_links", Help: "Links this node dialed to other nodes; it sends its requests over them (each node dials its own, so a pair has one each way).",
		}),
	}
	for _, c := range []prometheus.Collector{m.rooms, m.wakes, m.evictions, m.wakeSeconds, m.running, m.events, m.commitSeconds, m.failures, m.overloaded, m.limited, m.alarmsFired, m.badInput, m.rpcCalls,
		m.fencedCommits, m.leasesLost, m.leases, m.forwarded, m.linkErrors, m.links} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{"start", "handler", "alarm", "commit", "wake", "membership", "lease"} {
		m.failures.WithLabelValues(r)
	}
	for _, o := range []string{"ok", "user_error", "failed", "no_such_method", "bad_argument", "call_cycle", "timeout", "other"} {
		m.rpcCalls.WithLabelValues(o)
	}
	for _, s := range []string{"active", "hibernated"} {
		m.rooms.WithLabelValues(s)
	}
	for _, w := range []string{"store", "edge"} {
		m.fencedCommits.WithLabelValues(w)
	}
	for _, r := range []string{"dial", "lost", "refused", "malformed", "dropped", "gap"} {
		m.linkErrors.WithLabelValues(r)
	}
	for _, r := range []string{"idle", "pressure"} {
		m.evictions.WithLabelValues(r)
	}
	for _, k := range []string{"storage_quota", "schedule", "reserved_key"} {
		m.limited.WithLabelValues(k)
	}
	return m, nil
}
