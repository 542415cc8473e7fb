// Command ratelimit ports Durable Objects' rate limiter: one object per
// key (idFromName(key)), a token bucket in its memory, and a method that
// other services call before the work it guards. A room per key shards
// the limits: every key is independent, and no bucket is shared.
package main

import (
	"context"
	"net/http"
	"time"

	"golang.org/x/time/rate"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/rooms"
)

// Limiter is one key's token bucket (newLimiter: burst calls at once, then
// one more each interval). It lives in memory, as the Durable Objects
// original does: a room evicted after idling comes back with a full bucket.
type Limiter struct{ bucket *rate.Limiter }

func (l *Limiter) OnMessage(context.Context, *rooms.Room, *rooms.Conn, rooms.Frame) error { return nil }

func (l *Limiter) Methods() []rooms.RPCMethod {
	return []rooms.RPCMethod{rooms.Method("take", l.take)}
}

// take takes a token and returns how many are left, or refuses with 429
// and when the next one comes.
func (l *Limiter) take(ctx context.Context, r *rooms.Room, _ any) (int, error) {
	res := l.bucket.Reserve()
	if d := res.Delay(); d > 0 {
		res.Cancel()
		return 0, &rooms.UserError{Status: http.StatusTooManyRequests, Code: "rate_limited",
			Message: "no calls left for " + r.Name(), RetryAfter: d}
	}
	return int(l.bucket.Tokens()), nil
}

func newLimiter(burst int, interval time.Duration) func() rooms.Handler {
	return func() rooms.Handler { return &Limiter{rate.NewLimiter(rate.Every(interval), burst)} }
}

func main() {
	roomgate.Main(roomgate.Builtins(), roomgate.Class("ratelimit", newLimiter(10, time.Second)))
}
