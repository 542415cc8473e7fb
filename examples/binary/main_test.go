package main

import (
	"strings"
	"testing"

	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/examples/internal/examplenode"
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
	url, _ := examplenode.Start(t, "", roomgate.Builtins(), roomgate.Class("shout", newShout))
	addr := strings.TrimPrefix(url, "http://")

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
