package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

// TestRoomCreationPerIP: with RoomCreatesPerIP set, a client address that
// creates rooms faster than the rate (burst 2×: here one every two
// seconds, a burst of one) is refused with 429 before
// the upgrade; sockets for rooms that exist, in memory or only in storage,
// and other addresses are not. Before, one client created 20,000 rooms in
// 7 s.
func TestRoomCreationPerIP(t *testing.T) {
	reg := prometheus.NewRegistry()
	rt := newRuntime(t, rooms.Options{RoomCreatesPerIP: 0.5, HibernateAfter: 50 * time.Millisecond, Metrics: reg}, nil)
	ts := startServer(t, Options{Router: rt, Admin: rt})
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
	// The refusal is the contract's JSON error.
	raw, err := net.Dial("tcp", ts.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	fmt.Fprintf(raw, "GET /ws/echo/new-4 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, _ := raw.Read(buf)
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	resp := string(buf[:n])
	if i := indexBody(resp); i < 0 || len(resp) < 12 || json.Unmarshal([]byte(resp[i:]), &body) != nil || body.Error.Code != "too_many_rooms" || resp[9:12] != "429" {
		t.Fatalf("refusal: %q", resp)
	}
	if n := metric(t, reg, "roomgate_room_limited_total", "room_creation"); n != 2 {
		t.Fatalf("roomgate_room_limited_total{kind=room_creation} = %v, want 2", n)
	}
}

func indexBody(resp string) int {
	for i := 0; i+4 <= len(resp); i++ {
		if resp[i:i+4] == "\r\n\r\n" {
			return i + 4
		}
	}
	return -1
}
