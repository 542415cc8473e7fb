package roomgate

import (
	"flag"
	"fmt"
	"math"
	"net/netip"
	"syscall"

	"github.com/roomgate/roomgate/gateway"
)

// limitFlags are serve's limit flags (DESIGN §1); each is also read from
// ROOMGATE_<FLAG> like every other flag.
type limitFlags struct {
	maxConnsPerIP     *int
	handshakesPerIP   *float64
	maxPendingPerIP   *int
	messagesPerSecond *float64
	maxSocketsPerRoom *int
	restPerSecond     *float64
	trustedProxies    *string
	fdReserve         *int
}

func addLimitFlags(fs *flag.FlagSet) *limitFlags {
	return &limitFlags{
		maxConnsPerIP:     fs.Int("max-conns-per-ip", 0, "sockets open from one client IP; past it the handshake gets 429 (0: no cap)"),
		handshakesPerIP:   fs.Float64("handshakes-per-ip", 0, "handshakes per second per client IP, burst 2×; past it 429 with Retry-After (0: no cap)"),
		maxPendingPerIP:   fs.Int("max-pending-handshakes-per-ip", 256, "handshakes in progress from one IP (slowloris); past it the connection is closed"),
		messagesPerSecond: fs.Float64("messages-per-second", 0, "messages per second per socket, burst 2×; past it the socket is closed with 1008 rate_limited (0: no cap)"),
		maxSocketsPerRoom: fs.Int("max-sockets-per-room", 32768, "sockets in one room; past it the handshake gets 503 room_full"),
		restPerSecond:     fs.Float64("rest-per-second", 0, "REST requests per second per client IP, burst 2×; past it 429 with Retry-After (0: no cap)"),
		trustedProxies:    fs.String("trusted-proxies", "", "comma-separated CIDRs (or addresses) of proxies whose X-Forwarded-For names the client IP"),
		fdReserve:         fs.Int("fd-reserve", 0, "file descriptors kept for health checks, metrics, storage and links; past the open-file limit minus this, new sockets get 503 (0: 5% of the limit, 64 to 4096)"),
	}
}

// gateway checks the flags and returns the gateway's limits; an error
// names the flag at fault.
func (l *limitFlags) gateway() (gateway.Limits, error) {
	var o gateway.Limits
	for _, f := range []struct {
		name string
		v    int
		min  int
	}{
		{"max-conns-per-ip", *l.maxConnsPerIP, 0},
		{"max-pending-handshakes-per-ip", *l.maxPendingPerIP, 1},
		{"max-sockets-per-room", *l.maxSocketsPerRoom, 1},
		{"fd-reserve", *l.fdReserve, 0},
	} {
		if f.v < f.min || f.v > math.MaxInt32 {
			return o, fmt.Errorf("-%s: %d is out of range (%d to %d)", f.name, f.v, f.min, math.MaxInt32)
		}
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"handshakes-per-ip", *l.handshakesPerIP},
		{"messages-per-second", *l.messagesPerSecond},
		{"rest-per-second", *l.restPerSecond},
	} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return o, fmt.Errorf("-%s: %v is not a rate per second (0: no cap)", f.name, f.v)
		}
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && uint64(*l.fdReserve) >= lim.Cur {
		return o, fmt.Errorf("-fd-reserve: %d leaves nothing under the open-file limit %d", *l.fdReserve, lim.Cur)
	}
	proxies, err := parsePrefixes(*l.trustedProxies)
	if err != nil {
		return o, fmt.Errorf("-trusted-proxies: %w", err)
	}
	o = gateway.Limits{
		TrustedProxies:            proxies,
		MaxConnsPerIP:             *l.maxConnsPerIP,
		HandshakesPerIP:           *l.handshakesPerIP,
		MaxPendingHandshakesPerIP: *l.maxPendingPerIP,
		MessagesPerSecond:         *l.messagesPerSecond,
		RESTPerSecond:             *l.restPerSecond,
		DescriptorReserve:         *l.fdReserve,
	}
	return o, nil
}

// parsePrefixes reads a comma-separated list of CIDRs; a bare address
// stands for itself alone.
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range splitList(s) {
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
