package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roomgate/roomgate/rooms"
	"github.com/roomgate/roomgate/rooms/builtin"
	"github.com/roomgate/roomgate/storage/filestore"
)

// testServer is a real gateway on a loopback port, run until the test ends.
type testServer struct {
	*Server
	url    string // ws://127.0.0.1:port
	http   string // http://127.0.0.1:port
	cancel context.CancelFunc
	done   chan error
}

func startServer(tb testing.TB, o Options) *testServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	o.Listener = ln
	if o.Router == nil {
		rt := newRuntime(tb, rooms.Options{}, nil)
		o.Router, o.Admin, o.Ready = rt, rt, rt.Ready
	}
	if o.Metrics == nil {
		o.Metrics = prometheus.NewRegistry()
	}
	srv, err := New(o)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{
		Server: srv,
		url:    "ws://" + ln.Addr().String(),
		http:   "http://" + ln.Addr().String(),
		cancel: cancel,
		done:   make(chan error, 1),
	}
	go func() { ts.done <- srv.Run(ctx) }()
	tb.Cleanup(func() { ts.stop(tb) })
	return ts
}

// newRuntime runs a real room runtime with the built-in classes, plus
// extra, on a file store in a temporary directory, until the test ends.
// o.Store is set here; o.Metrics too when it is nil.
func newRuntime(tb testing.TB, o rooms.Options, extra map[string]func() rooms.Handler) *rooms.Runtime {
	tb.Helper()
	if o.Store == nil {
		store, err := filestore.Open(tb.TempDir())
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { store.Close() })
		o.Store = store
	}
	if o.Metrics == nil {
		o.Metrics = prometheus.NewRegistry()
	}
	rt, err := rooms.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	builtin.Register(rt)
	for name, f := range extra {
		rt.Register(name, f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	return rt
}

// stop cancels Run and waits for it; calling it twice is fine.
func (ts *testServer) stop(tb testing.TB) {
	tb.Helper()
	ts.cancel()
	select {
	case err, ok := <-ts.done:
		if ok && err != nil {
			tb.Errorf("Run: %v", err)
		}
		if ok {
			close(ts.done)
		}
	case <-time.After(15 * time.Second):
		tb.Fatal("Run did not return within 15s of cancel")
	}
}

func (ts *testServer) badInput(kind string) float64 {
	return testutil.ToFloat64(ts.m.badInput.WithLabelValues(kind))
}

// dial opens a WebSocket to path on ts.
func dial(tb testing.TB, ts *testServer, path string) net.Conn {
	tb.Helper()
	c, br, _, err := ws.Dial(context.Background(), ts.url+path)
	if err != nil {
		tb.Fatalf("dial %s: %v", path, err)
	}
	tb.Cleanup(func() { c.Close() })
	if br != nil {
		// Frames that came in the same read as the 101 (a greeting, or a
		// refusal's close frame) wait in br.
		return &bufferedConn{Conn: c, r: br}
	}
	return c
}

type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// readData reads the next data message from the server, answering pings. A
// close frame comes back as wsutil.ClosedError.
func readData(tb testing.TB, c net.Conn) ([]byte, ws.OpCode, error) {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	return wsutil.ReadServerData(c)
}

// expectClose reads until the server's close frame, answers it as a client
// must, and checks its code. It parses frames itself: gobwas/ws's client
// helpers refuse codes newer than their table, such as 1012.
func expectClose(tb testing.TB, c net.Conn, want int) {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	for {
		f, err := ws.ReadFrame(c)
		if err != nil {
			tb.Fatalf("waiting for close %d: %v", want, err)
		}
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		code, reason := ws.ParseCloseFrameData(f.Payload)
		ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewCloseFrame(f.Payload[:min(len(f.Payload), 2)])))
		if int(code) != want {
			tb.Fatalf("close code = %d (%q), want %d", code, reason, want)
		}
		return
	}
}

// expectEOF checks the server closes the TCP connection.
func expectEOF(tb testing.TB, c net.Conn) {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		tb.Fatalf("waiting for EOF: %v", err)
	}
}

// eventually polls f until it returns nil or d passes.
func eventually(tb testing.TB, d time.Duration, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func httpGet(tb testing.TB, url string) (*http.Response, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
