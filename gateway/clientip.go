package gateway

import (
	"net"
	"net/netip"
	"strings"
)

// clientIP says who a request comes from: the TCP peer, unless the peer is
// one of the trusted proxies. Then X-Forwarded-For is read from the right,
// past every trusted hop, and the first untrusted hop is the client, as
// nginx's real_ip_recursive does. Only the hops a trusted proxy appended
// are believed: whatever a client wrote itself sits to their left and is
// never reached while an untrusted address comes first. A hop that is not
// an address ends the walk at the last address reached, so garbage from a
// proxy never lets a client pick its own address. xff is the header's
// values joined by commas, in the order they came.
func clientIP(peer netip.Addr, xff string, trusted []netip.Prefix) netip.Addr {
	ip := peer.Unmap()
	if !isTrusted(ip, trusted) {
		return ip
	}
	for xff != "" {
		var hop string
		if i := strings.LastIndexByte(xff, ','); i >= 0 {
			hop, xff = xff[i+1:], xff[:i]
		} else {
			hop, xff = xff, ""
		}
		hop = strings.Trim(hop, " \t")
		if hop == "" {
			continue // an empty list element (RFC 9110 §5.6.1)
		}
		next, ok := parseHop(hop)
		if !ok {
			return ip
		}
		ip = next
		if !isTrusted(ip, trusted) {
			return ip
		}
	}
	return ip // every hop is a trusted proxy: the left-most is the client
}

// parseHop reads one X-Forwarded-For element: an address, or an address
// with a port ("192.0.2.1:4711", "[2001:db8::1]:4711"), as some proxies
// write it. A zone is dropped and an IPv4-mapped address is unmapped.
func parseHop(hop string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(hop)
	if err != nil {
		ap, perr := netip.ParseAddrPort(hop)
		if perr != nil {
			if len(hop) < 3 || hop[0] != '[' || hop[len(hop)-1] != ']' {
				return netip.Addr{}, false
			}
			if a, err = netip.ParseAddr(hop[1 : len(hop)-1]); err != nil || !a.Is6() {
				return netip.Addr{}, false
			}
		} else {
			a = ap.Addr()
		}
	}
	return a.WithZone("").Unmap(), true
}

func isTrusted(ip netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// peerIP is the address of a "host:port" remote address, as net.Conn and
// http.Request give it; the zero Addr when it is not one.
func peerIP(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().WithZone("").Unmap()
	}
	return netip.Addr{}
}

// connIP is c's TCP peer without formatting its address as a string.
func connIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// ipKey is what per-IP state is kept under. An IPv6 host usually holds a
// whole /64, so limits by single address would give it 2^64 fresh ones:
// its /64 counts as one client, as in Cloudflare's and nginx-based limits.
func ipKey(ip netip.Addr) netip.Addr {
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// appendList adds one header value to a comma-separated list of them, as
// repeated header fields combine (RFC 9110 §5.3).
func appendList(list string, value []byte) string {
	if list == "" {
		return string(value)
	}
	return list + "," + string(value)
}
