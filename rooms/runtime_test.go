package rooms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/storage/filestore"
)

// testSocket stands in for the gateway's socket: it records what the room
// sends. The runtime's contract with sockets is exactly this interface; the
// gateway's tests cover the real one.
type testSocket struct {
	id     SocketID
	mu     sync.Mutex
	frames []string
	code   int
	reason string
	got    chan struct{}
}

var nextTestID atomic.Uint64

// testEdge is the tests' stand-in for the gateway's socket table.
type testEdge struct{ m sync.Map }

func (e *testEdge) add(s Socket) { e.m.Store(s.ID(), s) }

func (e *testEdge) Socket(id SocketID) Socket {
	if s, ok := e.m.Load(id); ok {
		return s.(Socket)
	}
	return nil
}

// sockets holds every testSocket; fixtures attach it.
var sockets = &testEdge{}

func newSocket() *testSocket {
	s := &testSocket{id: SocketID(nextTestID.Add(1)), got: make(chan struct{}, 1<<16)}
	sockets.add(s)
	return s
}

func (s *testSocket) ID() SocketID                  { return s.id }
func (s *testSocket) SetAutoResponse(*AutoResponse) {}
func (s *testSocket) LastAutoResponse() time.Time   { return time.Time{} }
func (s *testSocket) Send(f Frame) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.code != 0 {
		return ErrClosed
	}
	s.frames = append(s.frames, string(f.Data))
	s.got <- struct{}{}
	return nil
}
func (s *testSocket) Close(code int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.code == 0 {
		s.code, s.reason = code, reason
		s.got <- struct{}{}
	}
}

// next waits for the next frame or close and returns it.
func (s *testSocket) next(t *testing.T) string {
	t.Helper()
	select {
	case <-s.got:
	case <-time.After(5 * time.Second):
		t.Fatal("nothing sent within 5s")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.frames) > 0 {
		f := s.frames[0]
		s.frames = s.frames[1:]
		return f
	}
	return fmt.Sprintf("closed %d %s", s.code, s.reason)
}

// probe is a class whose OnMessage runs the test's function.
type probe struct {
	starts *atomic.Int32
	fn     func(ctx context.Context, r *Room, c *Conn, msg string) error
}

func (p *probe) OnStart(ctx context.Context, r *Room) error {
	p.starts.Add(1)
	return nil
}

func (p *probe) OnMessage(ctx context.Context, r *Room, c *Conn, f Frame) error {
	return p.fn(ctx, r, c, string(f.Data))
}

type fixture struct {
	rt     *Runtime
	store  *filestore.Store
	starts atomic.Int32
	reg    *prometheus.Registry
}

func newFixture(t *testing.T, o Options, fn func(ctx context.Context, r *Room, c *Conn, msg string) error) *fixture {
	t.Helper()
	store, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	fx := &fixture{store: store, reg: prometheus.NewRegistry()}
	o.Metrics = fx.reg
	if o.Store == nil {
		o.Store = store
	}
	if fx.rt, err = New(o); err != nil {
		t.Fatal(err)
	}
	fx.rt.Register("probe", func() Handler { return &probe{starts: &fx.starts, fn: fn} })
	fx.rt.Attach(sockets)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fx.rt.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return fx
}

var probeRoom = Addr{Class: "probe", Room: "r"}

func (fx *fixture) connect(t *testing.T) *testSocket {
	t.Helper()
	s := newSocket()
	if err := fx.rt.Connect(context.Background(), probeRoom, s, ConnectInfo{User: User{ID: "u", Name: "U"}}); err != nil {
		t.Fatal(err)
	}
	return s
}

func (fx *fixture) say(t *testing.T, s *testSocket, msg string) {
	t.Helper()
	if err := fx.rt.Message(context.Background(), probeRoom, s, Frame{Op: Text, Data: []byte(msg)}); err != nil {
		t.Fatal(err)
	}
}

