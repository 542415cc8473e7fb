package rooms

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/hibernation"
	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/redisstore"
	"github.com/roomgate/roomgate/storage/redisstore/redistest"
)

// clusterNode is an in-process cluster node: a Runtime on Redis whose
// links are served on a port of its own. (The gateway is not needed to
// exercise what rooms do between nodes.)
// tune, when given, adjusts the node's options before it starts.
func clusterNode(t *testing.T, redisURL, id string, register func(*Runtime), tune ...func(*Options)) *Runtime {
	t.Helper()
	rs := redistest.Open(t, redisstore.Options{URL: redisURL})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Store: rs, Coordinator: rs, Metrics: prometheus.NewRegistry(), NodeID: id, Address: ln.Addr().String()}
	for _, f := range tune {
		f(&o)
	}
	rt, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	register(rt)
	mux := http.NewServeMux()
	mux.Handle(LinkPath, rt.LinkHandler())
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	return rt
}

// startRedisStore starts a redis-server and opens a store on it, closed
// when the test ends.
func startRedisStore(t *testing.T) (*redistest.Server, *redisstore.Store) {
	t.Helper()
	redis := redistest.Start(t)
	return redis, redistest.Open(t, redisstore.Options{URL: redis.URL()})
}

// responder answers requests with what they asked for, from whichever node
// runs the room.
type responder struct{ node string }

func (r *responder) OnMessage(context.Context, *Room, *Conn, Frame) error { return nil }

func (r *responder) OnRequest(ctx context.Context, room *Room, w http.ResponseWriter, req *http.Request) error {
	body, _ := io.ReadAll(req.Body)
	w.Header().Set("X-Answered-By", r.node)
	w.WriteHeader(http.StatusTeapot)
	io.WriteString(w, req.Method+" "+req.URL.Path+" "+string(body))
	return nil
}

func TestRequestForwardedToTheOwner(t *testing.T) {
	redis := redistest.Start(t)
	nodes := map[string]*Runtime{}
	for _, id := range []string{"a", "b"} {
		nodes[id] = clusterNode(t, redis.URL(), id, func(rt *Runtime) {
			rt.Register("responder", func() Handler { return &responder{node: id} })
		})
	}
	room := Addr{Class: "responder", Room: "r"}
	ask := func(rt *Runtime, body string) *httptest.ResponseRecorder {
		t.Helper()
		w := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/thing", strings.NewReader(body))
		if err := rt.Request(context.Background(), room, w, req); err != nil {
			t.Fatal(err)
		}
		return w
	}
	ask(nodes["a"], "first") // places the room on a
	w := ask(nodes["b"], "second")
	if w.Code != http.StatusTeapot || w.Header().Get("X-Answered-By") != "a" || w.Body.String() != "POST /thing second" {
		t.Fatalf("through b: %d %v %q; want 418 from a with the request echoed", w.Code, w.Header(), w.Body.String())
	}
	info, err := nodes["b"].Room(context.Background(), room)
	if err != nil || info.Owner != "a" || info.State != "active" {
		t.Fatalf("b describes the room as %+v, %v", info, err)
	}
}

