package gateway

import (
	"context"
	"errors"
	"fmt"
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

// TestSilentSocketsAreClosedAfterWriteTimeout: a socket whose queued
// output waits WriteTimeout without its client reading a byte is closed
// with 1008 (slow consumer) by the janitor, and its queue is freed. Before,
// output under the bound stayed queued for as long as the client kept the
// connection open. A client that reads is not cut, however much it is sent.
func TestSilentSocketsAreClosedAfterWriteTimeout(t *testing.T) {
	const silent = 20
	got := make(chan *socket, silent+1)
	ts := startServer(t, Options{Router: captureRouter{got: got}, WriteTimeout: 300 * time.Millisecond, CloseTimeout: 200 * time.Millisecond})
	frame := rooms.Frame{Op: rooms.Binary, Data: make([]byte, 16<<10)}
	// queue sends to sk until the kernel refuses some of it.
	queue := func(sk *socket) {
		for range 1000 {
			if err := sk.Send(frame); err != nil {
				t.Fatalf("Send: %v", err)
			}
			if sk.stalled.Load() != 0 {
				return
			}
		}
		t.Fatal("the kernel took 16 MiB for a client that does not read")
	}
	conns := dialSilent(t, ts, "/ws/echo/silent", silent)
	for range conns {
		queue(<-got)
	}
	reader := dial(t, ts, "/ws/echo/reader")
	rs := <-got
	done := make(chan error, 1)
	go func() {
		for {
			reader.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := wsutil.ReadServerData(reader); err != nil {
				done <- err
				return
			}
		}
	}()
	// The reader gets 8 MiB, its queue filling and draining over and over,
	// for longer than the silent ones are given.
	for sent := 0; sent < 8<<20; sent += len(frame.Data) {
		if err := rs.Send(frame); err != nil {
			t.Fatalf("a reading socket's Send after %d KiB: %v", sent>>10, err)
		}
		// The next frame waits for the queue to drain: the reader stays
		// under MaxQueueBytes.
		testkit.WaitFor(t, 10*time.Second, "the reader's queue drained", func() bool { return rs.stalled.Load() == 0 })
	}
	testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("%d slow consumers closed", silent), func() bool {
		return ts.badInput("slow_consumer") >= silent
	})
	// Once their close handshakes time out their sockets end, the queues
	// with them; the reader's stays open.
	testkit.Eventually(t, 10*time.Second, func() error {
		if open := testutil.ToFloat64(ts.m.socketsOpen); open != 1 {
			return fmt.Errorf("%v sockets open, want only the reader", open)
		}
		return nil
	})
	if n := ts.badInput("slow_consumer"); n != silent {
		t.Errorf("roomgate_bad_input_total{kind=slow_consumer} = %v, want %d: the reader was cut too", n, silent)
	}
	testkit.ExpectEOF(t, conns[0])
	reader.Close()
	<-done
}
