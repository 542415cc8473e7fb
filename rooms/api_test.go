package rooms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// closeInfos is a class that hands every OnClose's info to the test.
type closeInfos struct {
	probe
	infos chan CloseInfo
}

func (h *closeInfos) OnClose(ctx context.Context, r *Room, c *Conn, info CloseInfo) error {
	h.infos <- info
	return nil
}

// OnClose hears whether a close frame ended the socket: a client's close
// is clean, a dropped connection (reported as 1006) is not.
func TestOnCloseSaysWhetherTheCloseWasClean(t *testing.T) {
	fx := newFixture(t, Options{}, nil)
	infos := make(chan CloseInfo, 2)
	fx.rt.Register("ci", func() Handler { return &closeInfos{probe{starts: new(atomic.Int32)}, infos} })
	a := Addr{Class: "ci", Room: "r"}
	for _, want := range []CloseInfo{
		{Code: 1000, Reason: "bye", Clean: true},
		{Code: 1006, Reason: "connection lost", Clean: false},
	} {
		s := newSocket()
		if err := fx.rt.Connect(context.Background(), a, s, ConnectInfo{}); err != nil {
			t.Fatal(err)
		}
		fx.rt.Closed(a, s, want.Code, want.Reason)
		select {
		case got := <-infos:
			if got != want {
				t.Errorf("OnClose got %+v, want %+v", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("OnClose did not run for %+v", want)
		}
	}
}

// Classes with an On… method the runtime would never call.
type (
	misspeltClose struct{ probe }
	oldClose      struct{ probe }
	valueClass    struct{}
	unknownOn     struct{ probe }
)

func (*misspeltClose) OnClsoe(ctx context.Context, r *Room, c *Conn, info CloseInfo) error {
	return nil
}

func (*oldClose) OnClose(ctx context.Context, r *Room, c *Conn, code int, reason string) error {
	return nil
}

func (valueClass) OnMessage(context.Context, *Room, *Conn, Frame) error { return nil }
func (*valueClass) OnClose(context.Context, *Room, *Conn, CloseInfo) error {
	return nil
}

func (*unknownOn) OnTick() {}

// A class whose On… method would be silently ignored is refused: by
// Register when the name is a handler's (a wrong signature, a pointer
// method of a value class), and by CheckClass, which a class's tests run,
// for any On… name (a misspelling). The messages name what to fix.
func TestOnMethodsThatMatchNoHandlerAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name     string
		new      func() Handler
		register bool     // Register refuses it too
		want     []string // in the message
	}{
		{"misspelt OnClose", func() Handler { return &misspeltClose{} }, false, []string{"OnClsoe", "rooms.CloseHandler", "OnClose"}},
		{"OnClose with the old signature", func() Handler { return &oldClose{} }, true,
			[]string{"OnClose(context.Context, *rooms.Room, *rooms.Conn, int, string) error", "rooms.CloseHandler",
				"OnClose(context.Context, *rooms.Room, *rooms.Conn, rooms.CloseInfo) error"}},
		{"pointer method of a value class", func() Handler { return valueClass{} }, true, []string{"OnClose", "pointer receiver", "*rooms.valueClass"}},
		{"no such handler", func() Handler { return &unknownOn{} }, false, []string{"OnTick", "matches no handler interface", "OnStart, OnConnect"}},
		{"nil handler", func() Handler { return nil }, true, []string{"returned nil"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mention := func(what, got string) {
				for _, w := range tc.want {
					if !strings.Contains(got, w) {
						t.Errorf("%s said %q, want it to mention %q", what, got, w)
					}
				}
			}
			err := CheckClass(tc.new)
			if err == nil {
				t.Fatal("CheckClass accepted it")
			}
			mention("CheckClass", err.Error())
			if !tc.register {
				return
			}
			rt := newFixture(t, Options{}, nil).rt
			got := func() (msg string) {
				defer func() { msg = fmt.Sprint(recover()) }()
				rt.Register("bad", tc.new)
				return ""
			}()
			mention("Register's panic", got)
			if rt.HasClass("bad") {
				t.Error("the class was registered")
			}
		})
	}
	// newFixture registered probe, and this class has every other handler.
	if err := CheckClass(func() Handler { return &everyHandler{} }); err != nil {
		t.Errorf("CheckClass refused a class with every handler: %v", err)
	}
	newFixture(t, Options{}, nil).rt.Register("fine", func() Handler { return &everyHandler{} })
}

