package gateway

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/rooms"
)

// The limits at the edge (DESIGN §1). The rate caps (handshakes and REST
// requests per client, messages per socket) and the sockets per client are
// off by default: clients behind one NAT share an address and load tests
// come from one host. What is always on protects the node itself: the
// handshakes in progress per address, the descriptor reserve, and the
// sockets per room. Every refusal is counted in roomgate_limited_total.

// Errors of the limits; limitError says which limit refused.
var (
	errRateLimited    = errors.New("gateway: too many requests from this client, try again later")
	errTooManySockets = errors.New("gateway: too many sockets open from this client")
	errTooManyRooms   = errors.New("gateway: too many new rooms from this client, try again later")
	errNodeFull       = errors.New("gateway: node is short of file descriptors, try again later")
)

// limitError is a refusal by one of the limits: kind labels
// roomgate_limited_total, and retry, when set, is sent as Retry-After.
type limitError struct {
	err   error
	kind  string
	retry time.Duration
}

func (e *limitError) Error() string { return e.err.Error() }
func (e *limitError) Unwrap() error { return e.err }

// limitKinds are the values of roomgate_limited_total's kind label.
var limitKinds = []string{
	"conns_per_ip",      // 429: MaxConnsPerIP sockets open from the client
	"handshakes_per_ip", // 429 with Retry-After: HandshakesPerIP
	"pending_per_ip",    // connection closed: MaxPendingHandshakesPerIP in progress from the peer
	"messages",          // close 1008 rate_limited: MessagesPerSecond on one socket
	"room_full",         // 503 room_full before the upgrade, close 1008 after it: rooms.Options.MaxSockets
	"rest_per_ip",       // 429 with Retry-After: RESTPerSecond
	"descriptors",       // 503 node_full: past the descriptor reserve
}

// limiter holds the limits' state: per client, and the process's
// descriptors. Every method is safe for concurrent use.
type limiter struct {
	ips     *ipTable
	fds     *fdGauge
	limited *prometheus.CounterVec

	// The message cap as GCRA parameters, in nanoseconds: one message per
	// interval, and up to tolerance ahead of that schedule (a burst).
	msgInterval, msgTolerance int64
}

func newLimiter(o *Options) (*limiter, error) {
	fds, err := newFDGauge(o.DescriptorReserve)
	if err != nil {
		return nil, err
	}
	l := &limiter{
		ips: newIPTable(o.MaxTrackedIPs),
		fds: fds,
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomgate_limited_total",
			Help: "Handshakes, connections, messages and REST requests refused by a limit, by kind.",
		}, []string{"kind"}),
	}
	if err := o.Metrics.Register(l.limited); err != nil {
		return nil, err
	}
	for _, k := range limitKinds {
		l.limited.WithLabelValues(k) // export zeros, so a dashboard sees every kind from the start
	}
	if o.MessagesPerSecond > 0 {
		l.msgInterval = int64(float64(time.Second) / o.MessagesPerSecond)
		l.msgTolerance = int64(burstOf(o.MessagesPerSecond)-1) * l.msgInterval
	}
	return l, nil
}

func (l *limiter) count(kind string) { l.limited.WithLabelValues(kind).Inc() }

// countLimit counts err in roomgate_limited_total if a limit refused it; a
// room's refusal of a socket for being full comes from rooms as it is.
func (l *limiter) countLimit(err error) {
	var le *limitError
	switch {
	case errors.As(err, &le):
		l.count(le.kind)
	case errors.Is(err, rooms.ErrRoomFull):
		l.count("room_full")
	}
}

// retryAfter is the Retry-After header's value for err, empty when none.
func retryAfter(err error) string {
	var le *limitError
	if !errors.As(err, &le) || le.retry <= 0 {
		return ""
	}
	return strconv.Itoa(int(math.Ceil(le.retry.Seconds())))
}

// pendingCap is how many handshakes may be in progress at once. Past the
// descriptor line it shrinks to half the reserve, so handshakes that will
// be refused anyway cannot take the descriptors health checks need.
func (s *Server) pendingCap() int64 {
	max := int64(s.o.MaxPendingHandshakes)
	if s.limits.fds.estimated() {
		return min(max, (s.limits.fds.limit-s.limits.fds.soft.Load())/2)
	}
	return max
}

