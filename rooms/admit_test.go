package rooms

import (
	"fmt"
	"testing"
	"time"
)

// TestIPLimiterStaysBounded: a flood from far more addresses than it
// tracks keeps the table at its bound, and still limits them (together);
// addresses whose buckets refilled make room for new ones.
func TestIPLimiterStaysBounded(t *testing.T) {
	const tracked = 1600
	l := newIPLimiter(1, tracked) // burst 2, refilled after 2s
	now := time.Unix(1000, 0)
	allowed := 0
	for i := range 200_000 {
		if l.allow(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), now) {
			allowed++
		}
	}
	if n := l.len(); n > tracked {
		t.Fatalf("%d addresses tracked, bound %d", n, tracked)
	}
	// The tracked addresses got their burst each; the overflow buckets let
	// the rest through only at their own rate.
	if max := 2*tracked + 2*ipShards; allowed > max {
		t.Fatalf("%d of 200,000 new addresses allowed at once, want at most %d", allowed, max)
	}
	// One address: its burst, then refused until it refills.
	if !l.allow("10.0.0.1", now.Add(3*time.Second)) || !l.allow("10.0.0.1", now.Add(3*time.Second)) || l.allow("10.0.0.1", now.Add(3*time.Second)) {
		t.Fatal("a tracked address does not get exactly its burst of 2")
	}
	// Once the old entries have refilled, new addresses are tracked again.
	later := now.Add(time.Minute)
	for i := range tracked {
		l.allow(fmt.Sprintf("192.168.%d.%d", i>>8, i&255), later)
	}
	if n := l.len(); n > tracked || n < tracked/2 {
		t.Fatalf("after the old entries expired, %d addresses tracked; want most of %d", n, tracked)
	}
	if !l.allow("172.16.0.1", later.Add(time.Second)) {
		t.Fatal("a new address after the flood was refused")
	}
}
