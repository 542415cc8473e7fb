package rooms

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/hibernation"
	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/filestore"
	"github.com/roomgate/roomgate/storage/redisstore"
	"github.com/roomgate/roomgate/storage/redisstore/redistest"
)

// TestMain lets this test binary run as a node process that a test can
// kill -9: a crash must be real for the alarm guarantee to mean anything.
// alarmer sets its alarm on request and logs every OnAlarm run to a file,
// synced before it returns, so the log outlives a kill.
type alarmer struct {
	log  string
	node string // logged after each run in cluster mode
	hang bool   // OnAlarm never returns: the process is killed mid-run
}

func (a *alarmer) OnMessage(context.Context, *Room, *Conn, Frame) error { return nil }

func (a *alarmer) OnRequest(ctx context.Context, r *Room, w http.ResponseWriter, req *http.Request) error {
	in, err := time.ParseDuration(req.URL.Query().Get("in"))
	if err != nil {
		return err
	}
	return r.Alarm().Set(time.Now().Add(in))
}

func (a *alarmer) OnAlarm(ctx context.Context, r *Room, info AlarmInfo) error {
	f, err := os.OpenFile(a.log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "fired %d %d\n", info.Scheduled.UnixNano(), info.Retry)
	if a.node != "" {
		fmt.Fprintf(f, "on %s\n", a.node)
	}
	f.Sync()
	f.Close()
	if a.hang {
		select {}
	}
	return nil
}

// runNode runs a runtime on the store in dir until it is killed. With
// NODE_SET_ALARM it first sets room alarmer/a's alarm that far ahead.
//
// With NODE_REDIS it is a cluster node instead, named NODE_ID, on that
// Redis, serving links on a port of its own.
func runNode(dir string) int {
	o := Options{Metrics: prometheus.NewRegistry()}
	if url := os.Getenv("NODE_REDIS"); url != "" {
		rs, err := redisstore.Open(context.Background(), redisstore.Options{URL: url})
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		o.Store, o.Coordinator, o.NodeID, o.Address, o.LeaseTTL = rs, rs, os.Getenv("NODE_ID"), ln.Addr().String(), time.Second
		o.AlarmRetryBase = 100 * time.Millisecond
		rt, err := New(o)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		return serveNode(rt, dir, ln)
	}
	store, err := filestore.Open(dir)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	o.Store = store
	rt, err := New(o)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	return serveNode(rt, dir, nil)
}

func serveNode(rt *Runtime, dir string, ln net.Listener) int {
	if ln != nil {
		mux := http.NewServeMux()
		mux.Handle(LinkPath, rt.LinkHandler())
		go http.Serve(ln, mux)
	}
	hang := os.Getenv("NODE_HANG") == "true"
	node := os.Getenv("NODE_ID")
	rt.Register("alarmer", func() Handler { return &alarmer{log: filepath.Join(dir, "alarms.log"), node: node, hang: hang} })
	go rt.Run(context.Background())
	if in := os.Getenv("NODE_SET_ALARM"); in != "" {
		req := httptest.NewRequest("POST", "/set?in="+in, nil)
		if err := rt.Request(context.Background(), Addr{Class: "alarmer", Room: "a"}, httptest.NewRecorder(), req); err != nil {
			fmt.Println("error:", err)
			return 1
		}
	}
	fmt.Println("ready")
	select {}
}

// startNode runs this test binary as a node on the store in dir (see
// runNode) and returns once it is ready.
func startNode(t *testing.T, dir string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "ROOMGATE_TEST_NODE="+dir), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	testkit.StartProcess(t, cmd)
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("node process: %q", line)
	}
	return cmd
}

func kill9(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Kill() // SIGKILL
	cmd.Wait()
}

// alarmRuns waits until the alarm log has at least n lines and returns them.
func alarmRuns(t *testing.T, dir string, n int) []string {
	t.Helper()
	var runs []string
	testkit.Eventually(t, 10*time.Second, func() error {
		b, _ := os.ReadFile(filepath.Join(dir, "alarms.log"))
		if runs = strings.Split(strings.TrimSpace(string(b)), "\n"); len(b) == 0 || len(runs) < n {
			return fmt.Errorf("alarm log %q, want %d runs", b, n)
		}
		return nil
	})
	return runs
}

