package testkit

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// TestDialReadAndClose runs a server that greets with the 101, echoes one
// message and closes with 1012, a code gobwas/ws's client helpers refuse.
func TestDialReadAndClose(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		defer c.Close()
		wsutil.WriteServerText(c, []byte("hello"))
		msg, op, err := wsutil.ReadClientData(c)
		if err != nil {
			return
		}
		wsutil.WriteServerMessage(c, op, msg)
		ws.WriteFrame(c, ws.NewCloseFrame(ws.NewCloseFrameBody(1012, "restart")))
		ws.ReadFrame(c) // the client's answer
	}))
	defer srv.Close()
	c := Dial(t, "ws"+strings.TrimPrefix(srv.URL, "http")+"/x")
	if got, _, err := ReadData(t, c); err != nil || string(got) != "hello" {
		t.Fatalf("greeting %q, %v", got, err)
	}
	wsutil.WriteClientText(c, []byte("echo"))
	if got, op, err := ReadData(t, c); err != nil || op != ws.OpText || string(got) != "echo" {
		t.Fatalf("echo %v %q, %v", op, got, err)
	}
	ExpectClose(t, c, 1012)
	ExpectEOF(t, c)
}

func TestFreeAddr(t *testing.T) {
	addr := FreeAddr(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
		t.Fatalf("FreeAddr = %q, want a loopback address with a port", addr)
	}
	if p := FreePort(t); p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d", p)
	}
}
