package gateway

import (
	"net/netip"
	"strings"
	"testing"
)

var testProxies = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("2001:db8:ffff::/48"),
	netip.MustParsePrefix("127.0.0.1/32"),
}

func TestClientIP(t *testing.T) {
	tests := []struct {
		name, peer, xff, want string
	}{
		{"untrusted peer, no header", "192.0.2.1", "", "192.0.2.1"},
		{"untrusted peer: its header means nothing", "192.0.2.1", "198.51.100.9", "192.0.2.1"},
		{"trusted peer, no header", "10.1.2.3", "", "10.1.2.3"},
		{"trusted peer names the client", "10.1.2.3", "198.51.100.9", "198.51.100.9"},
		{"a client's own entry is left of the real one", "10.1.2.3", "203.0.113.66, 198.51.100.9", "198.51.100.9"},
		{"trusted hops are skipped", "10.1.2.3", "198.51.100.9, 10.9.9.9,10.8.8.8", "198.51.100.9"},
		{"every hop trusted: the left-most", "10.1.2.3", "10.7.7.7, 10.8.8.8", "10.7.7.7"},
		{"garbage from a proxy stops at the last address", "10.1.2.3", "198.51.100.9, not-an-ip, 10.8.8.8", "10.8.8.8"},
		{"garbage left of the client is never read", "10.1.2.3", "garbage, 198.51.100.9", "198.51.100.9"},
		{"empty elements are skipped", "10.1.2.3", ", 198.51.100.9 ,, ", "198.51.100.9"},
		{"tabs around an element", "10.1.2.3", "\t198.51.100.9\t", "198.51.100.9"},
		{"address with a port", "10.1.2.3", "198.51.100.9:4711", "198.51.100.9"},
		{"IPv6 with a port", "10.1.2.3", "[2001:db8::7]:4711", "2001:db8::7"},
		{"IPv6 in brackets", "10.1.2.3", "[2001:db8::7]", "2001:db8::7"},
		{"IPv6 with a zone", "10.1.2.3", "fe80::1%eth0", "fe80::1"},
		{"IPv4-mapped hop", "10.1.2.3", "::ffff:198.51.100.9", "198.51.100.9"},
		{"IPv4-mapped trusted peer", "::ffff:10.1.2.3", "198.51.100.9", "198.51.100.9"},
		{"IPv6 proxy", "2001:db8:ffff::1", "198.51.100.9", "198.51.100.9"},
		{"obfuscated hop (RFC 7239 unknown)", "10.1.2.3", "unknown", "10.1.2.3"},
		{"bracketed IPv4 is not an address", "10.1.2.3", "[198.51.100.9]", "10.1.2.3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := clientIP(netip.MustParseAddr(tc.peer), tc.xff, testProxies)
			if got != netip.MustParseAddr(tc.want) {
				t.Errorf("clientIP(%s, %q) = %v, want %s", tc.peer, tc.xff, got, tc.want)
			}
		})
	}
}

// FuzzClientIP: whatever X-Forwarded-For says, the client is the peer or
// one of the header's addresses, it is the peer unless the peer is a
// trusted proxy, and everything right of it is trusted.
func FuzzClientIP(f *testing.F) {
	for _, seed := range []struct{ peer, xff string }{
		{"10.1.2.3", ""},
		{"10.1.2.3", "198.51.100.9"},
		{"10.1.2.3", "203.0.113.66, 198.51.100.9, 10.9.9.9"},
		{"10.1.2.3", "10.7.7.7,10.8.8.8"},
		{"10.1.2.3", "[2001:db8::7]:4711, ::ffff:10.0.0.1"},
		{"10.1.2.3", "fe80::1%eth0,,  ,\t"},
		{"10.1.2.3", "unknown, _hidden, 1.2.3.4:99999"},
		{"192.0.2.1", "198.51.100.9"},
		{"2001:db8:ffff::1", "2001:db8:ffff::2, 2001:db8::1"},
		{"127.0.0.1", strings.Repeat("10.0.0.1,", 100)},
	} {
		f.Add(netip.MustParseAddr(seed.peer).AsSlice(), seed.xff)
	}
	f.Fuzz(func(t *testing.T, peerBytes []byte, xff string) {
		peer, ok := netip.AddrFromSlice(peerBytes)
		if !ok {
			return
		}
		got := clientIP(peer, xff, testProxies)
		if !got.IsValid() {
			t.Fatalf("clientIP(%v, %q) is not an address", peer, xff)
		}
		if !isTrusted(peer.Unmap(), testProxies) {
			if got != peer.Unmap() {
				t.Fatalf("untrusted peer %v, header %q: got %v", peer, xff, got)
			}
			return
		}
		// Walk the header as a reader would, right to left, to where the
		// client was found: every hop passed must be a trusted address.
		if got == peer.Unmap() {
			return
		}
		hops := strings.Split(xff, ",")
		found := false
		for i := len(hops) - 1; i >= 0; i-- {
			hop := strings.Trim(hops[i], " \t")
			if hop == "" {
				continue
			}
			h, ok := parseHop(hop)
			if !ok {
				t.Fatalf("header %q: got %v from left of %q, which is not an address", xff, got, hop)
			}
			if h == got {
				found = true
				break
			}
			if !isTrusted(h, testProxies) {
				t.Fatalf("header %q: got %v, but %v right of it is not trusted", xff, got, h)
			}
		}
		if !found {
			t.Fatalf("header %q: got %v, which is neither the peer nor in the header", xff, got)
		}
	})
}

func TestIPKeyGroupsAnIPv6Slash64(t *testing.T) {
	a, b := netip.MustParseAddr("2001:db8:1:2:aaaa::1"), netip.MustParseAddr("2001:db8:1:2:bbbb::9")
	if ipKey(a) != ipKey(b) {
		t.Errorf("%v and %v, one /64, have keys %v and %v", a, b, ipKey(a), ipKey(b))
	}
	if c := netip.MustParseAddr("2001:db8:1:3::1"); ipKey(a) == ipKey(c) {
		t.Errorf("%v and %v, two /64s, share a key", a, c)
	}
	if v4 := netip.MustParseAddr("192.0.2.1"); ipKey(v4) != v4 {
		t.Errorf("ipKey(%v) = %v, want the address itself", v4, ipKey(v4))
	}
}
