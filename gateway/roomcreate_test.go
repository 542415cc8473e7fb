package gateway

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

// TestRoomCreationPerIP: with RoomCreatesPerIP set, a client address that
// creates rooms faster than the rate (burst 2×: here one every two
// seconds, a burst of one) is refused with 429 and Retry-After before the
// upgrade; sockets for rooms that exist, in memory or only in storage, and
// other addresses are not. Before, one client created 20,000 rooms in 7 s.
func TestRoomCreationPerIP(t *testing.T) {
	rt := newRuntime(t, rooms.Options{HibernateAfter: 50 * time.Millisecond}, nil)
	ts := startServer(t, Options{Router: rt, Admin: rt, Limits: Limits{RoomCreatesPerIP: 0.5}})
	// A room that is only stored: a counter with a value, its socket gone,
	// the room out of memory.
	c, err := dialFromErr(t, ts, "127.0.0.3", "/ws/counter/kept")
	if err != nil {
		t.Fatal(err)
	}
	readMsg(t, c)
	sendText(t, c, "inc")
	readMsg(t, c)
	c.Close()
	testkit.Eventually(t, 10*time.Second, func() error {
		info, err := rt.Room(context.Background(), rooms.Addr{Class: "counter", Room: "kept"})
		if err != nil || info.State != "stored" {
			return fmt.Errorf("room kept: %+v, %v", info, err)
		}
		return nil
	})
	if _, err := dialFromErr(t, ts, "127.0.0.1", "/ws/echo/new-1"); err != nil {
		t.Fatalf("a first new room: %v", err)
	}
	_, err = dialFromErr(t, ts, "127.0.0.1", "/ws/echo/new-2")
	var se ws.StatusError
	if !errors.As(err, &se) || int(se) != 429 {
		t.Fatalf("a second new room at once: %v, want 429", err)
	}
	// Rooms that exist are not creations.
	for _, path := range []string{"/ws/echo/new-1", "/ws/counter/kept"} {
		if _, err := dialFromErr(t, ts, "127.0.0.1", path); err != nil {
			t.Fatalf("%s, which exists: %v", path, err)
		}
	}
	// Another address has its own bucket.
	if _, err := dialFromErr(t, ts, "127.0.0.2", "/ws/echo/new-3"); err != nil {
		t.Fatalf("a new room from 127.0.0.2: %v", err)
	}
	// The refusal is the contract's JSON error, with when to come back.
	resp, code := upgradeFrom(t, ts, "127.0.0.1", "/ws/echo/new-4")
	if resp.StatusCode != 429 || code != "too_many_rooms" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("refusal: %d %q, Retry-After %q", resp.StatusCode, code, resp.Header.Get("Retry-After"))
	}
	if n := ts.limited("room_creation"); n != 2 {
		t.Fatalf("roomgate_limited_total{kind=room_creation} = %v, want 2", n)
	}
}