func TestStorageSeesItsOwnWritesBeforeTheyCommit(t *testing.T) {
	fx := newFixture(t, Options{}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		s := r.Storage()
		switch msg {
		case "write":
			s.Put("a", []byte("1"))
			s.Put("b/1", []byte("2"))
			s.Put("b/2", []byte("3"))
			s.Delete("a")
		case "read":
			a, _ := s.Get(ctx, "a")
			kvs, _ := s.List(ctx, ListOptions{Prefix: "b/", Reverse: true})
			var keys []string
			for _, kv := range kvs {
				keys = append(keys, kv.Key+"="+string(kv.Value))
			}
			return c.SendText(fmt.Sprintf("a=%q %s", a, strings.Join(keys, ",")))
		case "tx":
			err := s.Transaction(ctx, func(tx *Storage) error {
				tx.Put("b/3", []byte("4"))
				if v, _ := tx.Get(ctx, "b/3"); string(v) != "4" {
					return errors.New("transaction does not see its own write")
				}
				return errors.New("roll back")
			})
			v, _ := s.Get(ctx, "b/3")
			return c.SendText(fmt.Sprintf("%v %q", err, v))
		case "wipe":
			s.DeleteAll()
			s.Put("c", []byte("5"))
			kvs, _ := s.List(ctx, ListOptions{})
			return c.SendText(fmt.Sprintf("%d %s", len(kvs), kvs[0].Key))
		}
		return nil
	})
	s := fx.connect(t)
	fx.say(t, s, "write")
	fx.say(t, s, "read")
	if got := s.next(t); got != `a="" b/2=3,b/1=2` {
		t.Fatalf("read: %s", got)
	}
	fx.say(t, s, "tx")
	if got := s.next(t); got != `roll back ""` {
		t.Fatalf("tx: %s", got)
	}
	fx.say(t, s, "wipe")
	if got := s.next(t); got != "1 c" {
		t.Fatalf("wipe: %s", got)
	}
	// And it is all on disk.
	got, _ := fx.store.Get(context.Background(), probeRoom.storageRoom(), "c", "b/1")
	if string(got[0]) != "5" || got[1] != nil {
		t.Fatalf("stored: %q", got)
	}
}

func TestOutputGateDropsSendsOfAFailedCommit(t *testing.T) {
	fx := newFixture(t, Options{}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		if msg == "write" {
			r.Storage().Put("k", []byte("v"))
		}
		return r.Broadcast(Frame{Op: Text, Data: []byte("after " + msg)})
	})
	s, other := fx.connect(t), fx.connect(t)
	fx.say(t, s, "read-only")
	if got := s.next(t); got != "after read-only" {
		t.Fatalf("got %q", got)
	}
	other.next(t)
	fx.store.Close() // every commit fails from now on
	fx.say(t, s, "write")
	if got := s.next(t); got != "closed 1011 storage failed" {
		t.Fatalf("sender got %q, want a 1011 close and no message", got)
	}
	select {
	case <-other.got:
		t.Fatalf("a bystander received the failed event's broadcast: %q", other.frames)
	case <-time.After(200 * time.Millisecond):
	}
	if n := testutil.ToFloat64(fx.rt.m.failures.WithLabelValues("commit")); n < 1 {
		t.Errorf("commit failures counted %v", n)
	}
}

func TestHandlerFailureRebuildsTheInstance(t *testing.T) {
	fx := newFixture(t, Options{}, nil)
	fx.rt.classes["probe"].new = func() Handler {
		return &probe{starts: &fx.starts, fn: func(ctx context.Context, r *Room, c *Conn, msg string) error {
			switch msg {
			case "panic":
				panic("boom")
			case "error":
				return errors.New("bad")
			}
			return c.SendText(fmt.Sprint("starts=", fx.starts.Load()))
		}}
	}
	s, bystander := fx.connect(t), fx.connect(t)
	fx.say(t, s, "hello")
	if got := s.next(t); got != "starts=1" {
		t.Fatalf("got %q", got)
	}
	for i, trigger := range []string{"panic", "error"} {
		c := fx.connect(t)
		fx.say(t, c, trigger)
		if got := c.next(t); got != "closed 1011 room handler failed" {
			t.Fatalf("%s: got %q", trigger, got)
		}
		fx.say(t, bystander, "hello")
		if got, want := bystander.next(t), fmt.Sprint("starts=", i+2); got != want {
			t.Fatalf("after %s: %q, want %q (OnStart ran again)", trigger, got, want)
		}
	}
	if bystander.code != 0 {
		t.Fatal("a bystander was closed")
	}
}

