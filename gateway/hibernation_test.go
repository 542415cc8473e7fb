package gateway

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/redisstore"
	"github.com/roomgate/roomgate/storage/redisstore/redistest"
)

// keeper tags each socket with its room, keeps its user in the attachment
// and answers "ping" at the edge; its replies show what a woken instance
// knows of the socket.
type keeper struct{}

func (keeper) OnStart(ctx context.Context, r *rooms.Room) error {
	return r.SetAutoResponse("ping", "pong")
}

func (keeper) OnConnect(ctx context.Context, r *rooms.Room, c *rooms.Conn) error {
	if err := c.SetTags("room:" + r.Name()); err != nil {
		return err
	}
	return c.SetAttachment([]byte("att-" + c.User().ID))
}

func (keeper) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	if string(f.Data) == "last-auto" {
		return c.SendText(strconv.FormatBool(!c.LastAutoResponse().IsZero()))
	}
	tagged := len(r.Conns("room:" + r.Name()))
	return c.SendText(fmt.Sprintf("%s|%s|%s|%d", f.Data, strings.Join(c.Tags(), ","), c.Attachment(), tagged))
}

// hibernationServer runs a gateway whose rooms hibernate only when the test
// moves their clock ahead, so a slow machine cannot evict them early.
type hibernationServer struct {
	*testServer
	rt    *rooms.Runtime
	reg   *prometheus.Registry
	ahead atomic.Int64
}

func startHibernationServer(tb testing.TB) *hibernationServer {
	tb.Helper()
	// The store is Redis, in its own process: the embedded store keeps
	// buffers and caches on this process's heap that grow with what it
	// writes, and would blur the rooms' own memory this test measures.
	// (Without a Coordinator the runtime is still one node.)
	// ROOMGATE_HIBERNATION_STORE=file measures wakes from the embedded
	// store instead; its heap figures then include the store's.
	var store storage.Store
	if os.Getenv("ROOMGATE_HIBERNATION_STORE") != "file" {
		store = redistest.Open(tb, redisstore.Options{URL: redistest.Start(tb).URL()})
	}
	hs := &hibernationServer{reg: prometheus.NewRegistry()}
	hs.rt = newRuntime(tb, rooms.Options{
		Store:          store,
		Metrics:        hs.reg,
		HibernateAfter: time.Hour,
		Clock:          func() time.Time { return time.Now().Add(time.Duration(hs.ahead.Load())) },
	}, map[string]func() rooms.Handler{"keeper": func() rooms.Handler { return keeper{} }})
	hs.testServer = startServer(tb, Options{Router: hs.rt, Admin: hs.rt, Ready: hs.rt.Ready, Metrics: hs.reg})
	return hs
}

// hibernateAll waits until every room parked, then moves the clock past
// HibernateAfter and waits until no room is left in memory.
func (hs *hibernationServer) hibernateAll(tb testing.TB) {
	tb.Helper()
	testkit.Eventually(tb, 60*time.Second, func() error {
		if n := metric(tb, hs.reg, "roomgate_rooms_running", ""); n != 0 {
			return errorf("%v rooms still running", n)
		}
		return nil
	})
	hs.ahead.Add(int64(2 * time.Hour))
	testkit.Eventually(tb, 30*time.Second, func() error {
		if n := metric(tb, hs.reg, "roomgate_rooms", "active"); n != 0 {
			return errorf("%v rooms still active", n)
		}
		return nil
	})
}

// metric reads a gauge or counter from reg; label is the value of its one
// label, or "" for none.
func metric(tb testing.TB, reg *prometheus.Registry, name, label string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	tb.Fatalf("no metric %s{%s}", name, label)
	return 0
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// clients drives the client process.
type clients struct {
	cmd *exec.Cmd
	in  *bufio.Writer
	out *bufio.Scanner
}

// startClients starts a client process holding n sockets to ts: one room
// each (rooms "r-0" …), or all in one room when oneRoom is set.
func startClients(tb testing.TB, ts *testServer, n int, oneRoom bool) *clients {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ROOMGATE_TEST_CLIENTS=1", "CLIENTS_URL="+ts.url,
		"CLIENTS_N="+strconv.Itoa(n), "CLIENTS_ONE_ROOM="+strconv.FormatBool(oneRoom))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	testkit.StartProcess(tb, cmd)
	return &clients{cmd: cmd, in: bufio.NewWriter(stdin), out: bufio.NewScanner(stdout)}
}

