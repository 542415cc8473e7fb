package gateway

import (
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// TestIPTableStaysBounded feeds a million distinct addresses through the
// handshake bucket, as a spoofing flood behind a careless proxy would, and
// checks that the table keeps its size and its memory, that old entries
// go, and that an address with a handshake in progress is never dropped.
func TestIPTableStaysBounded(t *testing.T) {
	n := 1 << 20
	if testing.Short() {
		n = 1 << 16
	}
	const size = 4096
	tab := newIPTable(size)
	const slow = 0.001 // a bucket of one token, refilled in 1,000 s
	busy, old := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if !tab.startPending(busy, 1) {
		t.Fatal("first handshake refused")
	}
	if ok, _ := tab.allow(old, handshakeBucket, slow); !ok {
		t.Fatal("first handshake refused")
	}
	if ok, wait := tab.allow(old, handshakeBucket, slow); ok || wait < 900*time.Second {
		t.Fatalf("second handshake at once: allowed %v, retry in %v; want refused for about 1,000 s", ok, wait)
	}
	ipAt := func(i int) netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	for i := range n {
		if ok, _ := tab.allow(ipAt(i), handshakeBucket, slow); !ok {
			t.Fatalf("address %d, new, refused its first handshake", i)
		}
	}
	t.Logf("%d addresses in %v", n, time.Since(start))
	if got := tab.len(); got > size+ipShards {
		t.Errorf("table holds %d entries after %d addresses, want at most %d", got, n, size)
	}
	if ok, _ := tab.allow(old, handshakeBucket, slow); !ok {
		t.Error("the first address still has its empty bucket: old entries do not go")
	}
	if tab.startPending(busy, 1) {
		t.Error("the address with a handshake in progress was evicted: its count restarted")
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 8<<20 {
		t.Errorf("live heap grew by %d bytes over %d addresses, want bounded by the table's size", grew, n)
	}
	runtime.KeepAlive(tab)
}