func TestOverloadedRoomRefusesMessages(t *testing.T) {
	block := make(chan struct{})
	fx := newFixture(t, Options{MaxQueuedEvents: 5}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		<-block
		return nil
	})
	s := fx.connect(t)
	var err error
	for i := 0; i < 20 && err == nil; i++ { // a taken batch plus a full queue is at most 10
		err = fx.rt.Message(context.Background(), probeRoom, s, Frame{Op: Text, Data: []byte("x")})
	}
	close(block)
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("got %v, want ErrOverloaded", err)
	}
}

func TestIdleRoomLeavesMemory(t *testing.T) {
	fx := newFixture(t, Options{HibernateAfter: 50 * time.Millisecond}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		return r.Storage().Put("k", []byte(msg))
	})
	s := fx.connect(t)
	fx.say(t, s, "v")
	fx.rt.Closed(probeRoom, s, 1000, "")
	testkit.WaitFor(t, 5*time.Second, "the room to leave memory", func() bool { return fx.rt.active(probeRoom) == nil })
	info, err := fx.rt.Room(context.Background(), probeRoom)
	if err != nil || info.State != "stored" || info.StorageKeys != 1 {
		t.Fatalf("Room = %+v, %v", info, err)
	}
}

func TestDeleteRoom(t *testing.T) {
	fx := newFixture(t, Options{}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		return r.Storage().Put("k", []byte(msg))
	})
	s := fx.connect(t)
	fx.say(t, s, "v")
	if err := fx.rt.DeleteRoom(context.Background(), probeRoom); err != nil {
		t.Fatal(err)
	}
	if got := s.next(t); got != "closed 4404 room deleted" {
		t.Fatalf("got %q", got)
	}
	if kvs, _ := fx.rt.Storage(context.Background(), probeRoom, "", 0); len(kvs) != 0 {
		t.Fatalf("storage left: %v", kvs)
	}
	if err := fx.rt.DeleteRoom(context.Background(), Addr{Class: "probe", Room: "never"}); err != nil {
		t.Fatalf("deleting a room that never existed: %v", err)
	}
}

type requester struct{ probe }

func (q *requester) OnRequest(ctx context.Context, r *Room, w http.ResponseWriter, req *http.Request) error {
	r.Storage().Put("last", []byte(req.URL.Path))
	w.Header().Set("X-Room", r.Name())
	w.WriteHeader(http.StatusTeapot)
	fmt.Fprintf(w, "%s %s", req.Method, req.URL.Path)
	return nil
}

func TestRequestHandler(t *testing.T) {
	fx := newFixture(t, Options{}, nil)
	fx.rt.Register("req", func() Handler { return &requester{probe{starts: new(atomic.Int32)}} })
	a := Addr{Class: "req", Room: "x"}
	rec := httptest.NewRecorder()
	if err := fx.rt.Request(context.Background(), a, rec, httptest.NewRequest("POST", "/some/path", nil)); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusTeapot || rec.Body.String() != "POST /some/path" || rec.Header().Get("X-Room") != "x" {
		t.Fatalf("response %d %q %v", rec.Code, rec.Body, rec.Header())
	}
	if kvs, _ := fx.rt.Storage(context.Background(), a, "last", 0); len(kvs) != 1 {
		t.Fatal("the request's write was not committed before the response")
	}
	err := fx.rt.Request(context.Background(), probeRoom, httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if !errors.Is(err, ErrNoRequestHandler) {
		t.Fatalf("class without OnRequest: %v", err)
	}
}

func TestLimits(t *testing.T) {
	fx := newFixture(t, Options{}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		var errs []string
		for _, err := range []error{
			r.Storage().Put(strings.Repeat("k", MaxKeySize+1), nil),
			r.Storage().Put("", nil),
			r.Storage().Put("k", make([]byte, MaxValueSize+1)),
			c.SetAttachment(make([]byte, MaxAttachmentSize+1)),
			c.SetTags("not", "in", "OnConnect"),
			r.Alarm().Set(time.Time{}),
		} {
			if errors.Is(err, ErrLimit) {
				errs = append(errs, "limit")
			}
		}
		return c.SendText(strings.Join(errs, ","))
	})
	s := fx.connect(t)
	fx.say(t, s, "x")
	if got := s.next(t); got != "limit,limit,limit,limit,limit,limit" {
		t.Fatalf("got %q", got)
	}
}