// do sends a command and returns the client process's answer, failing the
// test unless it starts with "ok".
func (c *clients) do(tb testing.TB, command string) string {
	tb.Helper()
	fmt.Fprintln(c.in, command)
	c.in.Flush()
	if !c.out.Scan() {
		tb.Fatalf("client process: no answer to %q: %v", command, c.out.Err())
	}
	answer := c.out.Text()
	if !strings.HasPrefix(answer, "ok") {
		tb.Fatalf("client process: %s: %s", command, answer)
	}
	return answer
}

func TestTenThousandRoomsHibernate(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10,000 sockets")
	}
	const n = 10000
	hs := startHibernationServer(t)
	// The runtime keeps a descriptor for every goroutine it ever ran at
	// once, on the heap, for good. Reach a peak above any the test reaches
	// later (rooms keep a goroutine for a second after an event: about
	// 3,000 at 3,000 wakes a second), so later peaks do not show up as room
	// memory.
	var peak sync.WaitGroup
	release := make(chan struct{})
	for range 6000 {
		peak.Go(func() { <-release })
	}
	close(release)
	peak.Wait()
	goroutines0, heap0 := runtime.NumGoroutine(), liveHeap()

	many := startClients(t, hs.testServer, n, false)
	many.do(t, "connect")
	testkit.Eventually(t, 60*time.Second, func() error {
		if got := metric(t, hs.reg, "roomgate_rooms_running", ""); got != 0 {
			return errorf("%v rooms still running", got)
		}
		return nil
	})
	if got := metric(t, hs.reg, "roomgate_rooms", "active"); got != n {
		t.Fatalf("active rooms = %v, want %d", got, n)
	}
	heapActive := liveHeap()

	hs.hibernateAll(t)
	if got := metric(t, hs.reg, "roomgate_rooms", "hibernated"); got != n {
		t.Fatalf("hibernated rooms = %v, want %d", got, n)
	}
	goroutinesHibernated, heapHibernated := runtime.NumGoroutine(), liveHeap()
	if goroutinesHibernated > goroutines0+50 {
		t.Errorf("goroutines: %d before connecting, %d with %d hibernated rooms", goroutines0, goroutinesHibernated, n)
	}
	info, err := hs.rt.Room(context.Background(), rooms.Addr{Class: "keeper", Room: "r-7"})
	if err != nil || info.State != "hibernated" || info.Connections != 1 {
		t.Errorf("REST view of a hibernated room = %+v, %v", info, err)
	}

	// Every room wakes on a message and knows its socket's tags and attachment.
	wakes := metric(t, hs.reg, "roomgate_room_wakes_total", "")
	t.Logf("wake latency, %d hibernated rooms one after another: %s", n, many.do(t, "wake"))
	if got := metric(t, hs.reg, "roomgate_room_wakes_total", "") - wakes; got != n {
		t.Errorf("wakes = %v, want %d", got, n)
	}
	// The same round trips to the same rooms, now in memory (parked): the
	// baseline for what the wake costs.
	t.Logf("round trip to the same rooms, in memory: %s", many.do(t, "wake"))
	many.do(t, "close")
	testkit.Eventually(t, 60*time.Second, func() error {
		if got := metric(t, hs.reg, "roomgate_rooms", "hibernated"); got != 0 {
			return errorf("%v rooms still hibernated", got)
		}
		if s, _ := hs.rt.Nodes(context.Background()); s[0].Sockets != 0 {
			return errorf("%d sockets still registered", s[0].Sockets)
		}
		return nil
	})
	hs.hibernateAll(t)

	// The same sockets in one room: the difference is what each hibernated
	// room costs beyond its socket.
	one := startClients(t, hs.testServer, n, true)
	one.do(t, "connect")
	hs.hibernateAll(t)
	heapOneRoom := liveHeap()
	one.do(t, "wake")

	held := (float64(heapActive) - float64(heapHibernated)) / n
	residual := (float64(heapHibernated) - float64(heapOneRoom)) / (n - 1)
	t.Logf("Go heap: %d B before, %d B with %d active rooms, %d B hibernated, %d B with the sockets in one hibernated room",
		heap0, heapActive, n, heapHibernated, heapOneRoom)
	t.Logf("per room: %.0f B freed by hibernation, %.0f B left beyond the socket's own cost", held, residual)
	if residual > 0.1*(held+residual) {
		t.Errorf("hibernation freed %.0f of the %.0f B each active room held: less than 90%%", held, held+residual)
	}
}

