package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/storage/redisstore/redistest"
)

// tally is Durable Objects' Counter with RPC methods: increment persists
// and broadcasts, and the others fail, refuse, block or call other rooms
// as the tests need.
type tally struct {
	n  int
	fx *rpcFixture // nil in a cluster
}

func (t *tally) OnStart(ctx context.Context, r *Room) error {
	if t.fx != nil {
		t.fx.starts.Add(1)
	}
	v, err := r.Storage().Get(ctx, "n")
	t.n, _ = strconv.Atoi(string(v))
	return err
}

func (t *tally) OnMessage(ctx context.Context, r *Room, c *Conn, f Frame) error {
	if string(f.Data) == "inc" {
		_, err := t.increment(ctx, r, 1)
		return err
	}
	return nil
}

func (t *tally) increment(ctx context.Context, r *Room, by int) (int, error) {
	t.n += by
	if err := r.Storage().Put("n", []byte(strconv.Itoa(t.n))); err != nil {
		return 0, err
	}
	return t.n, r.BroadcastText(fmt.Sprint("n=", t.n))
}

// callArg asks tally's call methods to call To's Method with Arg.
type callArg struct {
	To     Addr
	Method string
	Arg    any
}

func (t *tally) Methods() []RPCMethod {
	return []RPCMethod{
		Method("increment", t.increment),
		Method("get", func(ctx context.Context, r *Room, _ struct{}) (int, error) { return t.n, nil }),
		Method("boom", func(ctx context.Context, r *Room, _ struct{}) (int, error) {
			r.Storage().Put("n", []byte("999"))
			panic("boom")
		}),
		Method("fail", func(ctx context.Context, r *Room, _ struct{}) (int, error) {
			r.Storage().Put("n", []byte("999"))
			return 0, errors.New("bad things")
		}),
		Method("refuse", func(ctx context.Context, r *Room, by int) (int, error) {
			t.increment(ctx, r, by) // the answer is an error, and the writes commit
			return 0, &UserError{Status: 409, Code: "too_many", Message: "no more", RetryAfter: 1500 * time.Millisecond}
		}),
		Method("call", func(ctx context.Context, r *Room, a callArg) (json.RawMessage, error) {
			var res json.RawMessage
			err := r.Call(ctx, a.To, a.Method, a.Arg, &res)
			return res, err
		}),
		// callDetached calls as a handler should not: through the Runtime,
		// with a ctx of its own, so the chain is lost.
		Method("callDetached", func(ctx context.Context, r *Room, a callArg) (json.RawMessage, error) {
			var res json.RawMessage
			err := r.inst.rt.Call(context.Background(), a.To, a.Method, a.Arg, &res)
			return res, err
		}),
		Method("block", func(ctx context.Context, r *Room, _ struct{}) (int, error) {
			t.fx.blocked <- struct{}{}
			<-t.fx.release
			return 0, nil
		}),
	}
}

type rpcFixture struct {
	rt      *Runtime
	store   *failingStore
	reg     *prometheus.Registry
	starts  atomic.Int32
	blocked chan struct{}
	release chan struct{}
}

func newRPCFixture(t *testing.T, o Options) *rpcFixture {
	t.Helper()
	_, failing := newFailingStore(t)
	fx := &rpcFixture{store: failing, reg: prometheus.NewRegistry(), blocked: make(chan struct{}, 16), release: make(chan struct{})}
	o.Store, o.Metrics = failing, fx.reg
	rt, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	fx.rt = rt
	rt.Register("tally", func() Handler { return &tally{fx: fx} })
	rt.Attach(sockets)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return fx
}

func (fx *rpcFixture) stored(t *testing.T, a Addr) string {
	t.Helper()
	v, err := fx.store.Get(context.Background(), a.storageRoom(), "n")
	if err != nil {
		t.Fatal(err)
	}
	return string(v[0])
}

func (fx *rpcFixture) calls(outcome string) float64 {
	return testutil.ToFloat64(fx.rt.m.rpcCalls.WithLabelValues(outcome))
}