type alarmed struct {
	probe
	fails *atomic.Int32
	runs  chan AlarmInfo
}

func (a *alarmed) OnMessage(ctx context.Context, r *Room, c *Conn, f Frame) error {
	return r.Alarm().Set(time.Now().Add(50 * time.Millisecond))
}

func (a *alarmed) OnAlarm(ctx context.Context, r *Room, info AlarmInfo) error {
	a.runs <- info
	if a.fails.Add(-1) >= 0 {
		return errors.New("not yet")
	}
	return nil
}

func TestAlarmFiresAndRetriesWithBackoff(t *testing.T) {
	fx := newFixture(t, Options{AlarmRetryBase: 50 * time.Millisecond}, nil)
	fails := new(atomic.Int32)
	fails.Store(2)
	runs := make(chan AlarmInfo, 10)
	fx.rt.Register("alarm", func() Handler { return &alarmed{probe{starts: new(atomic.Int32)}, fails, runs} })
	a := Addr{Class: "alarm", Room: "a"}
	s := newSocket()
	fx.rt.Connect(context.Background(), a, s, ConnectInfo{})
	fx.rt.Message(context.Background(), a, s, Frame{Op: Text, Data: []byte("set")})
	var times []time.Time
	for want := range 3 {
		select {
		case info := <-runs:
			if info.Retry != want {
				t.Fatalf("run %d saw retry %d", want, info.Retry)
			}
			times = append(times, time.Now())
		case <-time.After(5 * time.Second):
			t.Fatalf("alarm run %d did not come", want)
		}
	}
	if gap1, gap2 := times[1].Sub(times[0]), times[2].Sub(times[1]); gap1 < 50*time.Millisecond || gap2 < 100*time.Millisecond {
		t.Errorf("retry gaps %v and %v, want at least 50ms then 100ms", gap1, gap2)
	}
	testkit.WaitFor(t, 5*time.Second, "the alarm to be cleared after it succeeded", func() bool {
		info, _ := fx.rt.Room(context.Background(), a)
		return info.Alarm == nil
	})
}

func TestFailedHandlerSocketClosedEvenIfTheCommitAheadFails(t *testing.T) {
	fx := newFixture(t, Options{}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		switch msg {
		case "write":
			return r.Storage().Put("k", []byte("v"))
		case "fail":
			return errors.New("handler failed")
		}
		return nil
	})
	w, x := fx.connect(t), fx.connect(t)
	fx.store.Close() // the next commit fails
	fx.say(t, w, "write")
	fx.say(t, x, "fail")
	for _, s := range []*testSocket{w, x} {
		if got := s.next(t); !strings.HasPrefix(got, "closed 1011") {
			t.Fatalf("socket %d got %q, want a 1011 close", s.id, got)
		}
	}
}

type staleAlarm struct {
	probe
	runs chan AlarmInfo
}

func (a *staleAlarm) OnMessage(ctx context.Context, r *Room, c *Conn, f Frame) error {
	switch string(f.Data) {
	case "soon":
		return r.Alarm().Set(time.Now().Add(20 * time.Millisecond))
	case "later":
		return r.Alarm().Set(time.Now().Add(time.Hour))
	}
	return nil
}

func (a *staleAlarm) OnAlarm(ctx context.Context, r *Room, info AlarmInfo) error {
	a.runs <- info
	return errors.New("fail, and retry")
}