// runClients is the client process: it holds CLIENTS_N sockets and runs
// the commands it reads, one per line, answering each with a line.
func runClients() int {
	url := os.Getenv("CLIENTS_URL")
	n, _ := strconv.Atoi(os.Getenv("CLIENTS_N"))
	oneRoom := os.Getenv("CLIENTS_ONE_ROOM") == "true"
	conns := make([]net.Conn, n)
	room := func(i int) string {
		if oneRoom {
			return "shared"
		}
		return "r-" + strconv.Itoa(i)
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var err error
		var answer string
		switch in.Text() {
		case "connect":
			err = paced(n, func(i int) error {
				c, br, _, err := ws.Dial(context.Background(), fmt.Sprintf("%s/ws/keeper/%s?user=u-%d", url, room(i), i))
				if err != nil {
					return err
				}
				if br != nil {
					ws.PutReader(br) // the keeper sends nothing on connect
				}
				conns[i] = c
				return nil
			})
		case "wake":
			var mu sync.Mutex
			lat := make([]time.Duration, 0, n)
			err = paced(n, func(i int) error {
				want := fmt.Sprintf("hi|room:%s|att-u-%d|", room(i), i)
				start := time.Now()
				got, err := roundTrip(conns[i], "hi")
				if err != nil {
					return err
				}
				if !strings.HasPrefix(got, want) {
					return fmt.Errorf("socket %d: got %q, want %q…", i, got, want)
				}
				mu.Lock()
				lat = append(lat, time.Since(start))
				mu.Unlock()
				return nil
			})
			slices.Sort(lat)
			if len(lat) > 0 {
				answer = fmt.Sprintf("p50 %v p99 %v max %v", lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
			}
		case "close":
			err = paced(n, func(i int) error { return conns[i].Close() })
		default:
			err = fmt.Errorf("unknown command %q", in.Text())
		}
		if err != nil {
			fmt.Println("error:", err)
		} else {
			fmt.Println("ok", answer)
		}
	}
	return 0
}

// paced runs f for 0..n-1 on a few goroutines at about 3,000 calls a
// second: every call wakes a room, and a woken room keeps a goroutine for a
// second, which must stay under the race detector's 8,128.
func paced(n int, f func(i int) error) error {
	const workers, perSecond = 4, 3000
	start := time.Now()
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				// Pacing, not synchronizing: call i waits for its slot.
				time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / perSecond)))
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

func roundTrip(c net.Conn, msg string) (string, error) {
	if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	b, err := wsutil.ReadServerText(c)
	return string(b), err
}

