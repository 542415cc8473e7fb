package gateway

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus collectors. Labels stay bounded: a
// bad-input kind from a fixed list, and a close code only for codes in
// DESIGN §1.
type metrics struct {
	socketsOpen prometheus.Gauge
	opened      prometheus.Counter
	framesIn    prometheus.Counter
	framesOut   prometheus.Counter
	autoReplies prometheus.Counter
	badInput    *prometheus.CounterVec
	closesSent  *prometheus.CounterVec
	closed      *prometheus.CounterVec
}

// badInputKinds are the values of roomgate_bad_input_total's kind label.
var badInputKinds = []string{
	"handshake",         // not an HTTP request, or not a valid WebSocket upgrade
	"handshake_timeout", // the handshake did not finish within HandshakeTimeout
	"handshake_flood",   // refused: too many handshakes in progress
	"bad_name",          // class or room name breaks the naming rules
	"bad_query",         // query string that cannot be parsed, or a bad user or name
	"unknown_class",     // no such class
	"origin",            // Origin not in the allowlist
	"token_missing",     // no token, a key being configured: 401
	"token_invalid",     // a token that does not verify (signature, algorithm, nbf, iss, aud, claims): 401
	"token_expired",     // a token past its exp: 401
	"token_scope",       // a token whose rooms do not cover the room: 403
	"not_admin",         // REST with a valid token without admin: true: 403
	"admin_remote",      // REST in dev mode from another machine or through a proxy: 403
	"admin_host",        // REST in dev mode with a Host that is not a loopback name (DNS rebinding): 403
	"cross_site",        // REST in dev mode that a page of another site could have sent: 403
	"protocol",          // RFC 6455 violation: closed with 1002
	"utf8",              // invalid UTF-8 in a text message or close reason: 1007
	"too_big",           // message over MaxMessageBytes: 1009; a REST body over it: 413
	"incomplete",        // a message not finished within MessageTimeout: 1008
	"slow_consumer",     // send queue overflowed, or its client read nothing for WriteTimeout: 1008
	"send_too_big",      // a room sent a frame larger than MaxQueueBytes: 1009
	"bad_request",       // REST: bad limit or cursor, unreadable body, unparsable socket id: 400 or 404
	"no_such_method",    // RPC to a method the class does not declare: 404
	"rpc_argument",      // RPC whose body does not decode into the method's argument: 400
	"rpc_scope",         // RPC with a token whose rpc claim does not list the method: 403
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		socketsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roomgate_sockets_open",
			Help: "WebSocket connections currently open on this node.",
		}),
		opened: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomgate_sockets_opened_total",
			Help: "WebSocket connections upgraded on this node.",
		}),
		framesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomgate_frames_in_total",
			Help: "WebSocket frames received from clients, control frames included.",
		}),
		framesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomgate_frames_out_total",
			Help: "WebSocket frames sent to clients, control frames included.",
		}),
		autoReplies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomgate_auto_responses_total",
			Help: "Messages answered at the edge with their room's auto-response, without waking the room.",
		}),
		badInput: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomgate_bad_input_total",
			Help: "Handshakes, frames and REST requests refused as bad input, by kind.",
		}, []string{"kind"}),
		closesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomgate_close_frames_sent_total",
			Help: "Close handshakes this node started, by close code.",
		}, []string{"code"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomgate_sockets_closed_total",
			Help: "WebSocket connections ended, by the close code that ended them.",
		}, []string{"code"}),
	}
	for _, c := range []prometheus.Collector{m.socketsOpen, m.opened, m.framesIn, m.framesOut, m.autoReplies, m.badInput, m.closesSent, m.closed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, k := range badInputKinds {
		m.badInput.WithLabelValues(k) // export zeros, so a dashboard sees every kind from the start
	}
	return m, nil
}

// codeLabel keeps the code label's values to the codes of DESIGN §1.
func codeLabel(code int) string {
	switch code {
	case 1000, 1001, 1002, 1005, 1006, 1007, 1008, 1009, 1011, 1012, 4401, 4403, 4404:
		return strconv.Itoa(code)
	}
	return "other"
}