type everyHandler struct{ closeInfos }

func (*everyHandler) OnConnect(context.Context, *Room, *Conn) error   { return nil }
func (*everyHandler) OnAlarm(context.Context, *Room, AlarmInfo) error { return nil }
func (*everyHandler) OnRequest(context.Context, *Room, http.ResponseWriter, *http.Request) error {
	return nil
}

// A send from outside a handler, like a write, belongs to no event: it is
// refused with the exported ErrOutsideEvent, so a class can test for it.
func TestSendsOutsideAnEventAreRefused(t *testing.T) {
	var kept *Room
	var keptConn *Conn
	fx := newFixture(t, Options{}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		kept, keptConn = r, c
		return c.SendText("kept")
	})
	s := fx.connect(t)
	fx.say(t, s, "keep")
	s.next(t) // sent after the event ended
	for name, err := range map[string]error{
		"Conn.Send":          keptConn.Send(Frame{Op: Text, Data: []byte("x")}),
		"Conn.SendText":      keptConn.SendText("x"),
		"Conn.SendJSON":      keptConn.SendJSON("x"),
		"Conn.Close":         keptConn.Close(4000, "x"),
		"Conn.SetAttachment": keptConn.SetAttachment([]byte("x")),
		"Room.Broadcast":     kept.Broadcast(Frame{Op: Text, Data: []byte("x")}),
		"Room.BroadcastText": kept.BroadcastText("x"),
		"Room.BroadcastJSON": kept.BroadcastJSON("x"),
	} {
		if !errors.Is(err, ErrOutsideEvent) {
			t.Errorf("%s outside an event: %v, want ErrOutsideEvent", name, err)
		}
	}
}

// strict is a class that closes a socket for bad input: it writes, counts,
// sets every socket's attachment and broadcasts first, so the test can see
// that the event committed.
type strict struct {
	starts *atomic.Int32
	n      int // in memory only: lost if the instance is rebuilt
}

func (h *strict) OnStart(ctx context.Context, r *Room) error {
	h.starts.Add(1)
	return nil
}

func (h *strict) OnMessage(ctx context.Context, r *Room, c *Conn, f Frame) error {
	msg := string(f.Data)
	if msg == "count" {
		return c.SendText(fmt.Sprintf("n=%d starts=%d att=%s", h.n, h.starts.Load(), c.Attachment()))
	}
	h.n++
	if err := r.Storage().Put(msg, []byte("v")); err != nil {
		return err
	}
	for _, o := range r.Conns("") {
		if err := o.SetAttachment([]byte(msg)); err != nil {
			return err
		}
	}
	if err := r.Broadcast(Frame{Op: Text, Data: []byte(msg)}); err != nil {
		return err
	}
	switch msg {
	case "bad":
		return &CloseError{Code: 4000, Reason: "bad input"}
	case "bad, wrapped":
		return fmt.Errorf("parse: %w", &CloseError{Code: 4001, Reason: "worse input"})
	}
	return errors.New("failed")
}