func TestAlarmFiresAtLeastOnceAcrossKill9(t *testing.T) {
	t.Run("killed while OnAlarm runs", func(t *testing.T) {
		dir := t.TempDir()
		node := startNode(t, dir, "NODE_SET_ALARM=200ms", "NODE_HANG=true")
		alarmRuns(t, dir, 1)
		kill9(t, node)
		startNode(t, dir)
		if runs := alarmRuns(t, dir, 2); runs[1] != runs[0] {
			t.Fatalf("runs %q: the restarted node must run the same alarm again", runs)
		}
	})
	t.Run("killed before the alarm is due", func(t *testing.T) {
		dir := t.TempDir()
		kill9(t, startNode(t, dir, "NODE_SET_ALARM=500ms"))
		if _, err := os.Stat(filepath.Join(dir, "alarms.log")); err == nil {
			t.Fatal("the alarm ran before it was due")
		}
		// Time must pass, with no node to watch: the alarm falls due
		// while none runs.
		time.Sleep(600 * time.Millisecond)
		startNode(t, dir)
		if runs := alarmRuns(t, dir, 1); len(runs) != 1 {
			t.Fatalf("runs %q, want exactly one", runs)
		}
	})
}

// closeRecorder records the sockets its room hears close.
type closeRecorder struct {
	probe
	closed chan string
}

func (c *closeRecorder) OnClose(ctx context.Context, r *Room, conn *Conn, info CloseInfo) error {
	c.closed <- fmt.Sprintf("%s %s %d %d", conn.User().ID, conn.Attachment(), info.Code, len(r.Conns("")))
	return nil
}

func (c *closeRecorder) OnConnect(ctx context.Context, r *Room, conn *Conn) error {
	return conn.SetAttachment([]byte("att-" + conn.User().ID))
}

