package rooms

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/roomgate/roomgate/internal/testkit"
)

func TestRoomRefusesSocketsPastMaxSockets(t *testing.T) {
	fx := newFixture(t, Options{MaxSockets: 2}, nil)
	first := fx.connect(t)
	fx.connect(t)
	if !fx.rt.Full(probeRoom) {
		t.Error("Full = false with 2 sockets in a room of 2")
	}
	if err := fx.rt.Connect(context.Background(), probeRoom, newSocket(), ConnectInfo{}); !errors.Is(err, ErrRoomFull) {
		t.Fatalf("3rd socket in a room of 2: %v, want ErrRoomFull", err)
	}
	if fx.rt.Full(Addr{Class: "probe", Room: "other"}) {
		t.Error("Full = true for a room that does not run")
	}
	fx.rt.Closed(probeRoom, first, 1000, "")
	testkit.WaitFor(t, 5*time.Second, "the room to have room again", func() bool { return !fx.rt.Full(probeRoom) })
	fx.connect(t)
}

// An owner's ErrRoomFull reaches the edge as itself, so the edge answers
// room_full as it would for a room of its own.
func TestRoomFullCrossesTheLink(t *testing.T) {
	var m linkMsg
	encodeErr(&m, ErrRoomFull)
	if got := decodeErr(&m); !errors.Is(got, ErrRoomFull) {
		t.Errorf("ErrRoomFull over the link = %v", got)
	}
}
