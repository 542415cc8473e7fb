package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/client"
	"github.com/roomgate/roomgate/examples/internal/examplenode"
	"github.com/roomgate/roomgate/rooms"
)

func TestLockHandlers(t *testing.T) {
	if err := rooms.CheckClass(func() rooms.Handler { return new(Lock) }); err != nil {
		t.Fatal(err)
	}
}

// hold is one grant as its holder saw it: from acquire's answer to the
// moment it sent release.
type hold struct {
	who        string
	token      int64
	start, end time.Time
}

// TestNeverHeldTwice races 10 callers for one lock, each taking it 3 times.
// It fails if two callers ever hold it at once (a counter of holders, and
// the holds' intervals overlapping), or if tokens do not grow with grants.
func TestNeverHeldTwice(t *testing.T) {
	c := start(t)
	lock := c.Room("lock", "leader")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var (
		mu      sync.Mutex
		holds   []hold
		holders int
		twice   bool
		wg      sync.WaitGroup
		errs    = make(chan error, 10)
	)
	for i := range 10 {
		who := fmt.Sprintf("caller-%d", i)
		wg.Go(func() {
			for range 3 {
				var token int64
				for {
					err := lock.Call(ctx, "acquire", Lease{Holder: who, TTL: 30_000}, &token)
					if err == nil {
						break
					}
					if client.CodeOf(err) != "held" {
						errs <- fmt.Errorf("%s: acquire: %w", who, err)
						return
					}
					time.Sleep(time.Millisecond) // a retry's backoff, not a synchronization
				}
				h := hold{who: who, token: token, start: time.Now()}
				mu.Lock()
				holders++
				twice = twice || holders > 1
				mu.Unlock()
				time.Sleep(2 * time.Millisecond) // the work done under the lock
				mu.Lock()
				holders--
				h.end = time.Now()
				holds = append(holds, h)
				mu.Unlock()
				if err := lock.Call(ctx, "release", Lease{Holder: who, Token: token}, nil); err != nil {
					errs <- fmt.Errorf("%s: release: %w", who, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if twice {
		t.Error("two callers held the lock at once")
	}
	if len(holds) != 30 {
		t.Fatalf("%d grants, want 30", len(holds))
	}
	sort.Slice(holds, func(i, j int) bool { return holds[i].start.Before(holds[j].start) })
	for i := 1; i < len(holds); i++ {
		a, b := holds[i-1], holds[i]
		if b.start.Before(a.end) {
			t.Errorf("%s (token %d) held it from %v while %s (token %d) held it until %v",
				b.who, b.token, b.start.Format(time.StampMicro), a.who, a.token, a.end.Format(time.StampMicro))
		}
		if b.token <= a.token {
			t.Errorf("token %d granted after token %d", b.token, a.token)
		}
	}
}

// TestExpiresWithoutRenew: renewing keeps the lock past its TTL; a holder
// that stops renewing loses it once the TTL lapses, not before, and the
// next acquirer gets a greater token while the old holder's renew fails.
func TestExpiresWithoutRenew(t *testing.T) {
	c := start(t)
	lock := c.Room("lock", "job")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const ttl = 500 * time.Millisecond

	var first int64
	acquired := time.Now()
	if err := lock.Call(ctx, "acquire", Lease{Holder: "a", TTL: ttl.Milliseconds()}, &first); err != nil {
		t.Fatal(err)
	}
	// Renewed every 100 ms, it outlives its TTL twice over.
	var lastRenew time.Time
	for time.Since(acquired) < 2*ttl {
		lastRenew = time.Now()
		if err := lock.Call(ctx, "renew", Lease{Holder: "a", Token: first}, nil); err != nil {
			t.Fatalf("renew: %v", err)
		}
		err := lock.Call(ctx, "acquire", Lease{Holder: "b", TTL: 1000}, nil)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != 409 || ce.Code != "held" {
			t.Fatalf("b's acquire while a renews: %v, want 409 held", err)
		}
		time.Sleep(100 * time.Millisecond) // a's renewal period
	}

	// a stops renewing: b gets it once the TTL lapsed, with a greater token.
	var second int64
	for {
		err := lock.Call(ctx, "acquire", Lease{Holder: "b", TTL: 1000}, &second)
		if err == nil {
			break
		}
		if client.CodeOf(err) != "held" {
			t.Fatalf("b's acquire: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // b's retry
	}
	if waited := time.Since(lastRenew); waited < ttl {
		t.Errorf("freed %v after a's last renew, before its TTL, %v", waited, ttl)
	}
	if second <= first {
		t.Errorf("b's token %d, want more than a's %d", second, first)
	}
	if err := lock.Call(ctx, "renew", Lease{Holder: "a", Token: first}, nil); client.CodeOf(err) != "lost" {
		t.Errorf("a's renew after expiry: %v, want lost", err)
	}
	if err := lock.Call(ctx, "release", Lease{Holder: "b", Token: second}, nil); err != nil {
		t.Errorf("b's release: %v", err)
	}
	var third int64
	if err := lock.Call(ctx, "acquire", Lease{Holder: "c", TTL: 1000}, &third); err != nil || third <= second {
		t.Errorf("c's acquire after release: token %d, %v; want more than %d", third, err, second)
	}
}

// start runs a node with the lock class, and a client of it.
func start(t *testing.T) *client.Client {
	t.Helper()
	url, _ := examplenode.Start(t, "", roomgate.Class("lock", func() rooms.Handler { return new(Lock) }))
	c, err := client.New(url, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
