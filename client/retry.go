// Which failures are tried again, and how long to wait between tries.
//
// The rule is that a call is sent again only when sending it twice cannot
// do what sending it once would not:
//
//   - 503 (draining, overloaded, room_full, unavailable, node_full) and 429
//     (rate_limited) are refusals: the node answers them before the room
//     runs anything, so every call is retried, POST included.
//   - A connection that could not be opened (a dial error: the node is
//     restarting, or not up yet) carried nothing: every call is retried.
//   - Any other transport failure (a reset, EOF, a timeout after the
//     request left) and a proxy's 502 or 504 may come after the node did
//     the work: only idempotent calls are retried (the GETs and Room.Delete).
//     A broadcast, an RPC and a kick are not: the caller decides.

package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"time"
)

// retryableStatus says whether an answer with status is worth another try.
func retryableStatus(rq request, status int) bool {
	switch status {
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return true
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return rq.idempotent
	}
	return false
}

// retryableTransport says whether a request that got no answer is worth
// another try.
func retryableTransport(rq request, err error) bool {
	var te *tokenError
	if errors.As(err, &te) {
		return false
	}
	return rq.idempotent || notSent(err)
}

// notSent reports whether err means the request never left: the
// connection to the node could not be opened.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// pause waits before try attempt+1: the backoff, or retryAfter when the
// node asked for longer. It returns at once, with a reason, when the wait
// is longer than MaxBackoff or would outlast ctx: a call never sleeps past
// its deadline only to fail then.
func (c *Client) pause(ctx context.Context, attempt int, retryAfter time.Duration) error {
	if retryAfter > c.o.MaxBackoff {
		return errRetryAfter
	}
	wait := max(backoff(attempt, c.o.MinBackoff, c.o.MaxBackoff), retryAfter)
	if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
		return context.DeadlineExceeded
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errRetryAfter stops retries when the node asks for a longer wait than
// the client was allowed; the Error carries the Retry-After.
var errRetryAfter = errors.New("client: the node's Retry-After is longer than MaxBackoff")

// backoff is the wait after the attempt-th try: lo doubled attempt-1
// times, capped at hi, with "equal jitter" (half of it fixed, half
// random) so clients refused together do not come back together, while
// none comes back at once.
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	half := d / 2
	return half + rand.N(d-half+1)
}
