package rooms

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestMemoryPressureEvictsTheLeastRecentlyUsed: past MaxActiveRooms, the
// rooms idle longest leave first, down to 90% of the cap.
func TestMemoryPressureEvictsTheLeastRecentlyUsed(t *testing.T) {
	fx := newFixture(t, Options{HibernateAfter: time.Hour, MaxActiveRooms: 10}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		return c.SendText(msg)
	})
	room := func(i int) Addr { return Addr{Class: "probe", Room: fmt.Sprintf("r%02d", i)} }
	for i := range 20 {
		s := newSocket()
		if err := fx.rt.Connect(context.Background(), room(i), s, ConnectInfo{}); err != nil {
			t.Fatal(err)
		}
		fx.rt.Message(context.Background(), room(i), s, Frame{Op: Text, Data: []byte("x")})
		s.next(t)
		time.Sleep(2 * time.Millisecond) // distinct last-use times
	}
	deadline := time.Now().Add(10 * time.Second)
	for fx.rt.nrooms.Load() > 9 {
		if time.Now().After(deadline) {
			t.Fatalf("%d rooms in memory, want 9", fx.rt.nrooms.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range 20 {
		if active := fx.rt.active(room(i)) != nil; active != (i >= 11) {
			t.Errorf("room %d in memory: %v", i, active)
		}
	}
	info, err := fx.rt.Room(context.Background(), room(0))
	if err != nil || info.State != "hibernated" || info.Connections != 1 {
		t.Fatalf("an evicted room: %+v, %v", info, err)
	}
}
