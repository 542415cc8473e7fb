package rooms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms/internal/linknet"
	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/redisstore/redistest"
)

// Cluster tests on the in-memory network: the fault is injected at an
// exact point (a frame in flight, a direction dropped), not hoped for.
// The nodes still use a real Redis for leases and the registry, which runs
// outside any synctest bubble, so these tests run in real time; see
// TestLinkLivenessUnderSynctest for what runs on the fake clock.

const memA, memB = "10.0.0.1:7000", "10.0.0.2:7000"

// onNetwork puts a node on nw at address instead of on TCP.
func onNetwork(nw *linknet.Network, address string) func(*Options) {
	return func(o *Options) {
		o.Address = address
		o.Transport = nw.Host(address)
	}
}

// relay broadcasts every message, and a request's path.
type relay struct{ broadcaster }

func (relay) OnMessage(ctx context.Context, r *Room, c *Conn, f Frame) error {
	return r.Broadcast(f)
}

// memCluster starts an owner and an edge on nw, each with its own socket
// table, with a relay room running on the owner. broadcast has the room
// send path to every socket.
func memCluster(t *testing.T, nw *linknet.Network) (owner, edge *Runtime, edgeSockets *testEdge, room Addr, broadcast func(path string)) {
	t.Helper()
	redis := redistest.Start(t)
	register := func(rt *Runtime) { rt.Register("relay", func() Handler { return relay{} }) }
	owner = clusterNode(t, redis.URL(), "a", register, onNetwork(nw, memA))
	edge = clusterNode(t, redis.URL(), "b", register, onNetwork(nw, memB))
	edgeSockets = &testEdge{}
	edge.Attach(edgeSockets)
	owner.Attach(&testEdge{})
	owner.cl.heartbeat(context.Background())
	edge.cl.heartbeat(context.Background())
	room = Addr{Class: "relay", Room: "r"}
	broadcast = func(path string) {
		t.Helper()
		if err := owner.Request(context.Background(), room, httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, path, nil)); err != nil {
			t.Errorf("broadcast %s: %v", path, err)
		}
	}
	broadcast("/0") // the room runs on the owner
	return owner, edge, edgeSockets, room, broadcast
}

// joinEdge connects a new socket of user to room through edge.
func joinEdge(t *testing.T, edge *Runtime, sockets *testEdge, room Addr, user string) (*testSocket, error) {
	t.Helper()
	s := newSocket()
	sockets.add(s)
	return s, edge.Connect(context.Background(), room, s, ConnectInfo{User: User{ID: user}})
}

// holeFree fails unless s got nothing after the frames it was read up to,
// and was closed with 1012 so its client reconnects and resumes.
func holeFree(t *testing.T, s *testSocket) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, "the socket to be closed after a lost frame", func() bool {
		s.mu.Lock()
		frames, code, reason := s.frames, s.code, s.reason
		s.mu.Unlock()
		switch {
		case len(frames) > 0:
			t.Fatalf("after a lost frame the socket got %q (closed with %d %q); a hole", frames, code, reason)
		case code != 0 && code != 1012:
			t.Fatalf("after a lost frame the socket was closed with %d %q; want 1012", code, reason)
		}
		return code == 1012
	})
}

// A frame in flight when the link resets is lost; the socket must not get
// the frames the room sends after it. This is TestBrokenLinkNeverLeavesAHole
// with the frame surely lost: the owner's direction drops it (on the wire
// or still in the link's buffer), then both links reset at once.
func TestLinkResetLosesTheFrameInFlight(t *testing.T) {
	nw := linknet.NewNetwork()
	owner, edge, sockets, room, broadcast := memCluster(t, nw)
	s := joinSynced(t, edge, sockets, room, "u", broadcast)
	gen := owner.cl.generation("b")
	nw.Drop(memA, memB)
	broadcast("/2")
	nw.Reset(memA, memB)
	nw.Heal(memA, memB) // a redial before this waits for it, as a retried SYN
	// The next frame may go before or after the owner hears of the loss;
	// either way it must not reach the socket before its close.
	broadcast("/3")
	testkit.WaitFor(t, 10*time.Second, "the owner to hear of the loss", func() bool { return owner.cl.generation("b") > gen })
	broadcast("/4")
	holeFree(t, s)
}