// TestRestartClosesTheSocketsOfTheLastRun: after a restart the sockets the
// rooms had are gone; each room hears it once, with 1006, and forgets them.
func TestRestartClosesTheSocketsOfTheLastRun(t *testing.T) {
	dir := t.TempDir()
	closed := make(chan string, 10)
	run := func(edge Sockets) (*Runtime, func()) {
		store, err := filestore.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		rt, err := New(Options{Store: store, Metrics: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		rt.Register("rec", func() Handler { return &closeRecorder{probe{starts: new(atomic.Int32)}, closed} })
		rt.Attach(edge)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { rt.Run(ctx); close(done) }()
		return rt, func() { cancel(); <-done; store.Close() }
	}
	for _, parked := range []bool{false, true} {
		t.Run(fmt.Sprintf("room parked before the stop: %v", parked), func(t *testing.T) {
			restartAndHearTheCloses(t, run, parked, closed)
		})
	}
}

func restartAndHearTheCloses(t *testing.T, run func(Sockets) (*Runtime, func()), parked bool, closed chan string) {
	room := Addr{Class: "rec", Room: fmt.Sprint("x-", parked)}
	rt, stop := run(sockets)
	for i := range 2 {
		if err := rt.Connect(context.Background(), room, newSocket(), ConnectInfo{User: User{ID: strconv.Itoa(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if parked {
		// Parked (its goroutine ended after a second idle) long before it
		// would be evicted and its records saved.
		sh := rt.shard(room)
		testkit.WaitFor(t, 5*time.Second, "the room to park", func() bool {
			sh.mu.Lock()
			defer sh.mu.Unlock()
			in := sh.rooms[room]
			return in != nil && in.parked
		})
	}
	stop() // a drain without the sockets' closes, as after a crash
	select {
	case got := <-closed:
		t.Fatalf("a close before the restart: %q", got)
	default:
	}

	rt, stop = run(&testEdge{}) // a new process: none of the old sockets
	defer stop()
	got := map[string]bool{}
	for range 2 {
		select {
		case c := <-closed:
			got[c] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("the restarted room heard %d closes, want 2", len(got))
		}
	}
	if !got["0 att-0 1006 1"] && !got["0 att-0 1006 0"] || !got["1 att-1 1006 0"] && !got["1 att-1 1006 1"] {
		t.Fatalf("closes = %v", got)
	}
	testkit.Eventually(t, 5*time.Second, func() error {
		info, err := rt.Room(context.Background(), room)
		if err == ErrRoomNotFound || err == nil && info.Connections == 0 {
			return nil
		}
		return fmt.Errorf("room after the lost sockets closed: %+v, %v", info, err)
	})
}

// TestAlarmWakesAHibernatedRoom: the alarm of a room out of memory brings
// it back with its sockets.
func TestAlarmWakesAHibernatedRoom(t *testing.T) {
	fx := newFixture(t, Options{HibernateAfter: 50 * time.Millisecond}, nil)
	runs := make(chan int, 1)
	fx.rt.Register("waker", func() Handler { return &alarmCounter{runs: runs} })
	a := Addr{Class: "waker", Room: "w"}
	if err := fx.rt.Connect(context.Background(), a, newSocket(), ConnectInfo{}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the room to hibernate", func() bool { return fx.rt.active(a) == nil })
	if info, _ := fx.rt.Room(context.Background(), a); info.State != "hibernated" || info.Alarm == nil {
		t.Fatalf("before the alarm: %+v", info)
	}
	select {
	case n := <-runs:
		if n != 1 {
			t.Fatalf("OnAlarm saw %d sockets, want 1", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the alarm did not wake the room")
	}
}

// alarmCounter sets an alarm 500 ms ahead in OnConnect; OnAlarm reports how
// many sockets the room has.
type alarmCounter struct{ runs chan int }

func (a *alarmCounter) OnConnect(ctx context.Context, r *Room, c *Conn) error {
	return r.Alarm().Set(time.Now().Add(500 * time.Millisecond))
}

func (a *alarmCounter) OnMessage(context.Context, *Room, *Conn, Frame) error { return nil }

func (a *alarmCounter) OnAlarm(ctx context.Context, r *Room, info AlarmInfo) error {
	a.runs <- len(r.Conns(""))
	return nil
}

// TestAlarmTakenOverAfterOwnerDies: node a sets a room's alarm and dies
// (kill -9) before it is due; node b, running beside it on the same Redis,
// fires it once a's lease has expired.
func TestAlarmTakenOverAfterOwnerDies(t *testing.T) {
	redis := redistest.Start(t)
	dir := t.TempDir()
	startNode(t, dir, "NODE_REDIS="+redis.URL(), "NODE_ID=b")
	a := startNode(t, dir, "NODE_REDIS="+redis.URL(), "NODE_ID=a", "NODE_SET_ALARM=500ms")
	kill9(t, a)
	runs := alarmRuns(t, dir, 2)
	if runs[1] != "on b" {
		t.Fatalf("alarm runs %q, want one on node b", runs)
	}
}

// After a restart, the rooms whose sockets died with the last run are woken
// to hear of it, but no more than StartupWakes at a time: a node that held
// many rooms must not start them all in one burst.
func TestRestartWakesLostRoomsPaced(t *testing.T) {
	const wakes = 50
	const rooms = 150 // three rounds: a woken room runs for a second before it parks
	store, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for i := range rooms {
		rec := hibernation.Member{ID: uint64(i + 1), Edge: "", UserID: "u", ConnectedAt: time.Now().UnixNano()}
		b := &storage.Batch{Members: []storage.Member{{ID: rec.ID, Data: rec.Encode()}}}
		if err := storage.CommitAndWait(context.Background(), store, storage.Room{Class: "rec", Name: fmt.Sprint("r", i)}, b); err != nil {
			t.Fatal(err)
		}
	}
	rt, err := New(Options{Store: store, Metrics: prometheus.NewRegistry(), HibernateAfter: time.Hour, StartupWakes: wakes})
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan string, rooms)
	rt.Register("rec", func() Handler { return &closeRecorder{probe{starts: new(atomic.Int32)}, closed} })
	rt.Attach(&testEdge{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	var most int64
	deadline := time.After(30 * time.Second)
	for n := 0; n < rooms; {
		select {
		case <-closed:
			n++
		case <-time.After(time.Millisecond):
		case <-deadline:
			t.Fatalf("%d of %d rooms heard of their lost socket", n, rooms)
		}
		most = max(most, rt.nrun.Load())
	}
	// A room counts from its wake until it parks; the scan checks before
	// each wake, so the count may pass the bound by a wake or two at most.
	if most > wakes+2 {
		t.Fatalf("%d rooms ran at once during the start-up wakes, want at most %d", most, wakes)
	}
}
