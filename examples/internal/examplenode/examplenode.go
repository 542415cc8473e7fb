// Package examplenode starts a Roomgate node for the examples' end-to-end
// tests: in-process, on a free loopback port, with real HTTP and
// WebSocket, the way each example's main would run it.
package examplenode

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/internal/testkit"
)

// Start runs a node with opts on data (a fresh temporary directory when
// ""), logging warnings into the test's output, and returns its
// "http://host:port" once it is ready. stop ends it and waits for Run,
// failing the test if Run failed; it runs at the test's end too, and a
// second call does nothing, so a test can restart a node on the same data.
func Start(tb testing.TB, data string, opts ...roomgate.Option) (url string, stop func()) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	if data == "" {
		data = tb.TempDir()
	}
	cfg := roomgate.DefaultConfig()
	cfg.Listener, cfg.Data = ln, data
	cfg.Logger = slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := roomgate.New(cfg, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	url = "http://" + ln.Addr().String()
	testkit.WaitReady(tb, url+"/readyz", 10*time.Second)
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			tb.Fatal("Run did not return")
		}
	}
	tb.Cleanup(stop)
	return url, stop
}