// TestMovedAlarmIsNotClearedByAStaleRetry fails an alarm, then moves it an
// hour ahead before the retry: the retry must not run, and the new alarm
// must stay.
func TestMovedAlarmIsNotClearedByAStaleRetry(t *testing.T) {
	fx := newFixture(t, Options{AlarmRetryBase: 200 * time.Millisecond}, nil)
	runs := make(chan AlarmInfo, 10)
	fx.rt.Register("stale", func() Handler { return &staleAlarm{probe{starts: new(atomic.Int32)}, runs} })
	a := Addr{Class: "stale", Room: "s"}
	s := newSocket()
	fx.rt.Connect(context.Background(), a, s, ConnectInfo{})
	fx.rt.Message(context.Background(), a, s, Frame{Op: Text, Data: []byte("soon")})
	select {
	case <-runs:
	case <-time.After(5 * time.Second):
		t.Fatal("the alarm did not fire")
	}
	fx.rt.Message(context.Background(), a, s, Frame{Op: Text, Data: []byte("later")})
	select {
	case info := <-runs:
		t.Fatalf("a stale retry ran: %+v", info)
	case <-time.After(500 * time.Millisecond):
	}
	info, err := fx.rt.Room(context.Background(), a)
	if err != nil || info.Alarm == nil || time.Until(*info.Alarm) < 50*time.Minute {
		t.Fatalf("the moved alarm: %+v %v", info, err)
	}
}

// A write from outside a handler (a goroutine the room started, a Room kept
// after its event) belongs to no commit: it is refused, as a send is, not
// silently lost.
func TestWritesOutsideAnEventAreRefused(t *testing.T) {
	var kept *Room
	fx := newFixture(t, Options{}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		kept = r
		return c.SendText("kept")
	})
	s := fx.connect(t)
	fx.say(t, s, "keep")
	s.next(t) // sent after the event ended
	st := kept.Storage()
	for name, err := range map[string]error{
		"Put":          st.Put("k", []byte("v")),
		"PutMany":      st.PutMany(map[string][]byte{"k": []byte("v")}),
		"Delete":       st.Delete("k"),
		"DeleteAll":    st.DeleteAll(),
		"Transaction":  st.Transaction(context.Background(), func(tx *Storage) error { return nil }),
		"Alarm.Set":    kept.Alarm().Set(time.Now().Add(time.Hour)),
		"Alarm.Delete": kept.Alarm().Delete(),
	} {
		if !errors.Is(err, ErrOutsideEvent) {
			t.Errorf("%s outside an event: %v, want ErrOutsideEvent", name, err)
		}
	}
}

// An alarm past what the stores can hold (Unix nanoseconds end in 2262)
// is refused; it used to wrap around and fire at once.
func TestAlarmTooFarIsRefused(t *testing.T) {
	fx := newFixture(t, Options{}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		far := r.Alarm().Set(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC))
		near := r.Alarm().Set(time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC))
		return c.SendText(fmt.Sprint(errors.Is(far, ErrLimit), near == nil))
	})
	s := fx.connect(t)
	fx.say(t, s, "set")
	if got := s.next(t); got != "true true" {
		t.Fatalf("2300 refused with ErrLimit, 2200 accepted: %s; want true true", got)
	}
}

// A node that shares its store with none keeps its rooms through a stall
// longer than any lease TTL it was given: nobody else can take a lease
// over, and a room dropped for a lapsed lease lost the membership records
// it had not saved, its sockets left open and deaf. Here the cluster loop
// (renewals) stands still for three of the TTLs asked for.
func TestOneNodeKeepsItsRoomsThroughAStall(t *testing.T) {
	fx := newFixture(t, Options{LeaseTTL: 300 * time.Millisecond}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		return r.Broadcast(Frame{Op: Text, Data: []byte(msg)})
	})
	speaker, listener := fx.connect(t), fx.connect(t)
	fx.say(t, speaker, "before")
	speaker.next(t)
	listener.next(t)
	fx.rt.cl.hbMu.Lock()               // the next renewal waits behind the heartbeat's lock
	time.Sleep(900 * time.Millisecond) // the stall itself: time must pass with nothing renewed
	fx.rt.cl.hbMu.Unlock()
	fx.say(t, speaker, "after")
	for _, s := range []*testSocket{speaker, listener} {
		if got := s.next(t); got != "after" {
			t.Fatalf("after the stall a socket got %q, want the broadcast", got)
		}
	}
}
