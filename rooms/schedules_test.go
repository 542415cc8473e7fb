package rooms

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/storage/filestore"
	"github.com/roomgate/roomgate/storage/redisstore"
	"github.com/roomgate/roomgate/storage/redisstore/redistest"
)

// scheduler is a class driven by RPC: "schedule" sets schedules, "cancel"
// cancels one, "list" lists them, "alarm" sets the room's own alarm. Every
// OnAlarm run is reported on runs; a name in failing fails that many times.
type scheduler struct {
	runs    chan AlarmInfo
	failing *sync.Map // name → *atomic.Int32 failures left
}

type schedArg struct {
	Name    string
	In      time.Duration
	Payload string
}

func (s *scheduler) OnMessage(context.Context, *Room, *Conn, Frame) error { return nil }

func (s *scheduler) OnAlarm(ctx context.Context, r *Room, info AlarmInfo) error {
	s.runs <- info
	if s.failing != nil {
		if n, ok := s.failing.Load(info.Name); ok && n.(*atomic.Int32).Add(-1) >= 0 {
			return errors.New("not yet")
		}
	}
	return nil
}

func (s *scheduler) Methods() []RPCMethod {
	return []RPCMethod{
		Method("schedule", func(ctx context.Context, r *Room, args []schedArg) (int, error) {
			for _, a := range args {
				if err := r.Schedule(a.Name, time.Now().Add(a.In), []byte(a.Payload)); err != nil {
					return 0, err
				}
			}
			return len(args), nil
		}),
		Method("cancel", func(ctx context.Context, r *Room, name string) (int, error) {
			return 0, r.CancelSchedule(name)
		}),
		Method("list", func(ctx context.Context, r *Room, _ any) ([]string, error) {
			l, err := r.Schedules(ctx)
			var out []string
			for _, s := range l {
				out = append(out, s.Name+"="+string(s.Payload))
			}
			return out, err
		}),
		Method("alarm", func(ctx context.Context, r *Room, in time.Duration) (int, error) {
			return 0, r.Alarm().Set(time.Now().Add(in))
		}),
		Method("getalarm", func(ctx context.Context, r *Room, _ any) (bool, error) {
			_, ok, err := r.Alarm().Get(ctx)
			return ok, err
		}),
		Method("put", func(ctx context.Context, r *Room, key []byte) (int, error) {
			return 0, r.Storage().Put(string(key), []byte("v"))
		}),
		Method("keys", func(ctx context.Context, r *Room, _ any) (int, error) {
			l, err := r.Storage().List(ctx, ListOptions{})
			return len(l), err
		}),
	}
}

var schedRoom = Addr{Class: "sched", Room: "s"}

func newSchedFixture(t *testing.T, o Options, runs chan AlarmInfo, failing *sync.Map) *fixture {
	t.Helper()
	fx := newFixture(t, o, nil)
	fx.rt.Register("sched", func() Handler { return &scheduler{runs: runs, failing: failing} })
	return fx
}

func schedule(t *testing.T, rt *Runtime, args ...schedArg) {
	t.Helper()
	var n int
	if err := rt.Call(context.Background(), schedRoom, "schedule", args, &n); err != nil {
		t.Fatal(err)
	}
}

func nextRun(t *testing.T, runs chan AlarmInfo) AlarmInfo {
	t.Helper()
	select {
	case info := <-runs:
		return info
	case <-time.After(10 * time.Second):
		t.Fatal("no OnAlarm run came")
		return AlarmInfo{}
	}
}

func TestSchedulesFireInOrderWithNameAndPayload(t *testing.T) {
	runs := make(chan AlarmInfo, 10)
	fx := newSchedFixture(t, Options{}, runs, nil)
	// Out of order, one in the past: that one fires at once.
	schedule(t, fx.rt,
		schedArg{"c", 300 * time.Millisecond, "third"},
		schedArg{"a", -time.Hour, "first"},
		schedArg{"b", 150 * time.Millisecond, "second"})
	var list []string
	if err := fx.rt.Call(context.Background(), schedRoom, "list", nil, &list); err != nil {
		t.Fatal(err)
	}
	_ = list // "a" may have fired already
	var got []string
	for range 3 {
		info := nextRun(t, runs)
		got = append(got, info.Name+"="+string(info.Payload))
		if info.Retry != 0 {
			t.Errorf("%s: retry %d", info.Name, info.Retry)
		}
	}
	if want := "a=first b=second c=third"; strings.Join(got, " ") != want {
		t.Fatalf("runs %q, want %q", got, want)
	}
	testkit.WaitFor(t, 5*time.Second, "the schedules to be gone", func() bool {
		var l []string
		fx.rt.Call(context.Background(), schedRoom, "list", nil, &l)
		info, _ := fx.rt.Room(context.Background(), schedRoom)
		return len(l) == 0 && info.Alarm == nil && info.StorageKeys == 0
	})
}