// A *CloseError from OnMessage closes only its socket, after the event's
// writes and sends have committed, and leaves the instance as it is; a
// plain error still fails the event and rebuilds the instance.
func TestCloseErrorFromOnMessageCommitsAndKeepsTheInstance(t *testing.T) {
	fx := newFixture(t, Options{}, nil)
	starts := new(atomic.Int32)
	fx.rt.Register("strict", func() Handler { return &strict{starts: starts} })
	a := Addr{Class: "strict", Room: "r"}
	connect := func() *testSocket {
		s := newSocket()
		if err := fx.rt.Connect(context.Background(), a, s, ConnectInfo{}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	say := func(s *testSocket, msg string) {
		if err := fx.rt.Message(context.Background(), a, s, Frame{Op: Text, Data: []byte(msg)}); err != nil {
			t.Fatal(err)
		}
	}
	stored := func(key string) bool {
		kvs, err := fx.rt.Storage(context.Background(), a, key, 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(kvs) == 1
	}
	other := connect()
	for i, tc := range []struct{ msg, closed string }{
		{"bad", "closed 4000 bad input"},
		{"bad, wrapped", "closed 4001 worse input"},
	} {
		s := connect()
		say(s, tc.msg)
		if got := other.next(t); got != tc.msg {
			t.Fatalf("%s: the other socket got %q, want the broadcast", tc.msg, got)
		}
		if got := s.next(t); got != tc.msg {
			t.Fatalf("%s: the offender got %q, want the broadcast before its close", tc.msg, got)
		}
		if got := s.next(t); got != tc.closed {
			t.Fatalf("%s: the offender got %q, want %q", tc.msg, got, tc.closed)
		}
		if !stored(tc.msg) {
			t.Fatalf("%s: the event's write was not committed", tc.msg)
		}
		say(other, "count")
		if got, want := other.next(t), fmt.Sprintf("n=%d starts=1 att=%s", i+1, tc.msg); got != want {
			t.Fatalf("%s: %q, want %q: the instance kept, the attachment set", tc.msg, got, want)
		}
	}
	if other.code != 0 {
		t.Fatalf("the other socket was closed: %d", other.code)
	}
	if n := testutil.ToFloat64(fx.rt.m.failures.WithLabelValues("handler")); n != 0 {
		t.Errorf("handler failures counted %v, want 0", n)
	}

	s := connect()
	say(s, "plain")
	if got := s.next(t); got != "closed 1011 room handler failed" {
		t.Fatalf("a plain error: the sender got %q, want a 1011 close and no broadcast", got)
	}
	say(other, "count")
	if got, want := other.next(t), "n=0 starts=2 att=bad, wrapped"; got != want {
		t.Fatalf("after a plain error: %q, want %q: the broadcast and attachment dropped, the instance rebuilt", got, want)
	}
	if stored("plain") {
		t.Fatal("a failed event's write was committed")
	}
}

// Admin's Broadcast may give up waiting (its ctx ends) while the room
// still holds the broadcast in its queue. The caller may then reuse its
// buffer, as Frame allows: the sockets must still get what it sent.
func TestAdminBroadcastKeepsACopyOfData(t *testing.T) {
	release := make(chan struct{})
	fx := newFixture(t, Options{}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		<-release // holds the room, so the broadcast waits in its queue
		return nil
	})
	s := fx.connect(t)
	fx.say(t, s, "block")
	buf := []byte("original")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := fx.rt.Broadcast(ctx, probeRoom, "", Frame{Op: Text, Data: buf}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Broadcast to a busy room: %v, want it to give up with its ctx", err)
	}
	copy(buf, "REUSED!!")
	close(release)
	if got := s.next(t); got != "original" {
		t.Fatalf("the socket got %q, want %q", got, "original")
	}
}

// BroadcastText sends a text message to every socket but the excepted,
// once the event commits, like Broadcast.
func TestBroadcastText(t *testing.T) {
	fx := newFixture(t, Options{}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		if err := r.Storage().Put("k", []byte(msg)); err != nil {
			return err
		}
		return r.BroadcastText("said "+msg, c.ID())
	})
	sender, a, b := fx.connect(t), fx.connect(t), fx.connect(t)
	fx.say(t, sender, "hi")
	for _, s := range []*testSocket{a, b} {
		if got := s.next(t); got != "said hi" {
			t.Fatalf("socket %d got %q, want %q", s.id, got, "said hi")
		}
	}
	fx.say(t, a, "again")
	if got := sender.next(t); got != "said again" {
		t.Fatalf("the first sender got %q, want only the second broadcast", got)
	}
	if kvs, _ := fx.rt.Storage(context.Background(), probeRoom, "k", 0); len(kvs) != 1 || string(kvs[0].Value) != "again" {
		t.Fatalf("stored %v, want the write committed before the send", kvs)
	}
}
