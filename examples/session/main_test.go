package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/client"
	"github.com/roomgate/roomgate/examples/internal/examplenode"
	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

const idle = 400 * time.Millisecond

func newSession() rooms.Handler { return Session{Idle: idle} }

func TestSessionHandlers(t *testing.T) {
	if err := rooms.CheckClass(newSession); err != nil {
		t.Fatal(err)
	}
}

// TestSessionExpires: a socket that keeps talking keeps its session well
// past the idle time; once it stops, the session closes it with 4404 after
// the idle time, and the room's storage is gone.
func TestSessionExpires(t *testing.T) {
	addr := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, err := client.New("http://"+addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	room := rc.Room("session", "s1")
	conn := testkit.Dial(t, "ws://"+addr+"/ws/session/s1")

	began := time.Now()
	var last time.Time
	for n := 1; time.Since(began) < 3*idle; n++ {
		last = time.Now()
		if err := wsutil.WriteClientText(conn, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		b, _, err := testkit.ReadData(t, conn)
		if err != nil {
			t.Fatalf("message %d, %v into the session: %v", n, time.Since(began), err)
		}
		if string(b) != strconv.Itoa(n) {
			t.Fatalf("answer %q, want %d", b, n)
		}
		time.Sleep(idle / 4) // the client's pace
	}
	info, err := room.Info(ctx)
	if err != nil || info.StorageKeys == 0 {
		t.Fatalf("session while talking: %+v, %v; want its storage", info, err)
	}

	testkit.ExpectClose(t, conn, 4404)
	if quiet := time.Since(last); quiet < idle {
		t.Errorf("closed %v after the last message, before the idle time %v", quiet, idle)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		// Still in memory, the room is listed with nothing in it; once
		// evicted, it is not found.
		info, err := room.Info(ctx)
		if client.CodeOf(err) == client.CodeRoomNotFound ||
			err == nil && info.StorageKeys == 0 && info.Connections == 0 {
			return nil
		}
		return fmt.Errorf("room after expiry: %+v, %v; want no storage and no sockets", info, err)
	})
}

// start runs a node with the session class and returns its host:port.
func start(t *testing.T) string {
	t.Helper()
	url, _ := examplenode.Start(t, "", roomgate.Class("session", newSession))
	return strings.TrimPrefix(url, "http://")
}
