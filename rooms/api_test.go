package rooms

import (
	"context"
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