func tallyRoom(name string) Addr { return Addr{Class: "tally", Room: name} }

// TestRPCFromGo: Runtime.Call is a Durable Object's stub call, and its
// result comes back once the write it made is committed.
func TestRPCFromGo(t *testing.T) {
	fx := newRPCFixture(t, Options{})
	ctx, a := context.Background(), tallyRoom("a")
	for want := 1; want <= 3; want++ {
		var n int
		if err := fx.rt.Call(ctx, a, "increment", 1, &n); err != nil || n != want {
			t.Fatalf("increment: %d, %v; want %d", n, err, want)
		}
		// Committed before the result was released: the store has it.
		if got := fx.stored(t, a); got != strconv.Itoa(want) {
			t.Fatalf("stored %q once increment answered %d", got, want)
		}
	}
	res, err := fx.rt.CallJSON(ctx, a, "get", nil) // an empty argument is null
	if err != nil || string(res) != "3" {
		t.Fatalf("get: %s, %v", res, err)
	}
	if got := fx.calls("ok"); got != 4 {
		t.Errorf("roomgate_rpc_calls_total{outcome=ok} = %v, want 4", got)
	}
}

// TestRPCResultOnlyAfterCommit: a call whose writes cannot be committed
// fails, returns nothing, and sends nothing; the room is then rebuilt
// from what was committed.
func TestRPCResultOnlyAfterCommit(t *testing.T) {
	fx := newRPCFixture(t, Options{})
	ctx, a := context.Background(), tallyRoom("gate")
	s := newSocket()
	if err := fx.rt.Connect(ctx, a, s, ConnectInfo{}); err != nil {
		t.Fatal(err)
	}
	fx.store.fail.Store(true)
	n := -1
	err := fx.rt.Call(ctx, a, "increment", 1, &n)
	if !errors.Is(err, ErrFailed) || n != -1 {
		t.Fatalf("increment on a failing store: %d, %v; want ErrFailed and no result", n, err)
	}
	select {
	case <-s.got:
		t.Fatalf("the failed call's broadcast left: %q (closed %d)", s.frames, s.code)
	case <-time.After(100 * time.Millisecond):
	}
	fx.store.fail.Store(false)
	if err := fx.rt.Call(ctx, a, "increment", 1, &n); err != nil || n != 1 {
		t.Fatalf("increment after the store came back: %d, %v; want 1, from storage", n, err)
	}
	if got := s.next(t); got != "n=1" {
		t.Fatalf("socket got %q, want n=1", got)
	}
	if got := fx.starts.Load(); got != 2 {
		t.Errorf("OnStart ran %d times, want 2: the failed commit rebuilds the instance", got)
	}
	if got := fx.calls("failed"); got != 1 {
		t.Errorf("roomgate_rpc_calls_total{outcome=failed} = %v, want 1", got)
	}
}

// TestRPCInOrderWithMessages: a call is one event among the socket's
// messages, in arrival order, and what it sends reaches the sockets no
// later than its result reaches the caller.
func TestRPCInOrderWithMessages(t *testing.T) {
	fx := newRPCFixture(t, Options{})
	ctx, a := context.Background(), tallyRoom("order")
	s := newSocket()
	if err := fx.rt.Connect(ctx, a, s, ConnectInfo{}); err != nil {
		t.Fatal(err)
	}
	inc := Frame{Op: Text, Data: []byte("inc")}
	for round := range 50 {
		if err := fx.rt.Message(ctx, a, s, inc); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := fx.rt.Call(ctx, a, "increment", 1, &n); err != nil || n != 2*round+2 {
			t.Fatalf("round %d: increment answered %d, %v; want %d, after the message before it", round, n, err, 2*round+2)
		}
		s.mu.Lock()
		sent := slices.Clone(s.frames)
		s.mu.Unlock()
		if len(sent) == 0 || sent[len(sent)-1] != fmt.Sprint("n=", n) {
			t.Fatalf("round %d: the call answered %d before its broadcast left (socket has %q)", round, n, sent)
		}
		for _, want := range []string{fmt.Sprint("n=", n-1), fmt.Sprint("n=", n)} {
			if got := s.next(t); got != want {
				t.Fatalf("round %d: socket got %q, want %q", round, got, want)
			}
		}
	}
}

