package gateway

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

// slowRoom takes 2 ms over each message, then answers its sender: four
// clients sending flat out fill its mailbox at once.
type slowRoom struct{}

func (slowRoom) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	time.Sleep(2 * time.Millisecond) // the work itself: the room must be slower than its flooders
	return c.Send(rooms.Frame{Op: rooms.Text, Data: []byte("ok")})
}

// readUntilClosed reads a client connection until it ends, counting the
// data messages it gets, and returns the close code it ended with (0: no
// close frame, the connection dropped or the test closed it).
func readUntilClosed(c net.Conn, got *atomic.Int64) int {
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := wsutil.ReadServerData(c)
		var ce wsutil.ClosedError
		switch {
		case errors.As(err, &ce):
			return int(ce.Code)
		case err != nil:
			return 0
		}
		got.Add(1)
	}
}

// TestFullRoomRefusesTheBusiestSocket is issue 14's flood: four clients
// send to a room as fast as they can, reconnecting whenever they are
// closed, while a fifth sends ten messages a second. The room's mailbox
// is full nearly all the time. Before, whoever sent into the full mailbox
// was closed with 1008, and the polite client was closed within a second
// or two; now the socket holding the most queued messages is, so the
// polite client is never closed and every message it sends is answered.
func TestFullRoomRefusesTheBusiestSocket(t *testing.T) {
	rt := newRuntime(t, rooms.Options{MaxQueuedEvents: 32}, map[string]func() rooms.Handler{"slow": func() rooms.Handler { return slowRoom{} }})
	ts := startServer(t, Options{Router: rt, Admin: rt})
	const path = "/ws/slow/flooded"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()

	var floodersClosed atomic.Int64 // closes with 1008
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				c, err := testkit.DialContext(ctx, ts.url+path)
				if err != nil {
					continue
				}
				var replies atomic.Int64
				code := make(chan int, 1)
				go func() { code <- readUntilClosed(c, &replies) }()
			flood:
				for ctx.Err() == nil {
					select {
					case n := <-code:
						code <- n
						break flood
					default:
					}
					if wsutil.WriteClientText(c, []byte("flood")) != nil {
						break
					}
				}
				c.Close()
				if <-code == 1008 {
					floodersClosed.Add(1)
				}
			}
		})
	}

	polite := dial(t, ts, path)
	var answered atomic.Int64
	politeCode := make(chan int, 1)
	go func() { politeCode <- readUntilClosed(polite, &answered) }()
	sent := int64(0)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case code := <-politeCode:
			t.Fatalf("the polite client was closed with %d after %d messages", code, sent)
		case <-tick.C:
			if err := wsutil.WriteClientText(polite, []byte("hello")); err != nil {
				t.Fatalf("the polite client's message %d: %v", sent+1, err)
			}
			sent++
		case <-ctx.Done():
		}
	}
	wg.Wait()
	testkit.WaitFor(t, 5*time.Second, "an answer to every polite message", func() bool { return answered.Load() >= sent })
	select {
	case code := <-politeCode:
		t.Fatalf("the polite client was closed with %d", code)
	default:
	}
	if floodersClosed.Load() == 0 {
		t.Fatal("no flooder was closed with 1008: the room's mailbox never filled")
	}
	t.Logf("polite client: %d messages answered; flooders closed with 1008: %d times", sent, floodersClosed.Load())
	polite.Close()
	<-politeCode
}
