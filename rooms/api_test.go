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

// Register refuses a class whose On… method would be silently ignored,
// naming the method and the interface it should match.
func TestRegisterRefusesAnOnMethodThatMatchesNoHandler(t *testing.T) {
	for _, tc := range []struct {
		name string
		new  func() Handler
		want []string // in the panic's message
	}{
		{"misspelt OnClose", func() Handler { return &misspeltClose{} }, []string{"OnClsoe", "rooms.CloseHandler", "OnClose"}},
		{"OnClose with the old signature", func() Handler { return &oldClose{} },
			[]string{"OnClose(context.Context, *rooms.Room, *rooms.Conn, int, string) error", "rooms.CloseHandler",
				"OnClose(context.Context, *rooms.Room, *rooms.Conn, rooms.CloseInfo) error"}},
		{"pointer method of a value class", func() Handler { return valueClass{} }, []string{"OnClose", "pointer receiver", "*rooms.valueClass"}},
		{"no such handler", func() Handler { return &unknownOn{} }, []string{"OnTick", "matches no handler interface", "OnStart, OnConnect"}},
		{"nil handler", func() Handler { return nil }, []string{"returned nil"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newFixture(t, Options{}, nil).rt
			got := func() (msg string) {
				defer func() { msg = fmt.Sprint(recover()) }()
				rt.Register("bad", tc.new)
				return ""
			}()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("Register panicked with %q, want it to mention %q", got, w)
				}
			}
			if rt.HasClass("bad") {
				t.Error("the class was registered")
			}
		})
	}
	// newFixture registered probe, and this class has every other handler.
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
		"Room.BroadcastJSON": kept.BroadcastJSON("x"),
	} {
		if !errors.Is(err, ErrOutsideEvent) {
			t.Errorf("%s outside an event: %v, want ErrOutsideEvent", name, err)
		}
	}
}