// TestRPCRefusals: an unknown method and an argument that does not
// decode are refused without running, or failing, anything.
func TestRPCRefusals(t *testing.T) {
	fx := newRPCFixture(t, Options{})
	ctx, a := context.Background(), tallyRoom("refusals")
	if err := fx.rt.Call(ctx, a, "nope", nil, nil); !errors.Is(err, ErrNoSuchMethod) {
		t.Fatalf("unknown method: %v, want ErrNoSuchMethod", err)
	}
	if fx.rt.active(a) != nil {
		t.Error("an unknown method woke the room")
	}
	if err := fx.rt.Call(ctx, Addr{Class: "nope", Room: "x"}, "get", nil, nil); !errors.Is(err, ErrUnknownClass) {
		t.Fatalf("unknown class: %v", err)
	}
	if err := fx.rt.Call(ctx, Addr{Class: "tally", Room: "a b"}, "get", nil, nil); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("bad room name: %v", err)
	}
	if err := fx.rt.Call(ctx, a, "increment", 2, nil); err != nil {
		t.Fatal(err)
	}
	for _, arg := range []string{`"two"`, `{`, `[1]`, `1.5`, `{"a":1}`, "1 2"} {
		if _, err := fx.rt.CallJSON(ctx, a, "increment", []byte(arg)); !errors.Is(err, ErrBadArgument) {
			t.Errorf("increment(%s): %v, want ErrBadArgument", arg, err)
		}
	}
	if err := fx.rt.Call(ctx, a, "increment", "two", nil); !errors.Is(err, ErrBadArgument) {
		t.Errorf("increment(\"two\") from Go: %v, want ErrBadArgument", err)
	}
	if err := fx.rt.Call(ctx, a, "increment", func() {}, nil); !errors.Is(err, ErrBadArgument) {
		t.Errorf("an argument JSON cannot encode: %v, want ErrBadArgument", err)
	}
	var n int
	if err := fx.rt.Call(ctx, a, "get", nil, &n); err != nil || n != 2 {
		t.Fatalf("get: %d, %v", n, err)
	}
	if got := fx.starts.Load(); got != 1 {
		t.Errorf("OnStart ran %d times: a refused call rebuilt the instance", got)
	}
	if got := fx.calls("no_such_method"); got != 1 {
		t.Errorf("no_such_method counted %v", got)
	}
	if got := fx.calls("bad_argument"); got != 8 {
		t.Errorf("bad_argument counted %v, want 8", got)
	}
}

// TestRPCFailureRebuildsTheInstance: a method that panics or errors fails
// its event (its writes dropped, the instance rebuilt) and nothing else:
// the room's sockets stay open.
func TestRPCFailureRebuildsTheInstance(t *testing.T) {
	fx := newRPCFixture(t, Options{})
	ctx, a := context.Background(), tallyRoom("fail")
	s := newSocket()
	if err := fx.rt.Connect(ctx, a, s, ConnectInfo{}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := fx.rt.Call(ctx, a, "increment", 5, &n); err != nil {
		t.Fatal(err)
	}
	s.next(t)
	for i, method := range []string{"boom", "fail"} {
		err := fx.rt.Call(ctx, a, method, nil, nil)
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("%s: %v, want ErrFailed", method, err)
		}
		if msg := err.Error(); strings.Contains(msg, "goroutine") || strings.Contains(msg, "\n") {
			t.Errorf("%s: the caller got a stack trace: %q", method, msg)
		}
		if want := map[string]string{"boom": "panic: boom", "fail": "bad things"}[method]; !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %q does not say %q", method, err, want)
		}
		if err := fx.rt.Call(ctx, a, "increment", 1, &n); err != nil || n != 6+i {
			t.Fatalf("after %s: increment answered %d, %v; want %d (the failed write dropped)", method, n, err, 6+i)
		}
		if got := fx.starts.Load(); got != int32(2+i) {
			t.Errorf("after %s: OnStart ran %d times, want %d", method, got, 2+i)
		}
		if got := s.next(t); got != fmt.Sprint("n=", n) {
			t.Fatalf("after %s: the socket got %q; it must stay open and hear the room", method, got)
		}
	}
	if got := testutil.ToFloat64(fx.rt.m.failures.WithLabelValues("handler")); got != 2 {
		t.Errorf("handler failures counted %v, want 2", got)
	}
}

