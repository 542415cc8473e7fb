package main

import (
	"context"
	"testing"
	"time"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/client"
	"github.com/roomgate/roomgate/examples/internal/examplenode"
	"github.com/roomgate/roomgate/rooms"
)

func TestClass(t *testing.T) {
	if err := rooms.CheckClass(newCounter); err != nil {
		t.Fatal(err)
	}
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
	url, stop := examplenode.Start(t, dir, roomgate.Builtins(), roomgate.Class("rpc-counter", newCounter))
	if n := call(t, url, "get"); n != 0 {
		t.Fatalf("get on a new counter = %d, want 0", n)
	}
	for want := 1; want <= 3; want++ {
		if n := call(t, url, "increment"); n != want {
			t.Fatalf("increment = %d, want %d", n, want)
		}
	}
	stop()

	url, _ = examplenode.Start(t, dir, roomgate.Builtins(), roomgate.Class("rpc-counter", newCounter))
	if n := call(t, url, "get"); n != 3 {
		t.Fatalf("get after a restart = %d, want 3", n)
	}
	if n := call(t, url, "increment"); n != 4 {
		t.Fatalf("increment after a restart = %d, want 4", n)
	}
}
