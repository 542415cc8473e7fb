package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

// recordingRouter echoes, refuses rooms named "refuse", and records every
// call so tests can check the order and count the gateway promises.
type recordingRouter struct {
	mu     sync.Mutex
	events map[rooms.SocketID][]string
	block  chan struct{} // when set, Message waits on it or on ctx
}

func newRecordingRouter() *recordingRouter {
	return &recordingRouter{events: map[rooms.SocketID][]string{}}
}

func (r *recordingRouter) add(id rooms.SocketID, e string) {
	r.mu.Lock()
	r.events[id] = append(r.events[id], e)
	r.mu.Unlock()
}

func (r *recordingRouter) HasClass(c string) bool { return c == "echo" }
func (r *recordingRouter) Connect(ctx context.Context, a rooms.Addr, s rooms.Socket, info rooms.ConnectInfo) error {
	r.add(s.ID(), "connect")
	if a.Room == "refuse" {
		return rooms.ErrRefused
	}
	return nil
}
func (r *recordingRouter) Message(ctx context.Context, a rooms.Addr, s rooms.Socket, f rooms.Frame) error {
	r.add(s.ID(), "message")
	if r.block != nil {
		select {
		case <-r.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Send(f)
}
func (r *recordingRouter) Closed(a rooms.Addr, s rooms.Socket, code int, reason string) {
	r.add(s.ID(), fmt.Sprintf("closed %d", code))
}

func (r *recordingRouter) Attach(rooms.Sockets) {}

func (r *recordingRouter) snapshot() map[rooms.SocketID][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[rooms.SocketID][]string{}
	for id, e := range r.events {
		out[id] = append([]string(nil), e...)
	}
	return out
}

// TestRouterSeesConnectMessagesClosedOnce opens sockets that end in every
// way and checks each got Connect first, then its messages, then Closed
// exactly once, with the code that ended it.
func TestRouterSeesConnectMessagesClosedOnce(t *testing.T) {
	rr := newRecordingRouter()
	ts := startServer(t, Options{Router: rr, CloseTimeout: 200 * time.Millisecond})
	want := map[string]bool{}
	// Closes normally.
	c := dial(t, ts, "/ws/echo/a")
	wsutil.WriteClientText(c, []byte("1"))
	testkit.ReadData(t, c)
	ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, ""))))
	testkit.ExpectEOF(t, c)
	want["connect,message,closed 1000"] = true
	// Drops the connection.
	c = dial(t, ts, "/ws/echo/b")
	wsutil.WriteClientText(c, []byte("2"))
	testkit.ReadData(t, c)
	c.Close()
	want["connect,message,closed 1006"] = true
	// Breaks the protocol.
	c = dial(t, ts, "/ws/echo/c")
	c.Write(rawFrame(ws.Header{Fin: true, OpCode: ws.OpText, Length: 1}, []byte("x")))
	testkit.ExpectClose(t, c, 1002)
	want["connect,closed 1002"] = true
	// Refused by the room: Connect, and never Closed.
	c = dial(t, ts, "/ws/echo/refuse")
	testkit.ExpectClose(t, c, 4403)
	want["connect"] = true

	testkit.Eventually(t, 5*time.Second, func() error {
		if n := ts.openCount.Load(); n != 0 {
			return fmt.Errorf("%d sockets still open", n)
		}
		return nil
	})
	got := map[string]bool{}
	for _, e := range rr.snapshot() {
		got[strings.Join(e, ",")] = true
	}
	for w := range want {
		if !got[w] {
			t.Errorf("no socket saw %q; got %v", w, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got sequences %v, want %v", got, want)
	}
}

func TestClientCloseCodesFromTheRegistryAreAccepted(t *testing.T) {
	ts := startServer(t, Options{})
	for _, code := range []int{1000, 1001, 1003, 1011, 1012, 1013, 1014, 3000, 4999} {
		before := ts.badInput("protocol")
		c := dial(t, ts, "/ws/echo/codes")
		ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), "bye"))))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := ws.ReadFrame(c)
		if err != nil {
			t.Fatalf("code %d: %v", code, err)
		}
		if got, _ := ws.ParseCloseFrameData(f.Payload); int(got) != code {
			t.Errorf("client closed with %d, server answered %d", code, got)
		}
		if ts.badInput("protocol") != before {
			t.Errorf("close code %d counted as a protocol error", code)
		}
	}
}

