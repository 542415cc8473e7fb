package main

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/client"
	"github.com/roomgate/roomgate/examples/internal/examplenode"
	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

func TestClass(t *testing.T) {
	if err := rooms.CheckClass(newLimiter(1, time.Second)); err != nil {
		t.Fatal(err)
	}
}

// interval is long enough that the calls of a burst all come before a
// token does, short enough to wait for one.
const (
	burst    = 3
	interval = 2 * time.Second
)

func TestRateLimit(t *testing.T) {
	url, _ := examplenode.Start(t, "", roomgate.Builtins(), roomgate.Class("ratelimit", newLimiter(burst, interval)))
	ctx := context.Background()
	// One attempt: the client would otherwise wait out the Retry-After
	// and try again.
	api, err := client.New(url, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	take := func(key string) error {
		var left int
		return api.Room("ratelimit", key).Call(ctx, "take", nil, &left)
	}

	for i := range burst {
		if err := take("ann"); err != nil {
			t.Fatalf("take %d of %d: %v", i+1, burst, err)
		}
	}
	var e *client.Error
	if err := take("ann"); !errors.As(err, &e) || e.Status != http.StatusTooManyRequests ||
		e.Code != client.CodeRateLimited || e.RetryAfter <= 0 || e.RetryAfter > interval {
		t.Fatalf("take past the burst: %v (%+v), want 429 rate_limited with a Retry-After of at most %v", err, e, interval)
	}
	for i := range burst {
		if err := take("bob"); err != nil {
			t.Fatalf("bob's take %d, with ann's bucket empty: %v", i+1, err)
		}
	}
	testkit.Eventually(t, 10*time.Second, func() error { return take("ann") })
}