// A direction that drops frames stalls the link for good, even once the
// network heals (a stream cannot skip what it lost); the links' pings
// notice within linkDeadAfter, and the socket is closed before the room
// sends it anything over the next link.
func TestLinkDropStallsThenCloses(t *testing.T) {
	nw := linknet.NewNetwork()
	owner, edge, sockets, room, broadcast := memCluster(t, nw)
	s := joinSynced(t, edge, sockets, room, "u", broadcast)
	gen := owner.cl.generation("b")
	nw.Drop(memA, memB)
	broadcast("/2") // lost
	nw.Heal(memA, memB)
	broadcast("/3") // behind /2 on the stalled link
	start := time.Now()
	testkit.WaitFor(t, 10*time.Second, "the owner to hear of the loss", func() bool { return owner.cl.generation("b") > gen })
	if took := time.Since(start); took > 2*linkDeadAfter {
		t.Errorf("the loss was noticed after %v; the links' limit is %v", took, linkDeadAfter)
	}
	broadcast("/4") // over a new link
	holeFree(t, s)
}

// A partition between an edge and a room's owner closes the edge's
// sockets in that room (1012, with no hole), refuses new ones while it
// lasts, and once it heals the edge's new sockets join the room, whose
// member list lost the old ones: nothing stays stranded on either side.
func TestPartitionBetweenEdgeAndOwnerThenHeal(t *testing.T) {
	nw := linknet.NewNetwork()
	owner, edge, sockets, room, broadcast := memCluster(t, nw)
	old := joinSynced(t, edge, sockets, room, "old", broadcast)

	nw.Partition(memA, memB)
	if err := edge.Message(context.Background(), room, old, Frame{Op: Text, Data: []byte("lost")}); err != nil {
		t.Fatalf("a message into the partition: %v; want it queued on the link", err)
	}
	broadcast("/2")
	holeFree(t, old)
	edge.Closed(room, old, old.code, old.reason) // as the gateway does: the room hears of it after the heal
	if _, err := joinEdge(t, edge, sockets, room, "refused"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a socket joining across the partition: %v; want ErrUnavailable", err)
	}

	nw.Heal(memA, memB)
	// A client reconnects on 1012. The room's stream to b broke twice
	// (the link, then the closes it queued for b, dropped with the dial
	// that hung in the partition), and its next frame to b closes all
	// it has there that it knew before the break; a socket whose join
	// raced the break is one of them, so the client may need another try.
	var s *testSocket
	var err error
	for try := 0; ; try++ {
		testkit.WaitFor(t, 10*time.Second, "a new socket to join through the edge", func() bool {
			s, err = joinEdge(t, edge, sockets, room, "new")
			return err == nil
		})
		path := fmt.Sprintf("/3.%d", try)
		broadcast(path)
		got := s.next(t)
		if got == path {
			break
		}
		if try == 2 || got != "closed 1012 link to the room broke, reconnect" {
			t.Fatalf("after the heal, try %d: the new socket got %q; want %s", try, got, path)
		}
		edge.Closed(room, s, s.code, s.reason)
	}
	if err := edge.Message(context.Background(), room, s, Frame{Op: Text, Data: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	if got := s.next(t); got != "hello" {
		t.Fatalf("the new socket's message came back as %q", got)
	}
	testkit.WaitFor(t, 10*time.Second, "the room to keep only the new socket", func() bool {
		conns, err := owner.Connections(context.Background(), room)
		return err == nil && len(conns) == 1 && conns[0].User.ID == "new"
	})
	if s.code != 0 {
		t.Fatalf("the new socket was closed with %d", s.code)
	}
}

// A socket that joins a room after the room's stream to its edge broke
// missed no frame, and must not be closed for the break: only the sockets
// the room knew on the broken stream are.
func TestSocketJoinedAfterABreakStaysOpen(t *testing.T) {
	nw := linknet.NewNetwork()
	owner, edge, sockets, room, broadcast := memCluster(t, nw)
	joinSynced(t, edge, sockets, room, "old", broadcast)
	gen := owner.cl.generation("b")
	nw.Partition(memA, memB)
	// The links die, and the closes the room sends old die with the
	// owner's dial to b, which hangs.
	testkit.WaitFor(t, 10*time.Second, "the room's closes for b to be dropped", func() bool { return owner.cl.generation("b") >= gen+2 })
	nw.Heal(memA, memB)
	testkit.WaitFor(t, 10*time.Second, "the owner's redial back-off to pass", func() bool {
		owner.cl.mu.Lock()
		defer owner.cl.mu.Unlock()
		return time.Now().After(owner.cl.dialFailed["b"])
	})
	s, err := joinEdge(t, edge, sockets, room, "new")
	if err != nil {
		t.Fatal(err)
	}
	broadcast("/2")
	if got := s.next(t); got != "/2" {
		t.Fatalf("a socket that joined after the break got %q; want /2", got)
	}
}

// linkOnlyNode is a cluster node that runs no room and never joins the
// registry: only its links run. Its store and coordinator are never called
// (a call would panic), so it runs inside a synctest bubble; the cluster
// secret spares the registry check of the links it accepts.
func linkOnlyNode(t *testing.T, nw *linknet.Network, id, address string) *cluster {
	t.Helper()
	rt, err := New(Options{Store: struct{ storage.Store }{}, Coordinator: struct{ storage.Coordinator }{},
		Metrics: prometheus.NewRegistry(), NodeID: id, Address: address, ClusterSecret: "s", Transport: nw.Host(address)})
	if err != nil {
		t.Fatal(err)
	}
	return rt.cl
}

// The links' own timing on the fake clock: an idle link lives on its
// pings for good; once one direction drops, the receiving node closes the
// link within linkDeadAfter of the last frame it read, and the sending
// node hears of it at that same instant and counts a break in its stream.
func TestLinkLivenessUnderSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := linknet.NewNetwork()
		a, b := linkOnlyNode(t, nw, "a", memA), linkOnlyNode(t, nw, "b", memB)
		l, err := a.dialLink(context.Background(), "b", memB)
		if err != nil {
			t.Fatal(err)
		}
		a.register(l)
		b.mu.Lock()
		var inbound *link
		for in := range b.inbound {
			inbound = in
		}
		b.mu.Unlock()

		time.Sleep(time.Hour) // fake time: an idle hour, the link kept up by pings alone
		if l.isClosed() || inbound.isClosed() {
			t.Fatal("an idle link closed: its pings did not keep it up")
		}
		if _, ok := a.probe(context.Background(), "b", []SocketID{1}); !ok {
			t.Fatal("a probe over the link was not answered")
		}

		nw.Drop(memA, memB)
		dropped := time.Now()
		<-inbound.done
		took := time.Since(dropped)
		if took <= linkDeadAfter-linkPingEvery || took > linkDeadAfter {
			t.Fatalf("b closed the link %v after the drop; want within %v of the last ping", took, linkDeadAfter)
		}
		<-l.done
		if time.Since(dropped) != took {
			t.Fatalf("a heard of the loss %v after b closed the link; want at once", time.Since(dropped)-took)
		}
		synctest.Wait() // the link's loss is settled after done closes
		if gen := a.generation("b"); gen != 2 {
			t.Fatalf("a's stream to b is at generation %d after the loss; want 2", gen)
		}
		a.closeLinks()
		b.closeLinks()
	})
}

