package roomgate

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// bindFlags defines the serve command's flags on fs, each writing its
// field of c and defaulting to the field's present value: parse into a
// DefaultConfig and the flags' defaults are DefaultConfig's.
func (c *Config) bindFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen address for HTTP, WebSocket and REST")
	fs.StringVar(&c.Data, "data", c.Data, "embedded store directory")
	fs.IntVar(&c.MaxMessageBytes, "max-message-bytes", c.MaxMessageBytes, "larger messages close the socket with 1009")
	fs.Var(list{&c.AllowedOrigins}, "allowed-origins", "comma-separated Origin allowlist for browsers (empty: any)")
	fs.DurationVar(&c.HibernateAfter, "hibernate-after", c.HibernateAfter, "idle time after which a room leaves memory (its sockets stay open)")
	fs.IntVar(&c.MaxActiveRooms, "max-active-rooms", c.MaxActiveRooms, "rooms in memory past which the least recently used idle ones hibernate (0: no cap)")
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "this node's id (default: the host name; in cluster mode the -advertise address)")
	fs.StringVar(&c.Redis, "redis", c.Redis, "redis://host:port[/db]: cluster mode on Redis; several comma-separated addresses use Redis Cluster")
	fs.BoolVar(&c.RedisCluster, "redis-cluster", c.RedisCluster, "the -redis address is a Redis Cluster node")
	fs.StringVar(&c.Advertise, "advertise", c.Advertise, "this node's host:port as other nodes reach it (default: derived from -addr)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "room lease time-to-live in cluster mode")
	fs.StringVar(&c.ClusterSecret, "cluster-secret", c.ClusterSecret, "when set, node-to-node links must present it")
	fs.Int64Var(&c.MaxRoomBytes, "max-room-bytes", c.MaxRoomBytes, "a room's stored keys and values; a write past it fails with ErrLimit (chat answers storage_full)")
	fs.Float64Var(&c.RoomCreatesPerIP, "room-creates-per-ip", c.RoomCreatesPerIP, "new rooms one client IP may create per second, burst 2×; past it the handshake gets 429 with Retry-After (0: no cap)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")

	fs.StringVar(&c.JWTSecret, "jwt-secret", c.JWTSecret, "HS256 secret of client tokens, at least 32 bytes; prefer ROOMGATE_JWT_SECRET, as a flag shows in ps")
	fs.StringVar(&c.JWTPublicKey, "jwt-public-key", c.JWTPublicKey, "PEM file of the public key that signs client tokens: RSA, ECDSA or Ed25519")
	fs.StringVar(&c.JWTJWKSURL, "jwt-jwks-url", c.JWTJWKSURL, "JWKS URL of the keys that sign client tokens; fetched, cached and rotated by kid")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", c.JWTIssuer, "when set, a token's iss must equal it")
	fs.StringVar(&c.JWTAudience, "jwt-audience", c.JWTAudience, "when set, a token's aud must contain it")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "PEM certificate (chain): serve HTTPS and WSS on -addr; reloaded on SIGHUP")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "PEM private key of -tls-cert")

	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", c.MaxConnsPerIP, "sockets open from one client IP; past it the handshake gets 429 (0: no cap)")
	fs.Float64Var(&c.HandshakesPerIP, "handshakes-per-ip", c.HandshakesPerIP, "handshakes per second per client IP, burst 2×; past it 429 with Retry-After (0: no cap)")
	fs.IntVar(&c.MaxPendingHandshakesPerIP, "max-pending-handshakes-per-ip", c.MaxPendingHandshakesPerIP, "handshakes in progress from one IP (slowloris); past it the connection is closed")
	fs.Float64Var(&c.MessagesPerSecond, "messages-per-second", c.MessagesPerSecond, "messages per second per socket, burst 2×; past it the socket is closed with 1008 rate_limited (0: no cap)")
	fs.IntVar(&c.MaxSocketsPerRoom, "max-sockets-per-room", c.MaxSocketsPerRoom, "sockets in one room; past it the handshake gets 503 room_full")
	fs.Float64Var(&c.RESTPerSecond, "rest-per-second", c.RESTPerSecond, "REST requests per second per client IP, burst 2×; past it 429 with Retry-After (0: no cap)")
	fs.Var(list{&c.TrustedProxies}, "trusted-proxies", "comma-separated CIDRs (or addresses) of proxies whose X-Forwarded-For names the client IP")
	fs.IntVar(&c.FDReserve, "fd-reserve", c.FDReserve, "file descriptors kept for health checks, metrics, storage and links; past the open-file limit minus this, new sockets get 503 (0: 5% of the limit, 64 to 4096)")
}

// list is a comma-separated flag over a []string; each Set replaces the
// whole list, as a string flag would.
type list struct{ p *[]string }

func (l list) String() string {
	if l.p == nil { // flag.isZeroValue calls String on a zero list
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l list) Set(s string) error {
	*l.p = splitList(s)
	return nil
}

// parseFlags applies flag > environment > default: a flag not given on the
// command line takes ROOMGATE_<NAME> from the environment when it is set.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "ROOMGATE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && !given[f.Name] && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
		}
	})
	return err
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
