package gateway

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ipTable is the per-client state of the limits: handshakes in progress and
// sockets open per address, and the token buckets of the rate caps. It is
// sharded, like centrifuge's connShards, so handshakes from many addresses
// do not queue on one lock, and it is bounded: each shard keeps at most
// perShard entries, and past that a new address evicts the least recently
// seen idle one it samples (Redis's approximated LRU). An entry with a
// handshake in progress or a socket open is never evicted, so those, which
// the descriptor limit bounds anyway, are always counted exactly; what an
// eviction loses is a bucket, which a client could refill by waiting.
type ipTable struct {
	seed     maphash.Seed
	perShard int
	shards   [ipShards]ipShard
}

const ipShards = 64

type ipShard struct {
	mu sync.Mutex
	m  map[netip.Addr]*ipEntry
}

// ipEntry is one client's state, guarded by its shard's mu.
type ipEntry struct {
	key     netip.Addr
	pending int32         // handshakes in progress whose TCP peer this is
	conns   int32         // sockets open for this client
	seen    int64         // last use, Unix nanoseconds
	hs      *rate.Limiter // handshakes; nil until the cap is on and the client shakes hands
	rest    *rate.Limiter // REST requests; likewise
	creates *rate.Limiter // rooms created by the client's sockets; likewise
}

func (e *ipEntry) idle() bool { return e.pending == 0 && e.conns == 0 }

// evictSample is how many idle entries eviction compares.
const evictSample = 8

func newIPTable(maxEntries int) *ipTable {
	t := &ipTable{seed: maphash.MakeSeed(), perShard: max(maxEntries/ipShards, 1)}
	for i := range t.shards {
		t.shards[i].m = make(map[netip.Addr]*ipEntry)
	}
	return t
}

func (t *ipTable) shard(key netip.Addr) *ipShard {
	return &t.shards[maphash.Comparable(t.seed, key)%ipShards]
}

// entryLocked returns key's entry, making room for it if it is new.
func (sh *ipShard) entryLocked(key netip.Addr, now int64, perShard int) *ipEntry {
	e := sh.m[key]
	if e == nil {
		if len(sh.m) >= perShard {
			sh.evictLocked()
		}
		e = &ipEntry{key: key}
		sh.m[key] = e
	}
	e.seen = now
	return e
}

// evictLocked drops the least recently seen of a few idle entries. Map
// iteration starts at a random place, so the sample is a fair one. When
// every entry is busy nothing goes, and the shard grows past its size by
// the busy ones: each holds a descriptor, and those are bounded.
func (sh *ipShard) evictLocked() {
	var victim *ipEntry
	found := 0
	for _, e := range sh.m {
		if !e.idle() {
			continue
		}
		if victim == nil || e.seen < victim.seen {
			victim = e
		}
		if found++; found == evictSample {
			break
		}
	}
	if victim != nil {
		delete(sh.m, victim.key)
	}
}

// startPending counts a handshake from key unless max are in progress.
func (t *ipTable) startPending(key netip.Addr, max int32) bool {
	sh := t.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entryLocked(key, time.Now().UnixNano(), t.perShard)
	if e.pending >= max {
		return false
	}
	e.pending++
	return true
}

func (t *ipTable) donePending(key netip.Addr) {
	sh := t.shard(key)
	sh.mu.Lock()
	if e := sh.m[key]; e != nil && e.pending > 0 {
		e.pending--
	}
	sh.mu.Unlock()
}

// addConn counts a socket for key unless max are open (max 0: no cap),
// and returns the entry, which stays put while the count is above zero.
func (t *ipTable) addConn(key netip.Addr, max int32) (*ipEntry, bool) {
	sh := t.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entryLocked(key, time.Now().UnixNano(), t.perShard)
	if max > 0 && e.conns >= max {
		return nil, false
	}
	e.conns++
	return e, true
}

func (t *ipTable) doneConn(e *ipEntry) {
	sh := t.shard(e.key)
	sh.mu.Lock()
	if e.conns > 0 {
		e.conns--
	}
	sh.mu.Unlock()
}

// bucket picks one of an entry's token buckets.
type bucket func(e *ipEntry) **rate.Limiter

func handshakeBucket(e *ipEntry) **rate.Limiter { return &e.hs }
func restBucket(e *ipEntry) **rate.Limiter      { return &e.rest }
func createBucket(e *ipEntry) **rate.Limiter    { return &e.creates }

// allow takes a token from key's bucket b, which refills at perSecond with
// a burst of twice that. Refused, it says how long until the next token.
func (t *ipTable) allow(key netip.Addr, b bucket, perSecond float64) (bool, time.Duration) {
	now := time.Now()
	sh := t.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	lim := b(sh.entryLocked(key, now.UnixNano(), t.perShard))
	if *lim == nil {
		*lim = rate.NewLimiter(rate.Limit(perSecond), burstOf(perSecond))
	}
	if (*lim).AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - (*lim).TokensAt(now)
	return false, time.Duration(missing / perSecond * float64(time.Second))
}

// burstOf is the burst of a rate cap: twice the rate, at least one.
func burstOf(perSecond float64) int { return max(int(2*perSecond+0.5), 1) }

// len is how many entries the table holds, for tests and nothing else.
func (t *ipTable) len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