// Leaving the cluster closes every link and waits for every goroutine the
// links started, a dial hung in a partition included, without waiting out
// its limit; no link is taken or dialed after.
func TestLeaveWaitsForTheLinks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const memC = "10.0.0.3:7000"
		nw := linknet.NewNetwork()
		a, b := linkOnlyNode(t, nw, "a", memA), linkOnlyNode(t, nw, "b", memB)
		linkOnlyNode(t, nw, "c", memC)
		a.nodes.Store(&map[string]storage.NodeRecord{"b": {ID: "b", Address: memB}, "c": {ID: "c", Address: memC}})
		for _, pair := range []struct {
			from *cluster
			to   string
			addr string
		}{{a, "b", memB}, {b, "a", memA}} {
			l, err := pair.from.dialLink(context.Background(), pair.to, pair.addr)
			if err != nil {
				t.Fatal(err)
			}
			pair.from.register(l)
		}
		nw.Partition(memA, memC)
		a.sendTo("c", &linkMsg{typ: tPing}) // queued, and dialed in the background: the dial hangs
		synctest.Wait()

		start := time.Now()
		a.closeLinks()
		if took := time.Since(start); took != 0 {
			t.Fatalf("leaving took %v of fake time; want no wait for the hung dial", took)
		}
		a.mu.Lock()
		_, queued := a.backlog["c"]
		a.mu.Unlock()
		if queued {
			t.Fatal("leaving returned before the dial for c's backlog gave up")
		}
		synctest.Wait() // b hears its links close
		b.mu.Lock()
		if len(b.links) != 0 || len(b.inbound) != 0 {
			t.Errorf("b still has %d links and %d inbound ones to a that left", len(b.links), len(b.inbound))
		}
		b.mu.Unlock()
		if _, err := a.linkTo(context.Background(), "b"); !errors.Is(err, errLeft) {
			t.Errorf("a link wanted after leaving: %v; want errLeft", err)
		}
		if _, err := b.dialLink(context.Background(), "a", memA); err == nil {
			t.Error("a link to a node that left was taken")
		}
		b.closeLinks()
	})
}

// joinSynced connects a socket of user to room through edge and waits for
// the room's first broadcast ("/1") to reach it: the stream is up.
func joinSynced(t *testing.T, edge *Runtime, sockets *testEdge, room Addr, user string, broadcast func(string)) *testSocket {
	t.Helper()
	s, err := joinEdge(t, edge, sockets, room, user)
	if err != nil {
		t.Fatal(err)
	}
	broadcast("/1")
	if got := s.next(t); got != "/1" {
		t.Fatalf("first frame %q", got)
	}
	return s
}