// A link from something that is not a registered node is refused; with a
// cluster secret, so is one that does not present it.
func TestLinksOnlyFromNodes(t *testing.T) {
	redis := redistest.Start(t)
	rt := clusterNode(t, redis.URL(), "a", func(*Runtime) {})
	dial := func(node, secret string, headers ...string) int {
		t.Helper()
		c, err := net.Dial("tcp", rt.o.Address)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		req, _ := http.NewRequest(http.MethodGet, "http://"+rt.o.Address+LinkPath, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", linkProtocol)
		req.Header.Set(hdrNode, node)
		req.Header.Set(hdrIncarnation, "7")
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		if secret != "" {
			req.Header.Set(hdrSecret, secret)
		}
		req.Write(c)
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	// Two more registered nodes: one at an address this test does not
	// dial from, one on loopback like the test.
	rs := redistest.Open(t, redisstore.Options{URL: redis.URL()})
	for id, addr := range map[string]string{"elsewhere": "10.0.0.1:1", "near": "127.0.0.1:1"} {
		if err := rs.Heartbeat(context.Background(), storage.NodeRecord{ID: id, Address: addr}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	rt.cl.heartbeat(context.Background())
	if code := dial("evil", ""); code != http.StatusForbidden {
		t.Fatalf("link from an unregistered node: %d, want 403", code)
	}
	if code := dial("elsewhere", ""); code != http.StatusForbidden {
		t.Fatalf("link claiming a node registered at another address: %d, want 403", code)
	}
	if code := dial("near", "", hdrIncarnation, "not a number"); code != http.StatusBadRequest {
		t.Fatalf("link without a readable incarnation: %d, want 400", code)
	}
	if code := dial("near", ""); code != http.StatusSwitchingProtocols {
		t.Fatalf("link from a registered node at its address: %d, want 101", code)
	}
	rt.cl.secret = "s3cret"
	if code := dial("evil", "wrong"); code != http.StatusForbidden {
		t.Fatalf("link with a wrong secret: %d, want 403", code)
	}
	if code := dial("b", "s3cret"); code != http.StatusSwitchingProtocols {
		t.Fatalf("link with the secret: %d, want 101", code)
	}
}

// A drained node releases the leases of every room it ran, running or
// parked, so other nodes take them at once instead of after the TTL.
func TestDrainReleasesEveryLease(t *testing.T) {
	_, rs := startRedisStore(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	rt, err := New(Options{Store: rs, Coordinator: rs, Metrics: prometheus.NewRegistry(), NodeID: "a", Address: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	rt.Register("responder", func() Handler { return &responder{node: "a"} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()
	rooms := []Addr{{Class: "responder", Room: "one"}, {Class: "responder", Room: "two"}}
	for _, a := range rooms {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		if err := rt.Request(context.Background(), a, httptest.NewRecorder(), req); err != nil {
			t.Fatal(err)
		}
		if l, _ := rs.Owners(context.Background(), []storage.Room{a.storageRoom()}); l[0].Node == "" {
			t.Fatalf("%s has no lease while it runs", a)
		}
	}
	cancel() // drain, with both rooms still running (they park only after a second)
	<-done
	for _, a := range rooms {
		if l, _ := rs.Owners(context.Background(), []storage.Room{a.storageRoom()}); l[0].Node != "" {
			t.Errorf("%s still leased to %+v after the drain", a, l[0])
		}
	}
}

// releaseCounter is a coordinator that counts its Release calls and the
// leases they carry.
type releaseCounter struct {
	storage.Coordinator
	calls, leases atomic.Int64
}

func (c *releaseCounter) Release(ctx context.Context, rooms []storage.Room, leases []storage.Lease) error {
	c.calls.Add(1)
	c.leases.Add(int64(len(leases)))
	return c.Coordinator.Release(ctx, rooms, leases)
}

// Rooms that fall idle give up their leases, so their next event may start
// them on any node; the rooms one sweep evicts are released together, not
// with a goroutine and a round trip each.
func TestIdleRoomsGiveUpTheirLeases(t *testing.T) {
	redis := redistest.Start(t)
	// Leases that outlive the test: only a release can free them.
	const ttl = time.Minute
	var counter *releaseCounter
	a := clusterNode(t, redis.URL(), "a", func(rt *Runtime) {
		rt.Register("responder", func() Handler { return &responder{node: "a"} })
	}, func(o *Options) {
		o.HibernateAfter = 2 * time.Second // a sweep every 500 ms
		o.LeaseTTL = ttl
		counter = &releaseCounter{Coordinator: o.Coordinator}
		o.Coordinator = counter
	})
	b := clusterNode(t, redis.URL(), "b", func(rt *Runtime) {
		rt.Register("responder", func() Handler { return &responder{node: "b"} })
	}, func(o *Options) { o.LeaseTTL = ttl })
	ask := func(rt *Runtime, room Addr) string {
		w := httptest.NewRecorder()
		if err := rt.Request(context.Background(), room, w, httptest.NewRequest(http.MethodGet, "/", nil)); err != nil {
			t.Error(err)
		}
		return w.Header().Get("X-Answered-By")
	}
	const n = 400
	addrs := make([]Addr, n)
	rooms := make([]storage.Room, n)
	var wg sync.WaitGroup
	for i := range n {
		addrs[i] = Addr{Class: "responder", Room: fmt.Sprintf("r%03d", i)}
		rooms[i] = addrs[i].storageRoom()
		wg.Go(func() { ask(a, addrs[i]) })
	}
	wg.Wait()
	deadline := time.Now().Add(15 * time.Second)
	testkit.Eventually(t, time.Until(deadline), func() error {
		if a.nrooms.Load() > 0 || counter.leases.Load() < n {
			return fmt.Errorf("%d rooms still in memory, %d of %d leases released", a.nrooms.Load(), counter.leases.Load(), n)
		}
		return nil
	})
	if calls := counter.calls.Load(); calls > 10 {
		t.Errorf("%d leases released in %d calls; want one call per sweep", n, calls)
	}
	testkit.Eventually(t, time.Until(deadline), func() error {
		owners, err := counter.Owners(context.Background(), rooms)
		if err != nil {
			t.Fatal(err)
		}
		held := 0
		for _, l := range owners {
			if l.Node != "" {
				held++
			}
		}
		if held > 0 {
			return fmt.Errorf("%d of %d rooms still leased after their eviction", held, n)
		}
		return nil
	})
	if by := ask(b, addrs[0]); by != "b" {
		t.Fatalf("after its eviction from a, the room's next event through b was answered by %q; want b", by)
	}
}

// frozenNode registers a node whose address accepts connections and never
// answers: a dial to it hangs until its timeout.
func frozenNode(t *testing.T, rs *redisstore.Store, id string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	if err := rs.Heartbeat(context.Background(), storage.NodeRecord{ID: id, Address: ln.Addr().String()}, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// broadcaster answers a request by broadcasting its path to every socket.
type broadcaster struct{}

func (broadcaster) OnMessage(context.Context, *Room, *Conn, Frame) error { return nil }

func (broadcaster) OnRequest(ctx context.Context, r *Room, w http.ResponseWriter, req *http.Request) error {
	return r.Broadcast(Frame{Op: Text, Data: []byte(req.URL.Path)})
}

// A room with a socket on a frozen node does not wait for that node: its
// sends there are queued while the link is dialed, and its other work
// goes on.
func TestFrozenEdgeDoesNotHoldUpTheRoom(t *testing.T) {
	redis, rs := startRedisStore(t)
	frozenNode(t, rs, "frozen")
	a := Addr{Class: "b", Room: "r"}
	rec := hibernation.Member{ID: 42, Edge: "frozen", UserID: "u", ConnectedAt: time.Now().UnixNano()}
	if err := storage.CommitAndWait(context.Background(), rs, a.storageRoom(), &storage.Batch{Members: []storage.Member{{ID: 42, Data: rec.Encode()}}}); err != nil {
		t.Fatal(err)
	}
	rt := clusterNode(t, redis.URL(), "a", func(rt *Runtime) { rt.Register("b", func() Handler { return broadcaster{} }) })
	rt.cl.heartbeat(context.Background())
	start := time.Now()
	for i := range 3 {
		req := httptest.NewRequest(http.MethodPost, fmt.Sprintf("/%d", i), nil)
		if err := rt.Request(context.Background(), a, httptest.NewRecorder(), req); err != nil {
			t.Fatal(err)
		}
	}
	// Each broadcast goes to the frozen node's socket; had the room dialed
	// it, each would have waited out the dial (2 s).
	if took := time.Since(start); took >= linkDialLimit {
		t.Fatalf("three broadcasts took %v: the room waited for the frozen node", took)
	}
}

// Two nodes that first need each other at the same moment both dial: each
// keeps sending over the link it dialed, so neither loses a request to the
// other's choice of link.
func TestSimultaneousFirstContact(t *testing.T) {
	redis := redistest.Start(t)
	for round := range 10 {
		reg := func(id string) func(*Runtime) {
			return func(rt *Runtime) { rt.Register("responder", func() Handler { return &responder{node: id} }) }
		}
		a := clusterNode(t, redis.URL(), fmt.Sprintf("a%d", round), reg("a"))
		b := clusterNode(t, redis.URL(), fmt.Sprintf("b%d", round), reg("b"))
		onA, onB := Addr{Class: "responder", Room: fmt.Sprintf("on-a-%d", round)}, Addr{Class: "responder", Room: fmt.Sprintf("on-b-%d", round)}
		ask := func(rt *Runtime, room Addr) error {
			return rt.Request(context.Background(), room, httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
		}
		if err := ask(a, onA); err != nil {
			t.Fatal(err)
		}
		if err := ask(b, onB); err != nil {
			t.Fatal(err)
		}
		a.cl.heartbeat(context.Background())
		b.cl.heartbeat(context.Background())
		errs := make(chan error, 40)
		for range 20 {
			go func() { errs <- ask(a, onB) }()
			go func() { errs <- ask(b, onA) }()
		}
		for range 40 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: a request across the new links failed: %v", round, err)
			}
		}
	}
}

// A cluster node is ready only once the registry lists it: before that,
// other nodes refuse its links, so clients sent to it would be stranded.
func TestReadyWaitsForTheNodeRegistry(t *testing.T) {
	redis, rs := startRedisStore(t)
	rt, err := New(Options{Store: rs, Coordinator: rs, Metrics: prometheus.NewRegistry(), NodeID: "late",
		Address: "127.0.0.1:1", LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Ready(context.Background()); err == nil {
		t.Fatal("ready before the node registered itself")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	testkit.Eventually(t, 5*time.Second, func() error {
		if err := rt.Ready(context.Background()); err != nil {
			return fmt.Errorf("not ready after start: %w", err)
		}
		return nil
	})
	nodes, err := rs.Nodes(context.Background())
	if err != nil || len(nodes) != 1 || nodes[0].ID != "late" {
		t.Fatalf("ready, but the registry lists %+v (%v)", nodes, err)
	}
	redis.Stop()
	testkit.WaitFor(t, 5*time.Second, "the node to be unready after Redis stopped", func() bool {
		return rt.Ready(context.Background()) != nil
	})
}

// In a cluster a socket is let in only once its membership record is
// committed; when that commit fails, the socket is refused and must not
// stay behind in the room as a member nobody will ever close.
func TestRefusedConnectLeavesNoMember(t *testing.T) {
	redis := redistest.Start(t)
	var store *failingStore
	rt := clusterNode(t, redis.URL(), "a", func(rt *Runtime) {
		rt.Register("responder", func() Handler { return &responder{node: "a"} })
	}, func(o *Options) {
		store = &failingStore{Store: o.Store}
		o.Store = store
	})
	room := Addr{Class: "responder", Room: "ghosts"}
	if err := rt.Connect(context.Background(), room, newSocket(), ConnectInfo{User: User{ID: "kept"}}); err != nil {
		t.Fatal(err)
	}
	store.fail.Store(true)
	if err := rt.Connect(context.Background(), room, newSocket(), ConnectInfo{User: User{ID: "ghost"}}); err == nil {
		t.Fatal("a connect whose record could not be committed was accepted")
	}
	store.fail.Store(false)
	conns, err := rt.Connections(context.Background(), room)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 1 || conns[0].User.ID != "kept" {
		t.Fatalf("members after a refused connect: %+v; want only the kept one", conns)
	}
}

// A node that leaves the registry is taken for dead whoever reads the
// registry first: when a lookup of a new node reads it before the
// heartbeat does, the dead node's sockets must still leave the rooms.
func TestDeadNodeNoticedWhoeverReadsTheRegistry(t *testing.T) {
	redis, rs := startRedisStore(t)
	// Node x: registered for 1.5 s, never heard of again.
	if err := rs.Heartbeat(context.Background(), storage.NodeRecord{ID: "x", Address: "127.0.0.1:1"}, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	a := Addr{Class: "b", Room: "r"}
	rec := hibernation.Member{ID: 4242, Edge: "x", UserID: "u", ConnectedAt: time.Now().UnixNano()}
	if err := storage.CommitAndWait(context.Background(), rs, a.storageRoom(), &storage.Batch{Members: []storage.Member{{ID: 4242, Data: rec.Encode()}}}); err != nil {
		t.Fatal(err)
	}
	rt := clusterNode(t, redis.URL(), "a", func(rt *Runtime) { rt.Register("b", func() Handler { return broadcaster{} }) },
		func(o *Options) { o.LeaseTTL = 30 * time.Second })
	rt.cl.heartbeat(context.Background())
	if err := rt.Request(context.Background(), a, httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/wake", nil)); err != nil {
		t.Fatal(err)
	}
	if conns, _ := rt.Connections(context.Background(), a); len(conns) != 1 {
		t.Fatalf("the room woke with %d members, want x's one", len(conns))
	}
	testkit.WaitFor(t, 5*time.Second, "x's registration to expire", func() bool {
		nodes, err := rs.Nodes(context.Background())
		return err == nil && !slices.ContainsFunc(nodes, func(n storage.NodeRecord) bool { return n.ID == "x" })
	})
	rt.cl.node(context.Background(), "newcomer") // a link from or to a node not in the cache reads the registry first
	rt.cl.heartbeat(context.Background())
	testkit.WaitFor(t, 10*time.Second, "x's socket to leave the room", func() bool {
		conns, _ := rt.Connections(context.Background(), a)
		return len(conns) == 0
	})
}

// writer writes the request's path, so a fenced instance shows at once.
type writer struct{}

func (writer) OnMessage(context.Context, *Room, *Conn, Frame) error { return nil }

func (writer) OnRequest(ctx context.Context, r *Room, w http.ResponseWriter, req *http.Request) error {
	return r.Storage().Put("k", []byte(req.URL.Path))
}

// Two events for a room that is not running here both go to place it; the
// one that finds the room started by the other must not take its lease
// again, which would fence the running instance out.
func TestPlacementFindsTheRoomStartedMeanwhile(t *testing.T) {
	redis := redistest.Start(t)
	rt := clusterNode(t, redis.URL(), "a", func(rt *Runtime) { rt.Register("w", func() Handler { return writer{} }) })
	cl, a := rt.cl, Addr{Class: "w", Room: "r"}
	cl.placeMu.Lock() // the second event waits here, past its check that the room is not running
	second := make(chan error, 1)
	go func() {
		_, _, err := cl.place(context.Background(), a, false, func(l *heldLease) error {
			return rt.sendWith(a, event{kind: evWake}, false, l)
		})
		second <- err
	}()
	testkit.WaitBlocked(t, 5*time.Second, "(*cluster).place(", "sync.Mutex.Lock")
	// Meanwhile the first event's placement runs to the end.
	l, err := cl.coord.Acquire(context.Background(), a.storageRoom(), "a", cl.ttl)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.sendWith(a, event{kind: evWake}, false, &heldLease{Lease: l, start: time.Now()}); err != nil {
		t.Fatal(err)
	}
	cl.placeMu.Unlock()
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if err := rt.Request(context.Background(), a, httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/x", nil)); err != nil {
		t.Fatalf("a write to the room this node runs failed: %v", err)
	}
}

// Messages forwarded for a room that waits for its placement (Redis slow)
// queue up to MaxQueuedEvents, as in a running room's mailbox; past it
// they are refused, not kept without bound.
func TestEventsWaitingForPlacementAreBounded(t *testing.T) {
	redis := redistest.Start(t)
	rt := clusterNode(t, redis.URL(), "a", func(rt *Runtime) { rt.Register("w", func() Handler { return writer{} }) },
		func(o *Options) { o.MaxQueuedEvents = 10 })
	a := Addr{Class: "w", Room: "slow"}
	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	rt.cl.inOrder(a, func() { close(started); <-release }, nil) // a placement that hangs
	<-started
	var refused atomic.Int32
	for range 15 {
		rt.cl.inOrder(a, func() {}, func() { refused.Add(1) })
	}
	if n := refused.Load(); n != 5 {
		t.Fatalf("%d of 15 messages refused behind a hanging placement with room for 10; want 5", n)
	}
}

// When the link that carries a room's frames to another node breaks while
// both nodes live, the frames on it may be lost. A socket there must never
// see a later frame after a lost one: the room closes its sockets there
// (1012, so they reconnect and resume) before it sends them anything more,
// and also when it sends nothing more at all.
func TestBrokenLinkNeverLeavesAHole(t *testing.T) {
	redis := redistest.Start(t)
	register := func(rt *Runtime) { rt.Register("b", func() Handler { return broadcaster{} }) }
	owner, edge := clusterNode(t, redis.URL(), "a", register), clusterNode(t, redis.URL(), "b", register)
	edgeSockets := &testEdge{}
	edge.Attach(edgeSockets)
	owner.Attach(&testEdge{})
	owner.cl.heartbeat(context.Background())
	edge.cl.heartbeat(context.Background())
	room := Addr{Class: "b", Room: "holes"}
	broadcast := func(path string) {
		if err := owner.Request(context.Background(), room, httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, path, nil)); err != nil {
			t.Error(err)
		}
	}
	broadcast("/0") // the room runs on the owner
	s := newSocket()
	edgeSockets.add(s)
	if err := edge.Connect(context.Background(), room, s, ConnectInfo{User: User{ID: "u"}}); err != nil {
		t.Fatal(err)
	}
	broadcast("/1")
	if got := s.next(t); got != "/1" {
		t.Fatalf("first frame %q", got)
	}
	// The edge drops the owner's link (its 2 s silence limit, a network
	// blip) while /2 is on its way.
	edge.cl.mu.Lock()
	var inbound []*link
	for l := range edge.cl.inbound {
		inbound = append(inbound, l)
	}
	edge.cl.mu.Unlock()
	done := make(chan struct{})
	go func() { broadcast("/2"); close(done) }()
	for _, l := range inbound {
		l.close(errors.New("test: link reset"))
	}
	<-done
	// A room that sends nothing more still closes what may have missed /2.
	testkit.WaitFor(t, 10*time.Second, "/2 delivered or the socket closed", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.code != 0 || slices.Contains(s.frames, "/2")
	})
	for _, p := range []string{"/3", "/4", "/5"} {
		broadcast(p)
	}
	// Nothing more comes once the socket is closed, or once it has the
	// last frame.
	testkit.WaitFor(t, 10*time.Second, "/5 delivered or the socket closed", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.code != 0 || slices.Contains(s.frames, "/5")
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.frames { // what came after /1
		if want := fmt.Sprintf("/%d", i+2); f != want {
			t.Fatalf("the socket got %q (closed with %d): frame %d is %q, want %q; a hole", s.frames, s.code, i, f, want)
		}
	}
	if len(s.frames) < 4 && s.code != 1012 {
		t.Fatalf("the socket got %q and stays open (code %d) after a lost frame", s.frames, s.code)
	}
	t.Logf("the socket got %q, closed with %d", s.frames, s.code)
}

// A frame that overflows a slow peer's link closes the link; a room's
// delivery does that holding the cluster's lock, which the link's loss
// needs too: it must neither hang nor pretend the frame went out.
func TestDeliveryThatOverflowsALinkBreaksTheStream(t *testing.T) {
	redis := redistest.Start(t)
	cl := clusterNode(t, redis.URL(), "a", func(rt *Runtime) {}).cl
	c1, c2 := net.Pipe()
	defer c2.Close()
	l := newLink(cl, c1, "slow")
	cl.register(l)
	l.mu.Lock()
	l.out = make([]byte, maxLinkBacklog) // nothing written: the peer does not read
	l.mu.Unlock()
	sent := make(chan bool)
	go func() {
		var gen uint64 // the room's first frame there
		sent <- cl.deliver("slow", Addr{Class: "b", Room: "r"}, 1, []SocketID{1}, Frame{Op: Text, Data: []byte("x")}, &gen)
	}()
	select {
	case ok := <-sent:
		if ok {
			t.Fatal("a frame the link could not take was reported sent")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the delivery hung: the link's loss waited for the lock the delivery held")
	}
	testkit.WaitFor(t, 10*time.Second, "the overflowing link to be put away", func() bool {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return cl.links["slow"] == nil && cl.gens["slow"] == 1
	})
}