func TestAutoResponseAndPingsLeaveTheRoomAsleep(t *testing.T) {
	hs := startHibernationServer(t)
	c := dial(t, hs.testServer, "/ws/keeper/sleepy?user=ada")
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello|room:sleepy|att-ada|1" {
		t.Fatalf("awake reply = %q, %v", got, err)
	}
	if got, err := roundTrip(c, "last-auto"); err != nil || got != "false" {
		t.Fatalf("before any auto-response, last-auto = %q, %v", got, err)
	}
	hs.hibernateAll(t)
	wakes := metric(t, hs.reg, "roomgate_room_wakes_total", "")

	for range 3 {
		if got, err := roundTrip(c, "ping"); err != nil || got != "pong" {
			t.Fatalf("auto-response = %q, %v; want pong", got, err)
		}
	}
	// A protocol ping is the gateway's own business too.
	if err := ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewPingFrame([]byte("x")))); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := ws.ReadFrame(c)
	c.SetReadDeadline(time.Time{})
	if err != nil || f.Header.OpCode != ws.OpPong || string(f.Payload) != "x" {
		t.Fatalf("ping answer = %+v %q, %v", f.Header, f.Payload, err)
	}
	if got := metric(t, hs.reg, "roomgate_room_wakes_total", "") - wakes; got != 0 {
		t.Fatalf("pings woke the room %v times", got)
	}
	if got := metric(t, hs.reg, "roomgate_rooms", "hibernated"); got != 1 {
		t.Fatalf("hibernated rooms = %v, want 1", got)
	}
	if got := metric(t, hs.reg, "roomgate_auto_responses_total", ""); got != 3 {
		t.Fatalf("roomgate_auto_responses_total = %v, want 3", got)
	}

	// A woken room sees when its socket was last answered at the edge.
	if got, err := roundTrip(c, "last-auto"); err != nil || got != "true" {
		t.Fatalf("after auto-responses, last-auto = %q, %v", got, err)
	}
	if got := metric(t, hs.reg, "roomgate_room_wakes_total", "") - wakes; got != 1 {
		t.Fatalf("a message woke the room %v times, want 1", got)
	}
}

func TestSocketsOfAHibernatedRoomStayWhole(t *testing.T) {
	hs := startHibernationServer(t)
	a := dial(t, hs.testServer, "/ws/keeper/pair?user=a")
	b := dial(t, hs.testServer, "/ws/keeper/pair?user=b")
	roundTrip(a, "x")
	hs.hibernateAll(t)

	// REST reads a hibernated room's sockets from storage and leaves it asleep.
	resp, body := httpGet(t, hs.http+"/v1/rooms/keeper/pair/connections")
	if resp.StatusCode != 200 || !strings.Contains(body, `"room:pair"`) || strings.Count(body, `"edge":`) != 2 {
		t.Fatalf("connections of a hibernated room: %d %s", resp.StatusCode, body)
	}
	if got := metric(t, hs.reg, "roomgate_rooms", "hibernated"); got != 1 {
		t.Fatalf("listing connections woke the room")
	}

	// A close wakes the room, which forgets the socket: the other one sees
	// itself alone, tag index included.
	a.Close()
	testkit.Eventually(t, 10*time.Second, func() error {
		if info, _ := hs.rt.Room(context.Background(), rooms.Addr{Class: "keeper", Room: "pair"}); info.Connections != 1 {
			return errorf("room has %d connections", info.Connections)
		}
		return nil
	})
	hs.hibernateAll(t)
	if got, err := roundTrip(b, "y"); err != nil || got != "y|room:pair|att-b|1" {
		t.Fatalf("reply after the other socket left = %q, %v", got, err)
	}

	// A REST broadcast wakes it too.
	hs.hibernateAll(t)
	if resp := call(t, hs.testServer, "POST", "/v1/rooms/keeper/pair/broadcast", "wake up", nil); resp.StatusCode != 204 {
		t.Fatalf("broadcast to a hibernated room: %d", resp.StatusCode)
	}
	if got, _, err := testkit.ReadData(t, b); err != nil || string(got) != "wake up" {
		t.Fatalf("broadcast to a hibernated room: got %q, %v", got, err)
	}

	// A kick wakes a hibernated room to close the socket.
	hs.hibernateAll(t)
	var conns struct{ Connections []rooms.ConnInfo }
	call(t, hs.testServer, "GET", "/v1/rooms/keeper/pair/connections", "", &conns)
	if len(conns.Connections) != 1 {
		t.Fatalf("connections of the hibernated room: %+v", conns)
	}
	if resp := call(t, hs.testServer, "DELETE", "/v1/rooms/keeper/pair/connections/"+conns.Connections[0].ID, "", nil); resp.StatusCode != 204 {
		t.Fatalf("kick in a hibernated room: %d", resp.StatusCode)
	}
	testkit.ExpectClose(t, b, 4403)
	expectError(t, hs.testServer, "DELETE", "/v1/rooms/keeper/never-used/connections/0000000000000001", "", 404, "socket_not_found")
}
