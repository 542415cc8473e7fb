package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

func TestClass(t *testing.T) {
	if err := rooms.CheckClass(newShout); err != nil {
		t.Fatal(err)
	}
}

// TestServesClassAndBuiltins runs a node with main's options and talks to
// the class and to the built-in echo over WebSocket.
func TestServesClassAndBuiltins(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := roomgate.DefaultConfig()
	cfg.Listener, cfg.Data = ln, t.TempDir()
	srv, err := roomgate.New(cfg, roomgate.Builtins(), roomgate.Class("shout", newShout))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	addr := ln.Addr().String()
	testkit.WaitReady(t, "http://"+addr+"/readyz", 10*time.Second)

	for _, tc := range []struct{ path, send, want string }{
		{"/ws/shout/lobby", "hello", "HELLO"},
		{"/ws/echo/lobby", "hello", "hello"},
	} {
		c := testkit.Dial(t, "ws://"+addr+tc.path)
		if err := wsutil.WriteClientText(c, []byte(tc.send)); err != nil {
			t.Fatal(err)
		}
		got, _, err := testkit.ReadData(t, c)
		if err != nil || string(got) != tc.want {
			t.Fatalf("%s: got %q, %v; want %q", tc.path, got, err, tc.want)
		}
	}
}
