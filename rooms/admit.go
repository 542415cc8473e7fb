// Admission before the upgrade: the rate at which one client address may
// create rooms.

package rooms

import (
	"context"
	"errors"
	"hash/maphash"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ErrTooManyRooms refuses a socket that would create a room, from a client
// address that created rooms faster than Options.RoomCreatesPerIP allows.
var ErrTooManyRooms = errors.New("rooms: too many new rooms from this address")

// Admitter is a Router that decides before the upgrade whether a socket
// may open: its refusal becomes an HTTP status (429 for ErrTooManyRooms)
// instead of a close code. The gateway asks it last in admission, from
// the handshake's goroutine; Admit may read storage.
type Admitter interface {
	Admit(ctx context.Context, a Addr, info ConnectInfo) error
}

// Admit implements Admitter. A socket for a room running here that already
// has MaxSockets is refused with ErrRoomFull (503 before the upgrade; a
// room elsewhere or asleep refuses it at Connect, with close 1008). A
// socket for a room with no instance on this node, no known owner
// elsewhere and nothing stored would create the room:
// with RoomCreatesPerIP set, each such socket takes a token from its
// client address's bucket, and one that finds it empty is refused with
// ErrTooManyRooms, counted as roomgate_room_limited_total{kind="room_creation"}.
// Sockets for rooms that exist cost nothing, so reconnecting clients and
// busy rooms are never limited. When storage cannot say whether a room
// exists, the socket is let in: Connect will fail it if the store is down.
func (rt *Runtime) Admit(ctx context.Context, a Addr, info ConnectInfo) error {
	if rt.Full(a) {
		return ErrRoomFull
	}
	if rt.creates == nil || rt.active(a) != nil || rt.cl.cachedOwner(a) != "" {
		return nil
	}
	if _, stored, err := rt.store.Stat(ctx, a.storageRoom()); err != nil || stored {
		return nil
	}
	if !rt.creates.allow(clientIP(info), time.Now()) {
		rt.m.limited.WithLabelValues("room_creation").Inc()
		return ErrTooManyRooms
	}
	return nil
}

// clientIP is the address a limit per client counts against: the host of
// info.RemoteAddr, which the gateway sets to the client: the TCP peer, or
// behind a trusted proxy the address it forwarded for.
func clientIP(info ConnectInfo) string {
	host, _, err := net.SplitHostPort(info.RemoteAddr)
	if err != nil {
		return info.RemoteAddr
	}
	return host
}

// ipLimiter is a token bucket per client address, with bounded memory: at
// most ipShards × perShard addresses are tracked. An address whose bucket
// has refilled is no different from one never seen, so when a shard is
// full its refilled entries are dropped; if none has refilled (a flood from
// more addresses than fit), new addresses share the shard's overflow
// bucket, which limits them together rather than not at all.
type ipLimiter struct {
	limit    rate.Limit
	burst    int
	refill   time.Duration // an idle bucket is full again after this long
	perShard int
	seed     maphash.Seed
	shards   [ipShards]ipShard
}

const ipShards = 16

type ipShard struct {
	mu       sync.Mutex
	m        map[string]*ipEntry
	overflow *rate.Limiter
	swept    time.Time // when the full shard was last swept of refilled entries
}

type ipEntry struct {
	lim  *rate.Limiter
	last time.Time
}

// newIPLimiter allows perSecond events per address, in bursts of twice
// that (at least 1), tracking at most addrs addresses.
func newIPLimiter(perSecond float64, addrs int) *ipLimiter {
	burst := max(1, int(2*perSecond))
	l := &ipLimiter{
		limit:    rate.Limit(perSecond),
		burst:    burst,
		refill:   time.Duration(float64(burst) / perSecond * float64(time.Second)),
		perShard: max(1, addrs/ipShards),
		seed:     maphash.MakeSeed(),
	}
	for i := range l.shards {
		l.shards[i].m = make(map[string]*ipEntry)
		l.shards[i].overflow = rate.NewLimiter(l.limit, l.burst)
	}
	return l
}

func (l *ipLimiter) allow(ip string, now time.Time) bool {
	sh := &l.shards[maphash.String(l.seed, ip)%ipShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[ip]
	if e == nil {
		// A sweep at most every quarter refill: a flood of new
		// addresses into a full shard must not cost a sweep each.
		if len(sh.m) >= l.perShard && now.Sub(sh.swept) >= l.refill/4 {
			sh.swept = now
			for k, old := range sh.m {
				if now.Sub(old.last) >= l.refill {
					delete(sh.m, k)
				}
			}
		}
		if len(sh.m) >= l.perShard {
			return sh.overflow.AllowN(now, 1)
		}
		e = &ipEntry{lim: rate.NewLimiter(l.limit, l.burst)}
		sh.m[ip] = e
	}
	e.last = now
	return e.lim.AllowN(now, 1)
}

// len is how many addresses are tracked.
func (l *ipLimiter) len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