// startPending counts a connection's handshake against its TCP peer's
// MaxPendingHandshakesPerIP, before a byte of it is read: this is what
// stops one address trickling thousands of handshakes (slowloris) from
// filling MaxPendingHandshakes for everyone. A trusted proxy is exempt:
// it speaks for many clients, and reads their headers before it connects.
func (s *Server) startPending(c net.Conn) bool {
	// A TLS connection holds three: the TCP socket and both ends of the
	// pair its pump serves (tls.go).
	n := int64(1)
	if s.o.TLS != nil {
		n = 3
	}
	s.limits.fds.accepted(n)
	ip := connIP(c)
	if isTrusted(ip, s.o.TrustedProxies) || s.limits.ips.startPending(ipKey(ip), int32(s.o.MaxPendingHandshakesPerIP)) {
		return true
	}
	s.limits.count("pending_per_ip")
	return false
}

func (s *Server) donePending(c net.Conn) {
	if ip := connIP(c); !isTrusted(ip, s.o.TrustedProxies) {
		s.limits.ips.donePending(ipKey(ip))
	}
}

// admitLimits runs first in admission: who the client is, the descriptor
// reserve, and the handshake rate, which every attempt pays, good or bad.
func (s *Server) admitLimits(h *handshake) error {
	h.ip = clientIP(peerIP(h.remote), h.xff, s.o.TrustedProxies)
	if s.limits.fds.pressed() {
		return &limitError{err: errNodeFull, kind: "descriptors"}
	}
	if s.o.HandshakesPerIP > 0 {
		if ok, wait := s.limits.ips.allow(ipKey(h.ip), handshakeBucket, s.o.HandshakesPerIP); !ok {
			return &limitError{err: errRateLimited, kind: "handshakes_per_ip", retry: wait}
		}
	}
	return nil
}

// reserveSocket runs last in the gateway's own admission: the client's
// sockets, of which it takes one.
// The socket adopts the reservation (socketQuota); a handshake that fails
// later gives it back (abandon).
func (s *Server) reserveSocket(h *handshake) error {
	if s.o.MaxConnsPerIP > 0 {
		e, ok := s.limits.ips.addConn(ipKey(h.ip), int32(s.o.MaxConnsPerIP))
		if !ok {
			return &limitError{err: errTooManySockets, kind: "conns_per_ip"}
		}
		h.slot = e
	}
	return nil
}

// abandon gives back the socket a handshake reserved and did not open.
func (s *Server) abandon(h *handshake) {
	if h.slot != nil {
		s.limits.ips.doneConn(h.slot)
		h.slot = nil
	}
}

// socketQuota is a socket's share of the limits: its client's count, and
// the message cap's schedule. A socket has one only while a cap that needs
// it is on, so with the defaults an idle socket pays one nil pointer.
type socketQuota struct {
	client *ipEntry // counted in its conns while the socket is open; nil without MaxConnsPerIP
	tat    int64    // GCRA: when the next message is due, Unix nanoseconds. Only the reader touches it
}

// quotaFor hands the handshake's reservation to its socket.
func (s *Server) quotaFor(h *handshake) *socketQuota {
	if h.slot == nil && s.limits.msgInterval == 0 {
		return nil
	}
	q := &socketQuota{client: h.slot}
	h.slot = nil
	return q
}

// socketEnded gives back what the socket's quota held.
func (s *Server) socketEnded(q *socketQuota) {
	if q != nil && q.client != nil {
		s.limits.ips.doneConn(q.client)
		q.client = nil
	}
}

// overRate applies MessagesPerSecond to one message of s, closing the
// socket with 1008 rate_limited past it. GCRA keeps the bucket in one
// number: a message is due one interval after the last, and may come up
// to a burst's worth of intervals early. Only the reader calls it.
func (s *socket) overRate() bool {
	l := s.srv.limits
	if s.quota == nil || l.msgInterval == 0 {
		return false
	}
	now := time.Now().UnixNano()
	tat := max(s.quota.tat, now)
	if tat-now > l.msgTolerance {
		l.count("messages")
		s.Close(closePolicy, "rate_limited")
		return true
	}
	s.quota.tat = tat + l.msgInterval
	return false
}

// requestIP is clientIP for a request net/http serves.
func (s *Server) requestIP(r *http.Request) netip.Addr {
	peer := peerIP(r.RemoteAddr)
	if !isTrusted(peer, s.o.TrustedProxies) {
		return peer
	}
	return clientIP(peer, strings.Join(r.Header.Values("X-Forwarded-For"), ","), s.o.TrustedProxies)
}

