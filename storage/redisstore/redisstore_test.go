package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomgate/roomgate/internal/testkit"
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
}

func TestLeases(t *testing.T) {
	srv := redistest.Start(t)
	s := redistest.Open(t, redisstore.Options{URL: srv.URL()})
	r := storage.Room{Class: "chat", Name: "lobby"}
	a, err := s.Acquire(ctx, r, "node-a", time.Second)
	if err != nil || a.Token == 0 || a.Node != "node-a" {
		t.Fatalf("first acquire = %+v, %v", a, err)
	}
	held, err := s.Acquire(ctx, r, "node-b", time.Second)
	if !errors.Is(err, storage.ErrLeaseHeld) || held != a {
		t.Fatalf("second acquire = %+v, %v; want the holder's lease and ErrLeaseHeld", held, err)
	}
	if ok, err := s.Renew(ctx, "node-a", 200*time.Millisecond, []storage.Room{r}, []uint64{a.Token}); err != nil || ok[0] != storage.LeaseRenewed {
		t.Fatalf("renew by the holder = %v, %v", ok, err)
	}
	if ok, _ := s.Renew(ctx, "node-b", time.Second, []storage.Room{r}, []uint64{a.Token}); ok[0] != storage.LeaseLost {
		t.Fatal("a node renewed a lease it does not hold")
	}
	if ttl := s.Client().PTTL(ctx, "rg:{chat/lobby}:lease").Val(); ttl <= 0 || ttl > 200*time.Millisecond {
		t.Fatalf("the lease's TTL after a renewal for 200ms is %v", ttl)
	}
	// Redis expires the lease by its own clock: another node takes it then.
	var b storage.Lease
	testkit.Eventually(t, 5*time.Second, func() error {
		var err error
		b, err = s.Acquire(ctx, r, "node-b", time.Second)
		return err
	})
	if b.Token <= a.Token {
		t.Fatalf("acquire after expiry = %+v; want a greater token than %d", b, a.Token)
	}
	// The former owner's commit is refused: its token is older.
	if err := storage.CommitAndWait(ctx, s, r, &storage.Batch{Puts: []storage.KV{{Key: "k", Value: []byte("a")}}, Token: a.Token}); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("stale owner's commit: %v, want ErrFenced", err)
	}
	if err := storage.CommitAndWait(ctx, s, r, &storage.Batch{Puts: []storage.KV{{Key: "k", Value: []byte("b")}}, Token: b.Token}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Renew(ctx, "node-a", time.Second, []storage.Room{r}, []uint64{a.Token}); ok[0] != storage.LeaseLost {
		t.Fatal("the former owner renewed a lease taken over")
	}
	s.Release(ctx, []storage.Room{r}, []storage.Lease{a}) // not its lease any more: nothing happens
	if l := owner(t, s, r); l != b {
		t.Fatalf("owner = %+v, want %+v", l, b)
	}
	if err := s.Release(ctx, []storage.Room{r}, []storage.Lease{b}); err != nil {
		t.Fatal(err)
	}
	if l := owner(t, s, r); l.Node != "" {
		t.Fatalf("released lease still held by %+v", l)
	}
	c, _ := s.Acquire(ctx, r, "node-a", time.Second)
	if c.Token <= b.Token {
		t.Fatalf("token after release = %d, want > %d", c.Token, b.Token)
	}
}

func TestNodeRegistry(t *testing.T) {
	srv := redistest.Start(t)
	s := redistest.Open(t, redisstore.Options{URL: srv.URL()})
	s.Heartbeat(ctx, storage.NodeRecord{ID: "b", Address: "127.0.0.1:2"}, time.Minute)
	s.Heartbeat(ctx, storage.NodeRecord{ID: "a", Address: "127.0.0.1:1", Sockets: 3}, time.Minute)
	s.Heartbeat(ctx, storage.NodeRecord{ID: "gone", Address: "127.0.0.1:3"}, time.Millisecond)
	testkit.WaitFor(t, 5*time.Second, `"gone" to leave the registry`, func() bool {
		nodes, _ := s.Nodes(ctx)
		return !slices.ContainsFunc(nodes, func(n storage.NodeRecord) bool { return n.ID == "gone" })
	})
	nodes, err := s.Nodes(ctx)
	if err != nil || len(nodes) != 2 || nodes[0].ID != "a" || nodes[0].Sockets != 3 || nodes[1].ID != "b" {
		t.Fatalf("Nodes = %+v, %v", nodes, err)
	}
	s.Leave(ctx, "a")
	if nodes, _ := s.Nodes(ctx); len(nodes) != 1 || nodes[0].ID != "b" {
		t.Fatalf("after Leave: %+v", nodes)
	}
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

// A draining node releases all its leases in one call; a lease that is no
// longer the caller's stays with its holder.
func TestReleaseMany(t *testing.T) {
	srv := redistest.Start(t)
	s := redistest.Open(t, redisstore.Options{URL: srv.URL()})
	var rooms []storage.Room
	var leases []storage.Lease
	for i := range 5 {
		r := storage.Room{Class: "c", Name: fmt.Sprint("r", i)}
		l, err := s.Acquire(ctx, r, "node-a", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		rooms, leases = append(rooms, r), append(leases, l)
	}
	stale := leases[4]
	stale.Token-- // as if node-a's lease had been taken over since
	leases[4] = stale
	if err := s.Release(ctx, rooms, leases); err != nil {
		t.Fatal(err)
	}
	owners, err := s.Owners(ctx, rooms)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range owners {
		if held := l.Node != ""; held != (i == 4) {
			t.Fatalf("room %d: held %v after the release", i, held)
		}
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