// TestRPCUserError: a UserError is an answer: the event commits, the
// instance stays, and the caller gets the error as the method made it.
func TestRPCUserError(t *testing.T) {
	fx := newRPCFixture(t, Options{})
	ctx, a := context.Background(), tallyRoom("user")
	err := fx.rt.Call(ctx, a, "refuse", 4, nil)
	var ue *UserError
	if !errors.As(err, &ue) || ue.Status != 409 || ue.Code != "too_many" || ue.Message != "no more" || ue.RetryAfter != 1500*time.Millisecond {
		t.Fatalf("refuse: %#v (%v)", ue, err)
	}
	if got := fx.stored(t, a); got != "4" {
		t.Errorf("stored %q: the writes of a call that answered a UserError must commit", got)
	}
	if got := fx.starts.Load(); got != 1 {
		t.Errorf("OnStart ran %d times: a UserError must not rebuild the instance", got)
	}
	if got := fx.calls("user_error"); got != 1 {
		t.Errorf("user_error counted %v", got)
	}
	// Defaults are filled in on a copy.
	shared := &UserError{Status: 200}
	if n := shared.normalized(); n.Status != 400 || n.Code != "bad_request" || n.Message != "bad_request" || shared.Code != "" {
		t.Errorf("normalized %+v from %+v", n, shared)
	}
	if n := (&UserError{Status: 404}).normalized(); n.Code != "not_found" {
		t.Errorf("a 404's default code: %q", n.Code)
	}
}

// TestRPCFromAnotherRoom: a room's handler calls another room and waits
// for its result.
func TestRPCFromAnotherRoom(t *testing.T) {
	fx := newRPCFixture(t, Options{})
	ctx := context.Background()
	var res json.RawMessage
	err := fx.rt.Call(ctx, tallyRoom("caller"), "call", callArg{To: tallyRoom("callee"), Method: "increment", Arg: 7}, &res)
	if err != nil || string(res) != "7" {
		t.Fatalf("caller → callee.increment(7): %s, %v", res, err)
	}
	if got := fx.stored(t, tallyRoom("callee")); got != "7" {
		t.Fatalf("callee stored %q", got)
	}
	// A UserError travels back through the caller unchanged.
	err = fx.rt.Call(ctx, tallyRoom("caller"), "call", callArg{To: tallyRoom("callee"), Method: "refuse", Arg: 1}, nil)
	var ue *UserError
	if !errors.As(err, &ue) || ue.Status != 409 {
		t.Fatalf("a nested UserError came back as %v", err)
	}
}

// TestRPCCallCycle: a call back into the chain of rooms waiting for it
// fails at once with ErrCallCycle, not at the deadline, and leaves both
// rooms able to serve.
func TestRPCCallCycle(t *testing.T) {
	fx := newRPCFixture(t, Options{CallTimeout: time.Minute})
	ctx, a, b := context.Background(), tallyRoom("a"), tallyRoom("b")
	for name, arg := range map[string]callArg{
		"A calls A":                {To: a, Method: "get"},
		"A calls B, which calls A": {To: b, Method: "call", Arg: callArg{To: a, Method: "get"}},
		"A calls B, which calls B": {To: b, Method: "call", Arg: callArg{To: b, Method: "get"}},
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := fx.rt.Call(ctx, a, "call", arg, nil)
			if !errors.Is(err, ErrCallCycle) {
				t.Fatalf("%v, want ErrCallCycle", err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("the cycle took %v to fail: detected only at the deadline", took)
			}
			if !strings.Contains(err.Error(), "tally/a") {
				t.Errorf("the error does not name the chain: %v", err)
			}
		})
	}
	for _, r := range []Addr{a, b} {
		if err := fx.rt.Call(ctx, r, "get", nil, nil); err != nil {
			t.Fatalf("%s after the cycles: %v", r, err)
		}
	}
	if got := fx.calls("call_cycle"); got < 3 {
		t.Errorf("call_cycle counted %v", got)
	}
}