// limitREST applies RESTPerSecond to each client of the REST API, before
// anything else looks at the request, so a flood costs one bucket check.
func (s *Server) limitREST(next http.Handler) http.Handler {
	if s.o.RESTPerSecond == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, wait := s.limits.ips.allow(ipKey(s.requestIP(r)), restBucket, s.o.RESTPerSecond); !ok {
			s.fail(w, &limitError{err: errRateLimited, kind: "rest_per_ip", retry: wait})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// shedLoad refuses plain HTTP past the descriptor line, but for health
// checks, metrics and node-to-node links: those are what an operator and
// the cluster need to see and fix a node in trouble.
func (s *Server) shedLoad(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.limits.fds.pressed() {
			w.Header().Set("Connection", "close")
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics", rooms.LinkPath:
			default:
				s.fail(w, &limitError{err: errNodeFull, kind: "descriptors"})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// watchDescriptors turns HTTP keep-alive off while the process is past its
// descriptor line, which also closes the idle keep-alive connections at
// once; on again once it is back under.
func (s *Server) watchDescriptors(hs *http.Server) {
	f := func(over bool) {
		hs.SetKeepAlivesEnabled(!over)
		if over {
			s.log.Warn("open descriptors past the reserve line: refusing new sockets, keep-alive off",
				"line", s.limits.fds.soft.Load(), "limit", s.limits.fds.limit)
		} else {
			s.log.Info("open descriptors back under the reserve line", "line", s.limits.fds.soft.Load())
		}
	}
	s.limits.fds.onChange.Store(&f)
}

// Limits are the Options of the limits, embedded in Options. A zero field
// means its default; DESIGN §1 gives the flag of each.
type Limits struct {
	TrustedProxies            []netip.Prefix // peers whose X-Forwarded-For names the client; default none: the peer is the client
	MaxConnsPerIP             int            // sockets open per client; past it 429; default 0: no cap
	HandshakesPerIP           float64        // per second per client, burst 2×; past it 429 with Retry-After; default 0: no cap
	MaxPendingHandshakesPerIP int            // in progress per TCP peer; past it the connection is closed; default 256
	MessagesPerSecond         float64        // per socket, burst 2×; past it close 1008 rate_limited; default 0: no cap
	RESTPerSecond             float64        // REST requests per second per client, burst 2×; past it 429 with Retry-After; default 0: no cap
	RoomCreatesPerIP          float64        // rooms a client's sockets may create per second, burst 2×; past it 429 with Retry-After; default 0: no cap
	DescriptorReserve         int            // descriptors kept for health checks, metrics, storage and links; default 5% of RLIMIT_NOFILE, 64 to 4096
	MaxTrackedIPs             int            // clients whose state is kept before the least recently seen idle ones go; default 65536
	HTTPIdleTimeout           time.Duration  // an idle plain-HTTP keep-alive connection is closed after it; default 30s
}

func (o *Limits) init() error {
	if o.MaxPendingHandshakesPerIP == 0 {
		o.MaxPendingHandshakesPerIP = 256
	}
	if o.MaxTrackedIPs == 0 {
		o.MaxTrackedIPs = 1 << 16
	}
	if o.HTTPIdleTimeout == 0 {
		o.HTTPIdleTimeout = 30 * time.Second
	}
	for name, v := range map[string]float64{"HandshakesPerIP": o.HandshakesPerIP, "MessagesPerSecond": o.MessagesPerSecond, "RESTPerSecond": o.RESTPerSecond, "RoomCreatesPerIP": o.RoomCreatesPerIP} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("gateway: %s must be a rate per second, 0 for no cap; got %v", name, v)
		}
	}
	for _, p := range o.TrustedProxies {
		if !p.IsValid() {
			return errors.New("gateway: TrustedProxies holds an invalid prefix")
		}
	}
	if o.MaxConnsPerIP < 0 || o.MaxPendingHandshakesPerIP < 0 || o.DescriptorReserve < 0 || o.MaxTrackedIPs < 0 || o.HTTPIdleTimeout < 0 {
		return errors.New("gateway: negative option")
	}
	if o.MaxConnsPerIP > math.MaxInt32 || o.MaxPendingHandshakesPerIP > math.MaxInt32 {
		return errors.New("gateway: MaxConnsPerIP and MaxPendingHandshakesPerIP must fit 32 bits")
	}
	return nil
}
