package gateway

import (
	"bytes"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/internal/testkit"
)

func TestEchoTextAndBinary(t *testing.T) {
	ts := startServer(t, Options{})
	c := dial(t, ts, "/ws/echo/lobby")
	tests := []struct {
		name string
		op   ws.OpCode
		data []byte
	}{
		{"text", ws.OpText, []byte("hello, room")},
		{"binary", ws.OpBinary, []byte{0, 1, 2, 0xff, 0xfe}},
		{"empty text", ws.OpText, []byte{}},
		{"text past a 16-bit length", ws.OpText, bytes.Repeat([]byte("x"), 70_000)},
		{"binary bigger than a read buffer", ws.OpBinary, bytes.Repeat([]byte{7}, 3*readBufferSize+5)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := wsutil.WriteClientMessage(c, tc.op, tc.data); err != nil {
				t.Fatal(err)
			}
			got, op, err := testkit.ReadData(t, c)
			if err != nil {
				t.Fatal(err)
			}
			if op != tc.op || !bytes.Equal(got, tc.data) {
				t.Fatalf("got op %v, %d bytes; want op %v, %d bytes", op, len(got), tc.op, len(tc.data))
			}
		})
	}
}

func TestEchoFragmentedMessage(t *testing.T) {
	ts := startServer(t, Options{})
	c := dial(t, ts, "/ws/echo/frag")
	parts := []string{"hel", "lo ", "wörld"}
	for i, p := range parts {
		op := ws.OpContinuation
		if i == 0 {
			op = ws.OpText
		}
		f := ws.NewFrame(op, i == len(parts)-1, []byte(p))
		if err := ws.WriteFrame(c, ws.MaskFrameInPlace(f)); err != nil {
			t.Fatal(err)
		}
		if i == 1 { // a ping between fragments is legal and answered at once
			if err := ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewPingFrame([]byte("p")))); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, op, err := testkit.ReadData(t, c)
	if err != nil {
		t.Fatal(err)
	}
	if op != ws.OpText || string(got) != "hello wörld" {
		t.Fatalf("got %v %q, want text %q", op, got, "hello wörld")
	}
}

func TestPingGetsPong(t *testing.T) {
	ts := startServer(t, Options{})
	c := dial(t, ts, "/ws/echo/ping")
	if err := ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewPingFrame([]byte("are you there")))); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := ws.ReadFrame(c)
	if err != nil {
		t.Fatal(err)
	}
	if f.Header.OpCode != ws.OpPong || string(f.Payload) != "are you there" {
		t.Fatalf("got %v %q, want pong with the ping's payload", f.Header.OpCode, f.Payload)
	}
}

func TestClientCloseHandshake(t *testing.T) {
	ts := startServer(t, Options{})
	c := dial(t, ts, "/ws/echo/bye")
	body := ws.NewCloseFrameBody(ws.StatusNormalClosure, "done")
	if err := ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewCloseFrame(body))); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := ws.ReadFrame(c)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := ws.ParseCloseFrameData(f.Payload)
	if f.Header.OpCode != ws.OpClose || code != ws.StatusNormalClosure {
		t.Fatalf("got %v code %d, want close 1000 echoed", f.Header.OpCode, code)
	}
	testkit.ExpectEOF(t, c)
	testkit.Eventually(t, 5*time.Second, func() error {
		if n := ts.openCount.Load(); n != 0 {
			return errorf("%d sockets still open", n)
		}
		return nil
	})
}

// TestEchoThousandSockets runs 1,000 concurrent sockets, each doing round
// trips, and checks every reply is its own and in order.
func TestEchoThousandSockets(t *testing.T) {
	const sockets, rounds = 1000, 20
	ts := startServer(t, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, sockets)
	for i := range sockets {
		c := dial(t, ts, fmt.Sprintf("/ws/echo/room-%d", i%50))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				msg := fmt.Sprintf("socket %d round %d", i, r)
				if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
					errs <- err
					return
				}
				got, err := wsutil.ReadServerText(c)
				if err != nil {
					errs <- err
					return
				}
				if string(got) != msg {
					errs <- fmt.Errorf("socket %d got %q, want %q", i, got, msg)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestIdleSocketsCostNoGoroutines holds 5,000 open sockets, each in its own
// room, and checks the process's goroutine count barely moves (DESIGN §3.4):
// the gateway holds none per socket, and a room with no events parks its
// goroutine a second after its last one.
func TestIdleSocketsCostNoGoroutines(t *testing.T) {
	const sockets = 5000
	ts := startServer(t, Options{})
	// One round trip makes sure workers and pollers are already running.
	warm := dial(t, ts, "/ws/echo/warm")
	wsutil.WriteClientText(warm, []byte("x"))
	if _, _, err := testkit.ReadData(t, warm); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for i := range sockets {
		dial(t, ts, fmt.Sprintf("/ws/echo/idle-%d", i))
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		if n := ts.openCount.Load(); n != sockets+1 {
			return errorf("%d sockets open, want %d", n, sockets+1)
		}
		return nil
	})
	// Handshake goroutines end just after the socket opens; let them go.
	var after int
	testkit.Eventually(t, 10*time.Second, func() error {
		after = runtime.NumGoroutine()
		if after-before >= 50 {
			return errorf("goroutines grew from %d to %d with %d idle sockets", before, after, sockets)
		}
		return nil
	})
	t.Logf("goroutines: %d before, %d with %d idle sockets", before, after, sockets)
}