// TestRPCUndetectedCycleEndsAtTheDeadline: a handler that loses the chain
// (it calls through the Runtime with a ctx of its own) makes a cycle the
// runtime cannot see; it fails at the call's deadline instead of hanging,
// and both rooms serve again.
func TestRPCUndetectedCycleEndsAtTheDeadline(t *testing.T) {
	fx := newRPCFixture(t, Options{CallTimeout: 300 * time.Millisecond})
	ctx, a, b := context.Background(), tallyRoom("a"), tallyRoom("b")
	start := time.Now()
	err := fx.rt.Call(ctx, a, "callDetached", callArg{To: b, Method: "callDetached", Arg: callArg{To: a, Method: "get"}}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want a deadline", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %v", took)
	}
	if got := fx.calls("timeout"); got < 1 {
		t.Errorf("timeouts counted %v", got)
	}
	for _, r := range []Addr{a, b} {
		testkit.Eventually(t, 5*time.Second, func() error { return fx.rt.Call(ctx, r, "get", nil, nil) })
	}
}

// TestRPCExpiredCallDoesNotRun: a call whose caller stopped waiting while
// it sat in the mailbox is dropped when its turn comes, not run late.
func TestRPCExpiredCallDoesNotRun(t *testing.T) {
	fx := newRPCFixture(t, Options{})
	ctx, a := context.Background(), tallyRoom("late")
	var wg sync.WaitGroup
	wg.Go(func() { fx.rt.Call(ctx, a, "block", nil, nil) })
	<-fx.blocked
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := fx.rt.Call(short, a, "increment", 1, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("increment behind a blocked call: %v, want its deadline", err)
	}
	close(fx.release)
	wg.Wait()
	var n int
	if err := fx.rt.Call(ctx, a, "get", nil, &n); err != nil || n != 0 {
		t.Fatalf("get: %d, %v; want 0: the expired increment must not run", n, err)
	}
}

// TestRPCOverloaded: a call that finds its room's mailbox full is
// refused with ErrOverloaded, and counted, instead of queueing without end.
func TestRPCOverloaded(t *testing.T) {
	fx := newRPCFixture(t, Options{MaxQueuedEvents: 4})
	ctx, a := context.Background(), tallyRoom("busy")
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(fx.release)
	wg.Go(func() { fx.rt.Call(ctx, a, "block", nil, nil) })
	<-fx.blocked
	for range 4 {
		wg.Go(func() { fx.rt.Call(ctx, a, "get", nil, nil) })
	}
	in := fx.rt.active(a)
	testkit.WaitFor(t, 5*time.Second, "4 queued calls", func() bool {
		in.mu.Lock()
		defer in.mu.Unlock()
		return len(in.queue) == 4
	})
	before := testutil.ToFloat64(fx.rt.m.overloaded)
	if err := fx.rt.Call(ctx, a, "get", nil, nil); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("a call to a full mailbox: %v, want ErrOverloaded", err)
	}
	if got := testutil.ToFloat64(fx.rt.m.overloaded); got != before+1 {
		t.Errorf("roomgate_room_overloaded_total went from %v to %v", before, got)
	}
}

// Methods are checked at Register, like the handlers.
type badMethods struct{ methods []RPCMethod }

func (badMethods) OnMessage(context.Context, *Room, *Conn, Frame) error { return nil }
func (h badMethods) Methods() []RPCMethod                               { return h.methods }

type oldMethods struct{}

func (oldMethods) OnMessage(context.Context, *Room, *Conn, Frame) error { return nil }
func (oldMethods) Methods() []string                                    { return nil }

