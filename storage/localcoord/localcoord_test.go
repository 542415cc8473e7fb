package localcoord

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/storagetest"
)

var ctx = context.Background()

func TestConformance(t *testing.T) {
	storagetest.RunCoordinator(t, func(t *testing.T) storage.Coordinator { return New() })
}

// Leases and heartbeats expire by the clock alone, with no goroutine of
// the coordinator's: in a synctest bubble, an hour passes at once.
func TestExpiryFollowsTheClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New()
		r := storage.Room{Class: "chat", Name: "lobby"}
		a, err := c.Acquire(ctx, r, "node-a", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Heartbeat(ctx, storage.NodeRecord{ID: "node-a"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		time.Sleep(59 * time.Minute)
		if _, err := c.Acquire(ctx, r, "node-b", time.Hour); !errors.Is(err, storage.ErrLeaseHeld) {
			t.Fatalf("acquire a minute before expiry: %v, want ErrLeaseHeld", err)
		}
		if states, _ := c.Renew(ctx, "node-a", time.Hour, []storage.Room{r}, []uint64{a.Token}); states[0] != storage.LeaseRenewed {
			t.Fatalf("renew a minute before expiry = %v", states[0])
		}
		time.Sleep(30 * time.Minute) // past the first hour, within the renewed one
		if l, _ := c.Owners(ctx, []storage.Room{r}); l[0] != a {
			t.Fatalf("owner within the renewed hour = %+v, want %+v", l[0], a)
		}
		if nodes, _ := c.Nodes(ctx); len(nodes) != 0 {
			t.Fatalf("Nodes an hour and a half after the only heartbeat = %+v", nodes)
		}
		time.Sleep(30 * time.Minute) // past the renewed hour
		if l, _ := c.Owners(ctx, []storage.Room{r}); l[0] != (storage.Lease{}) {
			t.Fatalf("owner of an expired lease = %+v, want none", l[0])
		}
		if states, _ := c.Renew(ctx, "node-a", time.Hour, []storage.Room{r}, []uint64{a.Token}); states[0] != storage.LeaseLost {
			t.Fatalf("renew of an expired lease = %v, want lost", states[0])
		}
		b, err := c.Acquire(ctx, r, "node-b", time.Hour)
		if err != nil || b.Token <= a.Token {
			t.Fatalf("acquire after expiry = %+v, %v; want a token > %d", b, err, a.Token)
		}
	})
}

// Expired leases of rooms nobody asks about again do not pile up.
func TestExpiredLeasesAreSwept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New()
		for round := range 10 {
			for i := range 1000 {
				if _, err := c.Acquire(ctx, storage.Room{Class: "c", Name: fmt.Sprint(round, "-", i)}, "n", time.Second); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(2 * time.Second)
		}
		if n := len(c.leases); n > 2048 {
			t.Fatalf("%d leases kept after 10,000 acquisitions with at most 1,000 alive at once", n)
		}
	})
}
