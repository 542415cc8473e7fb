package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roomgate/roomgate/internal/testkit"
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

// dial opens a WebSocket to path on ts, closed when the test ends.
func dial(tb testing.TB, ts *testServer, path string) net.Conn {
	tb.Helper()
	return testkit.Dial(tb, ts.url+path)
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
