package gateway

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

// bigWelcome greets each socket with a binary frame of ?size= bytes, as
// chat did with a full room's history, and echoes what it is sent.
type bigWelcome struct{}

func (bigWelcome) OnConnect(ctx context.Context, r *rooms.Room, c *rooms.Conn) error {
	n, _ := strconv.Atoi(c.Query().Get("size"))
	c.Send(rooms.Frame{Op: rooms.Binary, Data: make([]byte, n)}) // a refused welcome closes the socket itself
	return nil
}

func (bigWelcome) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	return c.Send(f)
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// dialSilent opens n sockets to path that never read (4 KiB receive
// buffers, so the server's writes back up at once).
func dialSilent(t *testing.T, ts *testServer, path string, n int) []net.Conn {
	t.Helper()
	d := smallBufferDialer()
	conns := make([]net.Conn, 0, n)
	for range n {
		c, _, _, err := d.Dial(context.Background(), ts.url+path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	return conns
}

// servedRoundTrip checks that a socket reading its messages is served: its
// welcome, then an echo, each within a second.
func servedRoundTrip(t *testing.T, ts *testServer, path string) time.Duration {
	t.Helper()
	c := dial(t, ts, path)
	start := time.Now()
	c.SetReadDeadline(start.Add(time.Second))
	if _, err := wsutil.ReadServerBinary(c); err != nil {
		t.Fatalf("a reading socket's welcome: %v", err)
	}
	if err := wsutil.WriteClientBinary(c, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	got, err := wsutil.ReadServerBinary(c)
	if err != nil || string(got) != "ping" {
		t.Fatalf("a reading socket's echo: %q, %v", got, err)
	}
	return time.Since(start)
}

// TestFirstFrameCountsAgainstTheBound: the first frame a socket gets was
// exempt from MaxQueueBytes, so a frame of any size left its unsent tail
// queued whole. A frame larger than the bound is now refused with
// ErrTooBig and the socket closed with 1009; nothing is queued.
func TestFirstFrameCountsAgainstTheBound(t *testing.T) {
	const bound = 64 << 10
	got := make(chan *socket, 1)
	ts := startServer(t, Options{MaxQueueBytes: bound, Router: captureRouter{got: got}})
	d := smallBufferDialer()
	c, _, _, err := d.Dial(context.Background(), ts.url+"/ws/echo/first")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sk := <-got
	err = sk.Send(rooms.Frame{Op: rooms.Binary, Data: make([]byte, 1<<20)})
	sk.wmu.Lock()
	queued := 0
	if sk.out != nil {
		queued = sk.out.bytes
	}
	sk.wmu.Unlock()
	if queued > bound {
		t.Errorf("a first frame of 1 MiB left %d bytes queued; MaxQueueBytes is %d", queued, bound)
	}
	if !errors.Is(err, rooms.ErrTooBig) {
		t.Fatalf("Send of a frame larger than the bound: %v, want ErrTooBig", err)
	}
	if n := ts.badInput("send_too_big"); n != 1 {
		t.Errorf("roomgate_bad_input_total{kind=send_too_big} = %v, want 1", n)
	}
	testkit.ExpectClose(t, c, 1009)
	// A frame that fits is still sent whole.
	c2, _, _, err := d.Dial(context.Background(), ts.url+"/ws/echo/first")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	sk = <-got
	if err := sk.Send(rooms.Frame{Op: rooms.Binary, Data: make([]byte, bound-maxServerHeader)}); err != nil {
		t.Fatalf("Send of a frame exactly at the bound: %v", err)
	}
}

// TestSilentSocketsHoldBoundedMemory is the attack of issue 14: sockets
// that never read, each greeted with a 4 MiB frame. Each kept its
// welcome's unsent tail (the first frame was exempt from the bound), so
// 1,000 of them held 710 MB. Now the heap barely moves, and a socket that
// reads is served all along.
func TestSilentSocketsHoldBoundedMemory(t *testing.T) {
	const silent, welcome = 50, 4 << 20
	rt := newRuntime(t, rooms.Options{}, map[string]func() rooms.Handler{"big": func() rooms.Handler { return bigWelcome{} }})
	ts := startServer(t, Options{Router: rt, Admin: rt})
	servedRoundTrip(t, ts, "/ws/big/r?size=100") // warm up: pools, the room's instance
	base := heapInUse()
	framesBefore := testutil.ToFloat64(ts.m.framesOut)
	dialSilent(t, ts, "/ws/big/r?size="+strconv.Itoa(welcome), silent)
	// Every welcome has been written or refused once each socket saw a frame.
	testkit.WaitFor(t, 10*time.Second, "a frame to every silent socket", func() bool {
		return testutil.ToFloat64(ts.m.framesOut)-framesBefore >= silent
	})
	if took := servedRoundTrip(t, ts, "/ws/big/r?size=100"); took > time.Second {
		t.Errorf("a reading socket waited %v", took)
	}
	grown := int64(heapInUse()) - int64(base)
	t.Logf("heap grew by %d KiB for %d silent sockets with %d KiB welcomes", grown>>10, silent, welcome>>10)
	if grown > 16<<20 {
		t.Fatalf("heap grew by %d MiB for %d silent sockets; want it bounded (under 16 MiB)", grown>>20, silent)
	}
}