func TestScheduleReplaceAndCancel(t *testing.T) {
	runs := make(chan AlarmInfo, 10)
	fx := newSchedFixture(t, Options{}, runs, nil)
	schedule(t, fx.rt, schedArg{"x", time.Hour, "old"}, schedArg{"y", 200 * time.Millisecond, "gone"}, schedArg{"z", time.Hour, "kept"})
	schedule(t, fx.rt, schedArg{"x", 300 * time.Millisecond, "new"})
	if err := fx.rt.Call(context.Background(), schedRoom, "cancel", "y", nil); err != nil {
		t.Fatal(err)
	}
	var list []string
	if err := fx.rt.Call(context.Background(), schedRoom, "list", nil, &list); err != nil {
		t.Fatal(err)
	}
	if want := "x=new z=kept"; strings.Join(list, " ") != want {
		t.Fatalf("list %q, want %q", list, want)
	}
	if info := nextRun(t, runs); info.Name != "x" || string(info.Payload) != "new" {
		t.Fatalf("ran %s=%s, want x=new", info.Name, info.Payload)
	}
	select {
	case info := <-runs:
		t.Fatalf("%s ran: cancelled or an hour ahead", info.Name)
	case <-time.After(500 * time.Millisecond):
	}
	// z keeps the store's alarm an hour ahead.
	info, err := fx.rt.Room(context.Background(), schedRoom)
	if err != nil || info.Alarm == nil || time.Until(*info.Alarm) < 50*time.Minute {
		t.Fatalf("room %+v %v: its alarm must be z's", info, err)
	}
}

