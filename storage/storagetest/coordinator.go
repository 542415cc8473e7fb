package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roomgate/roomgate/storage"
)

// RunCoordinator runs the suite every storage.Coordinator passes;
// newCoordinator returns one that holds no lease and knows no node,
// released by the caller's cleanup. A coordinator that is a storage.Store
// too (Redis serves both) also has its fencing checked against its own
// commits.
//
// The tests run in real time: a lease or heartbeat meant to expire gets a
// short TTL and the test polls until it has, so one suite serves Redis,
// whose clock is its own, and an in-process coordinator alike.
func RunCoordinator(t *testing.T, newCoordinator func(t *testing.T) storage.Coordinator) {
	tests := []struct {
		name string
		f    func(t *testing.T, c storage.Coordinator)
	}{
		{"leases", testLeases},
		{"lease taken anew by its holder", testReacquire},
		{"one holder among racing nodes", testRacingAcquires},
		{"renew many", testRenewMany},
		{"owners", testOwners},
		{"release many", testReleaseMany},
		{"node registry", testNodeRegistry},
		{"heartbeat overwrites", testHeartbeatOverwrites},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, newCoordinator(t)) })
	}
}

func testLeases(t *testing.T, c storage.Coordinator) {
	r := storage.Room{Class: "chat", Name: "lobby"}
	a, err := c.Acquire(ctx, r, "node-a", time.Minute)
	if err != nil || a.Token == 0 || a.Node != "node-a" {
		t.Fatalf("first acquire = %+v, %v", a, err)
	}
	held, err := c.Acquire(ctx, r, "node-b", time.Minute)
	if !errors.Is(err, storage.ErrLeaseHeld) || held != a {
		t.Fatalf("second acquire = %+v, %v; want the holder's lease and ErrLeaseHeld", held, err)
	}
	if ok, err := c.Renew(ctx, "node-a", 200*time.Millisecond, []storage.Room{r}, []uint64{a.Token}); err != nil || ok[0] != storage.LeaseRenewed {
		t.Fatalf("renew by the holder = %v, %v", ok, err)
	}
	if ok, _ := c.Renew(ctx, "node-b", time.Minute, []storage.Room{r}, []uint64{a.Token}); ok[0] != storage.LeaseLost {
		t.Fatal("a node renewed a lease it does not hold")
	}
	// The renewal shortened the lease to 200 ms: node-b gets it well
	// before the first acquisition's minute is up.
	b, err := acquireOnceFree(t, c, r, "node-b", time.Minute)
	if err != nil || b.Token <= a.Token {
		t.Fatalf("acquire after expiry = %+v, %v; want a greater token than %d", b, err, a.Token)
	}
	if s, ok := c.(storage.Store); ok {
		// The former owner's commit is refused: its token is older.
		if err := storage.CommitAndWait(ctx, s, r, &storage.Batch{Puts: []storage.KV{{Key: "k", Value: []byte("a")}}, Token: a.Token}); !errors.Is(err, storage.ErrFenced) {
			t.Fatalf("stale owner's commit: %v, want ErrFenced", err)
		}
		if err := storage.CommitAndWait(ctx, s, r, &storage.Batch{Puts: []storage.KV{{Key: "k", Value: []byte("b")}}, Token: b.Token}); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := c.Renew(ctx, "node-a", time.Minute, []storage.Room{r}, []uint64{a.Token}); ok[0] != storage.LeaseLost {
		t.Fatal("the former owner renewed a lease taken over")
	}
	c.Release(ctx, []storage.Room{r}, []storage.Lease{a}) // not its lease any more: nothing happens
	if l := owner(t, c, r); l != b {
		t.Fatalf("owner = %+v, want %+v", l, b)
	}
	if err := c.Release(ctx, []storage.Room{r}, []storage.Lease{b}); err != nil {
		t.Fatal(err)
	}
	if l := owner(t, c, r); l.Node != "" {
		t.Fatalf("released lease still held by %+v", l)
	}
	next, err := c.Acquire(ctx, r, "node-a", time.Minute)
	if err != nil || next.Token <= b.Token {
		t.Fatalf("acquire after release = %+v, %v; want a token > %d", next, err, b.Token)
	}
}

// acquireOnceFree acquires r for node, trying again while another node
// holds it, for up to 10 s.
func acquireOnceFree(t *testing.T, c storage.Coordinator, r storage.Room, node string, ttl time.Duration) (storage.Lease, error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := c.Acquire(ctx, r, node, ttl)
		if !errors.Is(err, storage.ErrLeaseHeld) || time.Now().After(deadline) {
			return l, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A node that acquires a room it holds gets a new token (a former
// instance of the room on that node is fenced out), and the old token no
// longer renews or releases the lease.
func testReacquire(t *testing.T, c storage.Coordinator) {
	r := storage.Room{Class: "chat", Name: "again"}
	first, err := c.Acquire(ctx, r, "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.Acquire(ctx, r, "node-a", time.Minute)
	if err != nil || second.Node != "node-a" || second.Token <= first.Token {
		t.Fatalf("acquire by the holder = %+v, %v; want node-a with a token > %d", second, err, first.Token)
	}
	states, err := c.Renew(ctx, "node-a", time.Minute, []storage.Room{r, r}, []uint64{first.Token, second.Token})
	if err != nil || !slices.Equal(states, []storage.LeaseState{storage.LeaseLost, storage.LeaseRenewed}) {
		t.Fatalf("renew with the old and the new token = %v, %v; want lost, renewed", states, err)
	}
	if err := c.Release(ctx, []storage.Room{r}, []storage.Lease{first}); err != nil {
		t.Fatal(err)
	}
	if l := owner(t, c, r); l != second {
		t.Fatalf("after a release with the old token: owner = %+v, want %+v", l, second)
	}
}

// Nodes racing for one room: exactly one gets it, and every other is
// told who did. This is invariant 1 (one owner) at the coordinator.
func testRacingAcquires(t *testing.T, c storage.Coordinator) {
	const nodes = 20
	r := storage.Room{Class: "chat", Name: "race"}
	leases := make([]storage.Lease, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() { leases[i], errs[i] = c.Acquire(ctx, r, fmt.Sprint("node-", i), time.Minute) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("both node-%d and node-%d acquired the room", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, storage.ErrLeaseHeld):
			t.Fatalf("node-%d: %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no node acquired the room")
	}
	want := leases[winner]
	if want.Node != fmt.Sprint("node-", winner) || want.Token == 0 {
		t.Fatalf("winner's lease = %+v", want)
	}
	for i, l := range leases {
		if l != want {
			t.Fatalf("node-%d was told %+v, want the winner's %+v", i, l, want)
		}
	}
	if l := owner(t, c, r); l != want {
		t.Fatalf("owner = %+v, want %+v", l, want)
	}
}

// A renewal answers for each room: held by the caller with that token,
// held by another node, held with another token, or held by nobody.
func testRenewMany(t *testing.T, c storage.Coordinator) {
	if states, err := c.Renew(ctx, "node-a", time.Minute, nil, nil); err != nil || len(states) != 0 {
		t.Fatalf("renew of no rooms = %v, %v", states, err)
	}
	rooms := []storage.Room{{Class: "c", Name: "mine"}, {Class: "c", Name: "theirs"}, {Class: "c", Name: "free"}, {Class: "c", Name: "old token"}}
	mine, err := c.Acquire(ctx, rooms[0], "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := c.Acquire(ctx, rooms[1], "node-b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	old, err := c.Acquire(ctx, rooms[3], "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(ctx, rooms[3], "node-a", time.Minute); err != nil {
		t.Fatal(err)
	}
	states, err := c.Renew(ctx, "node-a", time.Minute, rooms, []uint64{mine.Token, theirs.Token, mine.Token, old.Token})
	want := []storage.LeaseState{storage.LeaseRenewed, storage.LeaseLost, storage.LeaseLost, storage.LeaseLost}
	if err != nil || !slices.Equal(states, want) {
		t.Fatalf("Renew = %v, %v; want %v", states, err, want)
	}
	if l := owner(t, c, rooms[1]); l != theirs {
		t.Fatalf("node-a's renewal changed node-b's lease: %+v, want %+v", l, theirs)
	}
}

// Owners answers for every room asked, the zero Lease for a free one.
func testOwners(t *testing.T, c storage.Coordinator) {
	if got, err := c.Owners(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("owners of no rooms = %v, %v", got, err)
	}
	rooms := []storage.Room{{Class: "c", Name: "a"}, {Class: "c", Name: "free"}, {Class: "d", Name: "a"}}
	a, err := c.Acquire(ctx, rooms[0], "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Acquire(ctx, rooms[2], "node-b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Owners(ctx, rooms)
	if want := []storage.Lease{a, {}, b}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("Owners = %+v, %v; want %+v", got, err, want)
	}
}

// A draining node releases all its leases in one call; a lease that is no
// longer the caller's stays with its holder.
func testReleaseMany(t *testing.T, c storage.Coordinator) {
	var rooms []storage.Room
	var leases []storage.Lease
	for i := range 5 {
		r := storage.Room{Class: "c", Name: fmt.Sprint("r", i)}
		l, err := c.Acquire(ctx, r, "node-a", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		rooms, leases = append(rooms, r), append(leases, l)
	}
	stale := leases[4]
	stale.Token-- // as if node-a's lease had been taken over since
	leases[4] = stale
	if err := c.Release(ctx, rooms, leases); err != nil {
		t.Fatal(err)
	}
	owners, err := c.Owners(ctx, rooms)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range owners {
		if held := l.Node != ""; held != (i == 4) {
			t.Fatalf("room %d: held %v after the release", i, held)
		}
	}
}

func testNodeRegistry(t *testing.T, c storage.Coordinator) {
	c.Heartbeat(ctx, storage.NodeRecord{ID: "b", Address: "127.0.0.1:2"}, time.Minute)
	c.Heartbeat(ctx, storage.NodeRecord{ID: "a", Address: "127.0.0.1:1", Sockets: 3}, time.Minute)
	c.Heartbeat(ctx, storage.NodeRecord{ID: "gone", Address: "127.0.0.1:3"}, time.Millisecond)
	var nodes []storage.NodeRecord
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		// "gone" expires within a few ms; the others stay for a minute.
		nodes, err = c.Nodes(ctx)
		if err != nil || len(nodes) != 3 || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || len(nodes) != 2 || nodes[0].ID != "a" || nodes[0].Sockets != 3 || nodes[1].ID != "b" {
		t.Fatalf("Nodes = %+v, %v", nodes, err)
	}
	c.Leave(ctx, "a")
	if nodes, _ := c.Nodes(ctx); len(nodes) != 1 || nodes[0].ID != "b" {
		t.Fatalf("after Leave: %+v", nodes)
	}
}

// A node's heartbeat replaces its record, and says until when it is
// alive; leaving a registry one is not in is no error.
func testHeartbeatOverwrites(t *testing.T, c storage.Coordinator) {
	if nodes, err := c.Nodes(ctx); err != nil || len(nodes) != 0 {
		t.Fatalf("Nodes of an empty registry = %+v, %v", nodes, err)
	}
	if err := c.Heartbeat(ctx, storage.NodeRecord{ID: "a", Address: "127.0.0.1:1", Sockets: 3}, time.Minute); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := c.Heartbeat(ctx, storage.NodeRecord{ID: "a", Address: "127.0.0.1:1", Sockets: 5, ActiveRooms: 2}, time.Minute); err != nil {
		t.Fatal(err)
	}
	nodes, err := c.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Sockets != 5 || nodes[0].ActiveRooms != 2 {
		t.Fatalf("Nodes after a second heartbeat = %+v, %v; want node a with 5 sockets and 2 rooms", nodes, err)
	}
	if exp := nodes[0].Expires; exp.Before(before.Add(time.Minute)) || exp.After(time.Now().Add(time.Minute)) {
		t.Fatalf("Expires = %v, want the heartbeat's time plus its minute", exp)
	}
	if err := c.Leave(ctx, "never here"); err != nil {
		t.Fatalf("Leave of an unknown node: %v", err)
	}
}

// owner returns the lease on r, the zero Lease when nobody holds it.
func owner(t *testing.T, c storage.Coordinator, r storage.Room) storage.Lease {
	t.Helper()
	l, err := c.Owners(ctx, []storage.Room{r})
	if err != nil {
		t.Fatal(err)
	}
	return l[0]
}
