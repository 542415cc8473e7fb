package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/redisstore"
	"github.com/roomgate/roomgate/storage/redisstore/redistest"
	"github.com/roomgate/roomgate/storage/storagetest"
)

var ctx = context.Background()

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	n := 0
	storagetest.Run(t, func(t *testing.T) storage.Store {
		n++ // a prefix per store keeps each one empty on one server
		return redistest.Open(t, redisstore.Options{URL: srv.URL(), Prefix: fmt.Sprintf("t%d:", n)})
	})
}

func TestConformanceOnRedisCluster(t *testing.T) {
	addrs := redistest.StartCluster(t, 3)
	n := 0
	storagetest.Run(t, func(t *testing.T) storage.Store {
		n++
		return redistest.Open(t, redisstore.Options{URL: addrs[0] + "," + addrs[1] + "," + addrs[2], Prefix: fmt.Sprintf("t%d:", n)})
	})
	storagetest.RunCoordinator(t, func(t *testing.T) storage.Coordinator {
		n++
		return redistest.Open(t, redisstore.Options{URL: addrs[0] + "," + addrs[1] + "," + addrs[2], Prefix: fmt.Sprintf("t%d:", n)})
	})
}

func TestCoordinatorConformance(t *testing.T) {
	srv := redistest.Start(t)
	n := 0
	storagetest.RunCoordinator(t, func(t *testing.T) storage.Coordinator {
		n++
		return redistest.Open(t, redisstore.Options{URL: srv.URL(), Prefix: fmt.Sprintf("t%d:", n)})
	})
}

// A stale alarm index entry (its commit's tidy-up never ran) is corrected
// by the reader, not fired.
func TestStaleAlarmIndexIsCorrected(t *testing.T) {
	srv := redistest.Start(t)
	s := redistest.Open(t, redisstore.Options{URL: srv.URL()})
	r := storage.Room{Class: "c", Name: "r"}
	at := time.Now().Add(time.Hour)
	if err := storage.CommitAndWait(ctx, s, r, &storage.Batch{Alarm: &storage.AlarmChange{At: at}}); err != nil {
		t.Fatal(err)
	}
	// As if a commit moving the alarm had lowered the index and then failed.
	s.Client().ZAdd(ctx, "rg:alarms", redisZ(time.Now().Add(-time.Minute), "c\x00r"))
	due, err := s.DueAlarms(ctx, time.Now(), 10)
	if err != nil || len(due) != 0 {
		t.Fatalf("DueAlarms = %+v, %v; want none: the room's alarm is an hour away", due, err)
	}
	next, ok, err := s.NextAlarm(ctx)
	if err != nil || !ok || !next.Equal(time.Unix(0, at.UnixNano())) {
		t.Fatalf("NextAlarm = %v %v %v, want %v", next, ok, err, at)
	}
}

func redisZ(at time.Time, member string) redis.Z {
	return redis.Z{Score: float64(at.UnixMilli()), Member: member}
}

