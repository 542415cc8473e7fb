package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/client"
	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

func TestClass(t *testing.T) {
	if err := rooms.CheckClass(newCounter); err != nil {
		t.Fatal(err)
	}
}

// start runs a node on dir with main's classes (the built-ins too, so a
// name clash fails here); stop ends Run and waits for it, so that the
// next node can open dir.
func start(t *testing.T, dir string) (url string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := roomgate.DefaultConfig()
	cfg.Listener, cfg.Data = ln, dir
	srv, err := roomgate.New(cfg, roomgate.Builtins(), roomgate.Class("rpc-counter", newCounter))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	url = "http://" + ln.Addr().String()
	testkit.WaitReady(t, url+"/readyz", 10*time.Second)
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
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return")
		}
	}
	t.Cleanup(stop)
	return url, stop
}

func call(t *testing.T, url, method string) int {
	t.Helper()
	c, err := client.New(url, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	if err := c.Room("rpc-counter", "global").Call(ctx, method, nil, &n); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return n
}

func TestIncrementPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	url, stop := start(t, dir)
	if n := call(t, url, "get"); n != 0 {
		t.Fatalf("get on a new counter = %d, want 0", n)
	}
	for want := 1; want <= 3; want++ {
		if n := call(t, url, "increment"); n != want {
			t.Fatalf("increment = %d, want %d", n, want)
		}
	}
	stop()

	url, _ = start(t, dir)
	if n := call(t, url, "get"); n != 3 {
		t.Fatalf("get after a restart = %d, want 3", n)
	}
	if n := call(t, url, "increment"); n != 4 {
		t.Fatalf("increment after a restart = %d, want 4", n)
	}
}