func TestOversizedHandshakeIsCut(t *testing.T) {
	ts := startServer(t, Options{})
	before := ts.badInput("handshake")
	c, err := net.Dial("tcp", ts.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		c.Write([]byte("GET /ws/echo/x?"))
		chunk := []byte(strings.Repeat("a", 64<<10))
		for range 64 { // 4 MiB of request line, far past the 16 KiB bound
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	testkit.ExpectEOF(t, c)
	testkit.Eventually(t, 5*time.Second, func() error {
		if ts.badInput("handshake") != before+1 {
			return fmt.Errorf("oversized handshake not counted")
		}
		return nil
	})
	echoWorks(t, ts)
}

// A client streaming messages whose writes never end on a frame boundary
// (each write the end of one frame and the start of the next) keeps
// finishing messages, and is not cut off as if it had stalled.
func TestStreamingAcrossFrameBoundariesIsNotAStall(t *testing.T) {
	ts := startServer(t, Options{MessageTimeout: 300 * time.Millisecond})
	c := dial(t, ts, "/ws/echo/stream")
	const n = 200 // 5 ms apart: a second, three timeouts
	var stream []byte
	for i := range n {
		stream = append(stream, masked(ws.OpText, true, []byte(fmt.Sprintf("message %03d", i)))...)
	}
	done := make(chan error, 1)
	go func() {
		// Every write but the last ends half-way into a frame.
		frame := len(stream) / n
		for from := 0; from < len(stream); {
			to := min(from+frame, len(stream))
			if from == 0 {
				to = frame / 2
			}
			if _, err := c.Write(stream[from:to]); err != nil {
				done <- err
				return
			}
			from = to
			// Pacing, not synchronizing: the stream must outlast several
			// MessageTimeouts for the test to mean anything.
			time.Sleep(5 * time.Millisecond)
		}
		done <- nil
	}()
	for i := range n {
		got, _, err := testkit.ReadData(t, c)
		if want := fmt.Sprintf("message %03d", i); err != nil || string(got) != want {
			t.Fatalf("echo %d: %q %v; want %q", i, got, err, want)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ts.badInput("incomplete") != 0 {
		t.Fatal("a socket that kept finishing messages was counted as incomplete")
	}
}

func TestIncompleteMessageTimesOut(t *testing.T) {
	ts := startServer(t, Options{MessageTimeout: 300 * time.Millisecond})
	for _, tc := range []struct {
		name  string
		bytes []byte
	}{
		{"half a header", []byte{0x82}},
		{"half a payload", masked(ws.OpBinary, true, make([]byte, 1000))[:500]},
		{"a fragmented message never finished", masked(ws.OpText, false, []byte("start"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.badInput("incomplete")
			c := dial(t, ts, "/ws/echo/stall")
			c.Write(tc.bytes)
			testkit.ExpectClose(t, c, 1008)
			if ts.badInput("incomplete") != before+1 {
				t.Errorf("roomgate_bad_input_total{kind=incomplete} did not grow")
			}
		})
	}
	// A slow message that does finish in time is fine.
	c := dial(t, ts, "/ws/echo/slow-ok")
	frame := masked(ws.OpText, true, []byte("slowly"))
	c.Write(frame[:3])
	time.Sleep(100 * time.Millisecond) // the message is slow on purpose: a third of the timeout passes mid-frame
	c.Write(frame[3:])
	if got, _, err := testkit.ReadData(t, c); err != nil || string(got) != "slowly" {
		t.Fatalf("got %q %v", got, err)
	}
}

// TestRefusalsAgreeOnBothPaths sends the same bad requests on a fresh
// connection (the zero-copy path) and after a request on a kept-alive one
// (net/http and chi): the status and JSON code must be the same.
func TestRefusalsAgreeOnBothPaths(t *testing.T) {
	ts := startServer(t, Options{})
	upgrade := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	for _, tc := range []struct {
		name, request string
		status        int
		code          string
	}{
		{"unknown class without upgrade headers", "GET /ws/nope/x HTTP/1.1\r\nHost: x\r\n\r\n", 404, "unknown_class"},
		{"known class without upgrade headers", "GET /ws/echo/x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_handshake"},
		{"unsupported version", "GET /ws/echo/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 426, "bad_handshake"},
		{"bad name", "GET /ws/echo/a%20b HTTP/1.1\r\nHost: x\r\n" + upgrade + "\r\n", 400, "bad_name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, keepAlive := range []bool{false, true} {
				c, err := net.Dial("tcp", ts.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(c)
				if keepAlive {
					fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
				}
				c.Write([]byte(tc.request))
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("keep-alive %v: %v", keepAlive, err)
				}
				var body struct{ Error struct{ Code string } }
				json.NewDecoder(resp.Body).Decode(&body)
				if resp.StatusCode != tc.status || body.Error.Code != tc.code || resp.Header.Get("Content-Type") != "application/json" {
					t.Errorf("keep-alive %v: %d %q %q, want %d %q application/json", keepAlive, resp.StatusCode, body.Error.Code, resp.Header.Get("Content-Type"), tc.status, tc.code)
				}
				c.Close()
			}
		})
	}
}

func TestSendRefusesControlOpcodesAndBadCloseCodes(t *testing.T) {
	got := make(chan *socket, 1)
	ts := startServer(t, Options{Router: captureRouter{got: got}})
	c := dial(t, ts, "/ws/echo/ops")
	sk := <-got
	for _, op := range []rooms.Opcode{0, 8, 9, 10} {
		if err := sk.Send(rooms.Frame{Op: op, Data: []byte("x")}); !errors.Is(err, rooms.ErrOpcode) {
			t.Errorf("Send with opcode %d: %v, want ErrOpcode", op, err)
		}
	}
	sk.Close(1005, "\xffbad reason") // 1005 may not go on the wire
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := ws.ReadFrame(c)
	if err != nil {
		t.Fatal(err)
	}
	if code := binary.BigEndian.Uint16(f.Payload); f.Header.OpCode != ws.OpClose || code != 1011 || string(f.Payload[2:]) != "bad reason" {
		t.Fatalf("got %v %d %q, want close 1011 with a valid reason", f.Header.OpCode, code, f.Payload[2:])
	}
}

// TestDrainIsBoundedWhenARoomHangs has a room that never answers: Run must
// still return soon after DrainTimeout, cancelling the room's call.
func TestDrainIsBoundedWhenARoomHangs(t *testing.T) {
	rr := newRecordingRouter()
	rr.block = make(chan struct{}) // never closed
	ts := startServer(t, Options{Router: rr, DrainTimeout: 300 * time.Millisecond})
	c := dial(t, ts, "/ws/echo/hang")
	wsutil.WriteClientText(c, []byte("stuck"))
	testkit.Eventually(t, 5*time.Second, func() error {
		for _, e := range rr.snapshot() {
			if len(e) >= 2 {
				return nil
			}
		}
		return errors.New("message not delivered yet")
	})
	start := time.Now()
	ts.stop(t)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run took %v to return with a 300ms drain timeout", d)
	}
}
