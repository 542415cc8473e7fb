package roomgate

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/roomgate/roomgate/gateway"
)

// Config is what the serve command's flags set: one field per flag, each
// meaning exactly what the flag's value means (DESIGN §1, and the README's
// Configuration). Start from DefaultConfig, which holds the flags'
// defaults, and change what you need; the serve command does the same with
// the command line and the environment, so a Config and a command line
// take one code path. Errors from New name the flag of the field at fault.
//
// Two fields have no flag: Listener and Logger, for programs that run a
// Server themselves.
type Config struct {
	Addr     string       // -addr: listen address for HTTP, WebSocket and REST; default ":8080"
	Listener net.Listener // an open listener (tests' 127.0.0.1:0) to serve on instead of Addr; Run closes it
	Data     string       // -data: embedded store directory, used when Redis is empty; default "./data"

	Redis         string        // -redis: redis://host:port[/db], cluster mode; several comma-separated addresses use Redis Cluster
	RedisCluster  bool          // -redis-cluster: the Redis address is a Redis Cluster node
	NodeID        string        // -node-id: this node's id; empty: the host name, in cluster mode the Advertise address
	Advertise     string        // -advertise: host:port other nodes reach this one at; empty: derived from Addr
	LeaseTTL      time.Duration // -lease-ttl: room lease time-to-live in cluster mode; default 5s
	ClusterSecret string        // -cluster-secret: when set, node-to-node links must present it

	HibernateAfter   time.Duration // -hibernate-after: idle time after which a room leaves memory; default 10s
	MaxActiveRooms   int           // -max-active-rooms: rooms in memory past which idle ones hibernate; 0: no cap
	MaxRoomBytes     int64         // -max-room-bytes: a room's stored keys and values; default 128 MiB
	RoomCreatesPerIP float64       // -room-creates-per-ip: new rooms per second per client IP, burst 2×; 0: no cap
	MaxMessageBytes  int           // -max-message-bytes: larger messages close the socket with 1009; default 1 MiB
	AllowedOrigins   []string      // -allowed-origins: Origin allowlist for browsers; empty: any

	LogLevel string       // -log-level: debug, info, warn or error; default "info"
	Logger   *slog.Logger // where the node logs; nil: text on stderr at LogLevel, which a Logger overrides

	JWTSecret    string // -jwt-secret: HS256 secret of client tokens, at least 32 bytes
	JWTPublicKey string // -jwt-public-key: PEM file of the public key that signs client tokens
	JWTJWKSURL   string // -jwt-jwks-url: JWKS URL of the keys that sign client tokens
	JWTIssuer    string // -jwt-issuer: when set, a token's iss must equal it
	JWTAudience  string // -jwt-audience: when set, a token's aud must contain it

	TLSCert string // -tls-cert: PEM certificate (chain); with TLSKey, serve HTTPS and WSS
	TLSKey  string // -tls-key: PEM private key of TLSCert

	MaxConnsPerIP             int      // -max-conns-per-ip: sockets open from one client IP; 0: no cap
	HandshakesPerIP           float64  // -handshakes-per-ip: handshakes per second per client IP, burst 2×; 0: no cap
	MaxPendingHandshakesPerIP int      // -max-pending-handshakes-per-ip: handshakes in progress from one IP; default 256, at least 1
	MessagesPerSecond         float64  // -messages-per-second: per socket, burst 2×; 0: no cap
	MaxSocketsPerRoom         int      // -max-sockets-per-room: past it the handshake gets 503; default 32768, at least 1
	RESTPerSecond             float64  // -rest-per-second: REST requests per second per client IP, burst 2×; 0: no cap
	TrustedProxies            []string // -trusted-proxies: CIDRs (or addresses) of proxies whose X-Forwarded-For names the client
	FDReserve                 int      // -fd-reserve: descriptors kept for health checks, storage and links; 0: 5% of the limit, 64 to 4096
}

// DefaultConfig returns the serve command's defaults, the values its flags
// have when neither the command line nor the environment sets them.
func DefaultConfig() Config {
	return Config{
		Addr:                      ":8080",
		Data:                      "./data",
		LeaseTTL:                  5 * time.Second,
		HibernateAfter:            10 * time.Second,
		MaxRoomBytes:              128 << 20,
		MaxMessageBytes:           1 << 20,
		LogLevel:                  "info",
		MaxPendingHandshakesPerIP: 256,
		MaxSocketsPerRoom:         32768,
	}
}

// limits checks the limit fields and returns the gateway's limits; an
// error names the flag at fault.
func (c *Config) limits() (gateway.Limits, error) {
	var o gateway.Limits
	for _, f := range []struct {
		name string
		v    int
		min  int
	}{
		{"max-conns-per-ip", c.MaxConnsPerIP, 0},
		{"max-pending-handshakes-per-ip", c.MaxPendingHandshakesPerIP, 1},
		{"max-sockets-per-room", c.MaxSocketsPerRoom, 1},
		{"fd-reserve", c.FDReserve, 0},
	} {
		if f.v < f.min || f.v > math.MaxInt32 {
			return o, fmt.Errorf("-%s: %d is out of range (%d to %d)", f.name, f.v, f.min, math.MaxInt32)
		}
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"handshakes-per-ip", c.HandshakesPerIP},
		{"messages-per-second", c.MessagesPerSecond},
		{"rest-per-second", c.RESTPerSecond},
		{"room-creates-per-ip", c.RoomCreatesPerIP},
	} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return o, fmt.Errorf("-%s: %v is not a rate per second (0: no cap)", f.name, f.v)
		}
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && uint64(c.FDReserve) >= lim.Cur {
		return o, fmt.Errorf("-fd-reserve: %d leaves nothing under the open-file limit %d", c.FDReserve, lim.Cur)
	}
	proxies, err := parsePrefixes(c.TrustedProxies)
	if err != nil {
		return o, fmt.Errorf("-trusted-proxies: %w", err)
	}
	o = gateway.Limits{
		TrustedProxies:            proxies,
		MaxConnsPerIP:             c.MaxConnsPerIP,
		HandshakesPerIP:           c.HandshakesPerIP,
		MaxPendingHandshakesPerIP: c.MaxPendingHandshakesPerIP,
		MessagesPerSecond:         c.MessagesPerSecond,
		RESTPerSecond:             c.RESTPerSecond,
		RoomCreatesPerIP:          c.RoomCreatesPerIP,
		DescriptorReserve:         c.FDReserve,
	}
	return o, nil
}

// parsePrefixes reads CIDRs; a bare address stands for itself alone.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range list {
		v = strings.TrimSpace(v)
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is neither a CIDR nor an address", v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%q: write an IPv4 range as IPv4", v)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