// Commits racing a Close all return: applied, or ErrClosed; none hangs.
func TestCommitsRacingCloseReturn(t *testing.T) {
	srv := redistest.Start(t)
	s, err := redisstore.Open(ctx, redisstore.Options{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 200)
	for i := range 200 {
		go func() {
			r := storage.Room{Class: "c", Name: fmt.Sprint(i)}
			done <- storage.CommitAndWait(ctx, s, r, &storage.Batch{Puts: []storage.KV{{Key: "k", Value: []byte("v")}}})
		}()
	}
	returned := func() {
		t.Helper()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, storage.ErrClosed) {
				t.Fatalf("commit during close: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("a commit racing Close never returned")
		}
	}
	returned() // one is through; Close races the others on their way
	s.Close()
	for range 199 {
		returned()
	}
}

// A lease value that is not "token node" is an error, not a holder with no
// name (a node would take that for "held here" and drop the event).
func TestCorruptLeaseIsAnError(t *testing.T) {
	srv := redistest.Start(t)
	s := redistest.Open(t, redisstore.Options{URL: srv.URL()})
	r := storage.Room{Class: "c", Name: "bad"}
	for _, v := range []string{"7 ", "garbage"} {
		s.Client().Set(ctx, "rg:{c/bad}:lease", v, time.Minute)
		if l, err := s.Acquire(ctx, r, "n1", time.Second); err == nil || errors.Is(err, storage.ErrLeaseHeld) {
			t.Errorf("Acquire over lease %q = %+v, %v; want a plain error", v, l, err)
		}
		if _, err := s.Owners(ctx, []storage.Room{r}); err == nil {
			t.Errorf("Owners with lease %q: no error", v)
		}
	}
}

// A renewal that cannot be answered for one room (its Redis Cluster shard
// away; here, a lease key of the wrong type) still answers for the others,
// so a node keeps the rooms it still holds.
func TestRenewAnswersWhatItCan(t *testing.T) {
	srv := redistest.Start(t)
	s := redistest.Open(t, redisstore.Options{URL: srv.URL()})
	var rooms []storage.Room
	var tokens []uint64
	for _, name := range []string{"r0", "r1", "r2"} {
		r := storage.Room{Class: "c", Name: name}
		l, err := s.Acquire(ctx, r, "node-a", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		rooms, tokens = append(rooms, r), append(tokens, l.Token)
	}
	s.Client().Del(ctx, "rg:{c/r1}:lease")
	s.Client().HSet(ctx, "rg:{c/r1}:lease", "not", "a lease")
	states, err := s.Renew(ctx, "node-a", time.Minute, rooms, tokens)
	want := []storage.LeaseState{storage.LeaseRenewed, storage.LeaseUnknown, storage.LeaseRenewed}
	if err == nil || !slices.Equal(states, want) {
		t.Fatalf("renew with one unanswerable lease = %v, %v; want %v and an error", states, err, want)
	}
}

// Redis forgets its scripts when it restarts: commits, renewals and
// releases that meet NOSCRIPT load the script and are sent again.
func TestScriptsLoadedAgainAfterAFlush(t *testing.T) {
	srv := redistest.Start(t)
	s := redistest.Open(t, redisstore.Options{URL: srv.URL()})
	var rooms []storage.Room
	var leases []storage.Lease
	var tokens []uint64
	for i := range 3 {
		r := storage.Room{Class: "c", Name: fmt.Sprint("r", i)}
		l, err := s.Acquire(ctx, r, "node-a", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		rooms, leases, tokens = append(rooms, r), append(leases, l), append(tokens, l.Token)
	}
	flush := func() {
		t.Helper()
		if err := s.Client().ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	if err := storage.CommitAndWait(ctx, s, rooms[0], &storage.Batch{Puts: []storage.KV{{Key: "k", Value: []byte("v")}}, Token: tokens[0]}); err != nil {
		t.Fatalf("commit after a script flush: %v", err)
	}
	flush()
	held, err := s.Renew(ctx, "node-a", time.Minute, rooms, tokens)
	if err != nil || slices.ContainsFunc(held, func(s storage.LeaseState) bool { return s != storage.LeaseRenewed }) {
		t.Fatalf("renew after a script flush: %v, %v", held, err)
	}
	flush()
	if err := s.Release(ctx, rooms, leases); err != nil {
		t.Fatalf("release after a script flush: %v", err)
	}
	for _, r := range rooms {
		if l := owner(t, s, r); l.Node != "" {
			t.Fatalf("%s still leased to %+v", r, l)
		}
	}
}

// owner returns the lease on r, the zero Lease when nobody holds it.
func owner(t *testing.T, s *redisstore.Store, r storage.Room) storage.Lease {
	t.Helper()
	l, err := s.Owners(ctx, []storage.Room{r})
	if err != nil {
		t.Fatal(err)
	}
	return l[0]
}

// A renewal sets the lease's time to live in Redis to exactly what was
// asked, so the lease ends then and not at its first TTL.
func TestRenewSetsTheLeaseTTL(t *testing.T) {
	srv := redistest.Start(t)
	s := redistest.Open(t, redisstore.Options{URL: srv.URL()})
	r := storage.Room{Class: "chat", Name: "lobby"}
	a, err := s.Acquire(ctx, r, "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Renew(ctx, "node-a", 200*time.Millisecond, []storage.Room{r}, []uint64{a.Token}); err != nil || ok[0] != storage.LeaseRenewed {
		t.Fatalf("renew by the holder = %v, %v", ok, err)
	}
	if ttl := s.Client().PTTL(ctx, "rg:{chat/lobby}:lease").Val(); ttl <= 0 || ttl > 200*time.Millisecond {
		t.Fatalf("the lease's TTL after a renewal for 200ms is %v", ttl)
	}
}