func TestFailingScheduleRetriesOnItsOwn(t *testing.T) {
	runs := make(chan AlarmInfo, 20)
	failing := &sync.Map{}
	n := new(atomic.Int32)
	n.Store(2)
	failing.Store("bad", n)
	fx := newSchedFixture(t, Options{AlarmRetryBase: 200 * time.Millisecond}, runs, failing)
	schedule(t, fx.rt, schedArg{"bad", 0, "b"}, schedArg{"good", 100 * time.Millisecond, "g"})
	var seen []string
	var times []time.Time
	for len(seen) < 4 {
		info := nextRun(t, runs)
		seen = append(seen, fmt.Sprintf("%s/%d", info.Name, info.Retry))
		if info.Name == "bad" {
			times = append(times, time.Now())
		}
	}
	// good fires while bad waits for its first retry.
	if want := "bad/0 good/0 bad/1 bad/2"; strings.Join(seen, " ") != want {
		t.Fatalf("runs %q, want %q", seen, want)
	}
	if g1, g2 := times[1].Sub(times[0]), times[2].Sub(times[1]); g1 < 200*time.Millisecond || g2 < 400*time.Millisecond {
		t.Errorf("retry gaps %v, %v: want at least 200ms, then 400ms", g1, g2)
	}
	select {
	case info := <-runs:
		t.Fatalf("%s/%d ran after bad succeeded", info.Name, info.Retry)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestScheduleGivenUpAfterSixTries(t *testing.T) {
	runs := make(chan AlarmInfo, 20)
	failing := &sync.Map{}
	n := new(atomic.Int32)
	n.Store(100)
	failing.Store("bad", n)
	fx := newSchedFixture(t, Options{AlarmRetryBase: 10 * time.Millisecond}, runs, failing)
	schedule(t, fx.rt, schedArg{"bad", 0, ""})
	for want := range alarmTries {
		if info := nextRun(t, runs); info.Retry != want {
			t.Fatalf("try %d saw retry %d", want, info.Retry)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "the failed schedule to be deleted", func() bool {
		var l []string
		fx.rt.Call(context.Background(), schedRoom, "list", nil, &l)
		return len(l) == 0
	})
	select {
	case info := <-runs:
		t.Fatalf("a seventh try: %+v", info)
	case <-time.After(700 * time.Millisecond):
	}
}

func TestScheduleLimits(t *testing.T) {
	runs := make(chan AlarmInfo, 10)
	fx := newSchedFixture(t, Options{}, runs, nil)
	for _, a := range []schedArg{
		{Name: ""},
		{Name: strings.Repeat("n", MaxScheduleName+1)},
		{Name: "p", Payload: strings.Repeat("p", MaxSchedulePayload+1)},
	} {
		var n int
		err := fx.rt.Call(context.Background(), schedRoom, "schedule", []schedArg{a}, &n)
		if !errors.Is(err, ErrLimit) && (err == nil || !strings.Contains(err.Error(), "limit")) {
			t.Errorf("name of %d bytes, payload of %d: %v, want ErrLimit", len(a.Name), len(a.Payload), err)
		}
	}
	if n := testutil.ToFloat64(fx.rt.m.limited.WithLabelValues("schedule")); n != 3 {
		t.Errorf("roomgate_room_limited_total{kind=schedule} = %v, want 3", n)
	}
	// The largest allowed pass.
	schedule(t, fx.rt, schedArg{strings.Repeat("n", MaxScheduleName), 0, strings.Repeat("p", MaxSchedulePayload)})
	if info := nextRun(t, runs); len(info.Name) != MaxScheduleName || len(info.Payload) != MaxSchedulePayload {
		t.Fatalf("ran a schedule of %d and %d bytes", len(info.Name), len(info.Payload))
	}
	// A user key may not reach the schedules' keys, nor see them.
	err := fx.rt.Call(context.Background(), schedRoom, "put", []byte("\xffn"), nil)
	if err == nil || !strings.Contains(err.Error(), "0xff") {
		t.Errorf("put of a reserved key: %v", err)
	}
	if n := testutil.ToFloat64(fx.rt.m.limited.WithLabelValues("reserved_key")); n != 1 {
		t.Errorf("roomgate_room_limited_total{kind=reserved_key} = %v, want 1", n)
	}
	schedule(t, fx.rt, schedArg{"later", time.Hour, ""})
	var keys int
	if err := fx.rt.Call(context.Background(), schedRoom, "keys", nil, &keys); err != nil || keys != 0 {
		t.Errorf("List saw %d keys (%v), want none", keys, err)
	}
	if kvs, err := fx.rt.Storage(context.Background(), schedRoom, "", 0); err != nil || len(kvs) != 0 {
		t.Errorf("the admin API saw %d keys (%v), want none", len(kvs), err)
	}
}

func TestAlarmBesideSchedules(t *testing.T) {
	runs := make(chan AlarmInfo, 10)
	fx := newSchedFixture(t, Options{}, runs, nil)
	if err := fx.rt.Call(context.Background(), schedRoom, "alarm", 400*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	schedule(t, fx.rt, schedArg{"s1", 100 * time.Millisecond, "1"}, schedArg{"s2", 700 * time.Millisecond, "2"})
	var got []string
	for range 3 {
		info := nextRun(t, runs)
		got = append(got, "<"+info.Name+">")
	}
	if want := "<s1> <> <s2>"; strings.Join(got, " ") != want {
		t.Fatalf("runs %q, want %q", got, want)
	}
	var set bool
	if err := fx.rt.Call(context.Background(), schedRoom, "getalarm", nil, &set); err != nil || set {
		t.Fatalf("the alarm after it ran: set %v, %v", set, err)
	}
	// An alarm set while a schedule is pending is the room's own, and
	// reads back as set.
	schedule(t, fx.rt, schedArg{"s3", time.Hour, ""})
	if err := fx.rt.Call(context.Background(), schedRoom, "alarm", 100*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	if err := fx.rt.Call(context.Background(), schedRoom, "getalarm", nil, &set); err != nil || !set {
		t.Fatalf("the alarm: set %v, %v", set, err)
	}
	if info := nextRun(t, runs); info.Name != "" {
		t.Fatalf("ran %q, want the alarm", info.Name)
	}
}

// TestSchedulesSurviveRestartAndHibernation: schedules live in storage and
// the alarm index, so a room out of memory, or a new process, fires them.
func TestSchedulesSurviveRestartAndHibernation(t *testing.T) {
	dir := t.TempDir()
	runs := make(chan AlarmInfo, 10)
	start := func() (*Runtime, func()) {
		store, err := filestore.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		rt, err := New(Options{Store: store, Metrics: prometheus.NewRegistry(), HibernateAfter: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		rt.Register("sched", func() Handler { return &scheduler{runs: runs} })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { rt.Run(ctx); close(done) }()
		return rt, func() { cancel(); <-done; store.Close() }
	}
	rt, stop := start()
	setAt := time.Now()
	schedule(t, rt, schedArg{"h", 600 * time.Millisecond, "hibernated"}, schedArg{"r", 3 * time.Second, "restarted"})
	testkit.WaitFor(t, 5*time.Second, "the room to leave memory", func() bool { return rt.active(schedRoom) == nil })
	if info := nextRun(t, runs); info.Name != "h" || string(info.Payload) != "hibernated" {
		t.Fatalf("ran %+v", info)
	}
	stop()
	if time.Since(setAt) > 3*time.Second {
		t.Skip("the machine is too slow to stop the runtime before r is due")
	}
	select {
	case info := <-runs:
		t.Fatalf("%s ran before the restart", info.Name)
	default:
	}
	rt, stop = start()
	defer stop()
	if info := nextRun(t, runs); info.Name != "r" || string(info.Payload) != "restarted" {
		t.Fatalf("ran %+v", info)
	}
}

// TestTenThousandSchedulesCostNoGoroutines: one room's schedules share the
// store's one alarm; firing them starts no goroutine or timer each.
func TestTenThousandSchedulesCostNoGoroutines(t *testing.T) {
	const n = 10000
	runs := make(chan AlarmInfo, n)
	fx := newSchedFixture(t, Options{}, runs, nil)
	args := make([]schedArg, 0, 1000)
	for i := range n {
		args = append(args, schedArg{Name: fmt.Sprintf("s%05d", i), In: time.Second})
		if len(args) == cap(args) {
			schedule(t, fx.rt, args...)
			args = args[:0]
		}
	}
	base := runtime.NumGoroutine()
	peak := base
	seen := map[string]bool{}
	deadline := time.After(60 * time.Second)
	for len(seen) < n {
		select {
		case info := <-runs:
			seen[info.Name] = true
			if len(seen)%500 == 0 {
				peak = max(peak, runtime.NumGoroutine())
			}
		case <-deadline:
			t.Fatalf("%d of %d schedules fired in 60 s", len(seen), n)
		}
	}
	if peak > base+20 {
		t.Errorf("goroutines went from %d to %d while %d schedules fired", base, peak, n)
	}
}

// TestSchedulesTakenOverOnRedis: a room's schedules, kept in Redis, fire
// on another node once their owner is gone.
func TestSchedulesTakenOverOnRedis(t *testing.T) {
	redis := redistest.Start(t)
	runs := make(chan AlarmInfo, 10)
	tagged := func(node string) chan AlarmInfo {
		c := make(chan AlarmInfo, 10)
		go func() {
			for info := range c {
				info.Name = node + ":" + info.Name
				runs <- info
			}
		}()
		t.Cleanup(func() { close(c) })
		return c
	}
	// Node a, stopped by hand halfway.
	rs := redistest.Open(t, redisstore.Options{URL: redis.URL()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	a, err := New(Options{Store: rs, Coordinator: rs, Metrics: prometheus.NewRegistry(), NodeID: "a", Address: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	aRuns := tagged("a")
	a.Register("sched", func() Handler { return &scheduler{runs: aRuns} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	schedule(t, a, schedArg{"soon", 100 * time.Millisecond, "1"}, schedArg{"later", 1500 * time.Millisecond, "2"})
	if info := nextRun(t, runs); info.Name != "a:soon" || string(info.Payload) != "1" {
		t.Fatalf("ran %+v, want a:soon", info)
	}
	cancel()
	<-done
	bRuns := tagged("b")
	clusterNode(t, redis.URL(), "b", func(rt *Runtime) {
		rt.Register("sched", func() Handler { return &scheduler{runs: bRuns} })
	})
	if info := nextRun(t, runs); info.Name != "b:later" || string(info.Payload) != "2" {
		t.Fatalf("ran %+v, want b:later", info)
	}
}