func TestRPCMethodsAreChecked(t *testing.T) {
	get := func(context.Context, *Room, struct{}) (int, error) { return 0, nil }
	for name, h := range map[string]Handler{
		"duplicate":      badMethods{[]RPCMethod{Method("get", get), Method("get", get)}},
		"empty name":     badMethods{[]RPCMethod{Method("", get)}},
		"slash in name":  badMethods{[]RPCMethod{Method("a/b", get)}},
		"made by hand":   badMethods{[]RPCMethod{{name: "x"}}},
		"wrong Methods":  oldMethods{},
		"digit first":    badMethods{[]RPCMethod{Method("1st", get)}},
		"over 64 bytes":  badMethods{[]RPCMethod{Method(strings.Repeat("m", 65), get)}},
		"space in name":  badMethods{[]RPCMethod{Method("a b", get)}},
		"percent in one": badMethods{[]RPCMethod{Method("a%2F", get)}},
	} {
		t.Run(name, func(t *testing.T) {
			fs, _ := newFailingStore(t)
			rt, err := New(Options{Store: fs, Metrics: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if recover() == nil {
					t.Fatal("Register accepted it")
				}
			}()
			rt.Register("bad", func() Handler { return h })
		})
	}
	for _, ok := range []string{"increment", "lock.acquire", "get_count", "A-1"} {
		if !ValidMethod(ok) {
			t.Errorf("ValidMethod(%q) = false", ok)
		}
	}
}

// TestRPCAcrossTheCluster: a call made on a node that does not run the
// room reaches its owner over the link, with its result, a UserError, a
// refusal, and a cycle that spans both nodes.
func TestRPCAcrossTheCluster(t *testing.T) {
	redis := redistest.Start(t)
	nodes := map[string]*Runtime{}
	for _, id := range []string{"a", "b"} {
		nodes[id] = clusterNode(t, redis.URL(), id, func(rt *Runtime) {
			rt.Register("tally", func() Handler { return &tally{} })
		})
	}
	ctx := context.Background()
	onA, onB := tallyRoom("on-a"), tallyRoom("on-b")
	var n int
	if err := nodes["a"].Call(ctx, onA, "increment", 1, &n); err != nil || n != 1 {
		t.Fatalf("on a: %d, %v", n, err) // places the room on a
	}
	if err := nodes["b"].Call(ctx, onB, "increment", 10, &n); err != nil || n != 10 {
		t.Fatalf("on b: %d, %v", n, err)
	}
	if err := nodes["b"].Call(ctx, onA, "increment", 1, &n); err != nil || n != 2 {
		t.Fatalf("through b: %d, %v; want 2, from the owner a", n, err)
	}
	if info, err := nodes["b"].Room(ctx, onA); err != nil || info.Owner != "a" {
		t.Fatalf("the room moved: %+v, %v", info, err)
	}
	var ue *UserError
	if err := nodes["b"].Call(ctx, onA, "refuse", 1, nil); !errors.As(err, &ue) || ue.Status != 409 || ue.Code != "too_many" || ue.RetryAfter != 1500*time.Millisecond {
		t.Fatalf("a UserError through the link: %v", err)
	}
	if _, err := nodes["b"].CallJSON(ctx, onA, "increment", []byte(`"x"`)); !errors.Is(err, ErrBadArgument) {
		t.Fatalf("a bad argument through the link: %v", err)
	}
	if err := nodes["b"].Call(ctx, onA, "boom", nil, nil); !errors.Is(err, ErrFailed) {
		t.Fatalf("a panic through the link: %v", err)
	}
	// on-a (node a) calls on-b (node b), which calls on-a back.
	start := time.Now()
	err := nodes["b"].Call(ctx, onA, "call", callArg{To: onB, Method: "call", Arg: callArg{To: onA, Method: "get"}}, nil)
	if !errors.Is(err, ErrCallCycle) || time.Since(start) > 5*time.Second {
		t.Fatalf("a cycle across nodes: %v after %v, want ErrCallCycle at once", err, time.Since(start))
	}
	if err := nodes["a"].Call(ctx, onA, "get", nil, &n); err != nil || n != 3 {
		t.Fatalf("on-a after all that: %d, %v; want 3", n, err)
	}
}

func TestRPCOverTheLinkCodec(t *testing.T) {
	m := linkMsg{typ: tAsk, seq: 3, addr: tallyRoom("x"), kind: askRPC, text: "increment", data: []byte("1"),
		info: ConnectInfo{Query: formatChain([]Addr{tallyRoom("a"), {Class: "chat-2", Room: "R_~.-"}})}, token: uint64(time.Second)}
	got, err := decodeLinkMsg(appendLinkMsg(nil, &m)[4:])
	if err != nil || got.kind != askRPC || got.text != "increment" || string(got.data) != "1" || got.token != m.token {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	chain, err := parseChain(got.info.Query)
	if err != nil || len(chain) != 2 || chain[1] != (Addr{Class: "chat-2", Room: "R_~.-"}) {
		t.Fatalf("chain %v, %v", chain, err)
	}
	for _, bad := range []string{"a", "Bad/x", "a/b,", strings.Repeat("a/b,", MaxCallDepth) + "a/b", "a/b/c"} {
		if _, err := parseChain(bad); err == nil {
			t.Errorf("parseChain(%q) accepted it", bad)
		}
	}
	// The cause of a failure, a cycle, crosses the link rather than the
	// failure it caused.
	var r linkMsg
	encodeErr(&r, &callFailed{method: "call", err: &callFailed{method: "call", err: cycleError([]Addr{tallyRoom("a")}, tallyRoom("a"))}})
	if err := decodeErr(&r); !errors.Is(err, ErrCallCycle) {
		t.Errorf("a failure from a cycle came back as %v", err)
	}
	r = linkMsg{}
	encodeErr(&r, fmt.Errorf("wrapped: %w", &UserError{Status: 429, Code: "slow_down", Message: "m", RetryAfter: 2 * time.Second}))
	var ue *UserError
	if err := decodeErr(&r); !errors.As(err, &ue) || *ue != (UserError{Status: 429, Code: "slow_down", Message: "m", RetryAfter: 2 * time.Second}) {
		t.Errorf("a UserError came back as %#v", err)
	}
	if !strings.Contains(r.text, "slow_down") {
		t.Errorf("a node of the last release would read %q", r.text)
	}
}

// FuzzMethodArgument feeds arbitrary bodies to a method's argument
// decoding: it never panics, and what it accepts encodes back to a value
// that decodes to the same.
func FuzzMethodArgument(f *testing.F) {
	type arg struct {
		Key   string            `json:"key"`
		N     int64             `json:"n"`
		Tags  []string          `json:"tags"`
		Extra map[string]string `json:"extra"`
		TTL   *float64          `json:"ttl"`
	}
	for _, seed := range []string{``, `null`, `{}`, `{"key":"k","n":1,"tags":["a"],"extra":{"x":"y"},"ttl":1.5}`,
		`{"n":9223372036854775808}`, `{"key":"\ud800"}`, `[`, `"str"`, `{"key":1}`, ` {"n":1} `, `{"n":1}{"n":2}`, "\xff"} {
		f.Add([]byte(seed))
	}
	var got arg
	m := Method("m", func(ctx context.Context, r *Room, a arg) (arg, error) { got = a; return a, nil })
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := m.run(context.Background(), nil, body)
		if err != nil {
			var ae *argError
			if !errors.As(err, &ae) {
				t.Fatalf("%q: an error that is no argument error: %v", body, err)
			}
			return
		}
		// res is encode(x) for the x body decoded to: decoding it gives
		// x back, which encodes to res again.
		if _, err := m.run(context.Background(), nil, res); err != nil {
			t.Fatalf("%q: the result %s does not decode: %v", body, res, err)
		}
		if again, _ := json.Marshal(got); string(again) != string(res) {
			t.Fatalf("%q: decode(encode(x)) = %s, want %s", body, again, res)
		}
	})
}
