package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/internal/testkit"
)

func TestLimitFlagsAreValidated(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"negative sockets per IP", []string{"-max-conns-per-ip", "-1"}, nil, "-max-conns-per-ip"},
		{"negative handshake rate", []string{"-handshakes-per-ip", "-2"}, nil, "-handshakes-per-ip"},
		{"message rate not a number", []string{"-messages-per-second", "NaN"}, nil, "-messages-per-second"},
		{"infinite REST rate", []string{"-rest-per-second", "+Inf"}, nil, "-rest-per-second"},
		{"no pending handshakes at all", nil, []string{"ROOMGATE_MAX_PENDING_HANDSHAKES_PER_IP=0"}, "-max-pending-handshakes-per-ip"},
		{"rooms of no sockets", []string{"-max-sockets-per-room", "0"}, nil, "-max-sockets-per-room"},
		{"a reserve of every descriptor", []string{"-fd-reserve", "1000000000"}, nil, "-fd-reserve"},
		{"a prefix too long", []string{"-trusted-proxies", "10.0.0.0/8,10.0.0.0/33"}, nil, "-trusted-proxies"},
		{"a proxy by name", nil, []string{"ROOMGATE_TRUSTED_PROXIES=proxy.internal"}, "-trusted-proxies"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			cmd.Dir = t.TempDir()
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("got %v and %q, want a failure naming %q", err, out, tc.want)
			}
		})
	}
}

// TestLimitFlagsReachTheGateway sets limits by flag and by environment
// and meets each refusal from outside the process.
func TestLimitFlagsReachTheGateway(t *testing.T) {
	addr := testkit.FreeAddr(t)
	start(t, addr, []string{"ROOMGATE_MAX_CONNS_PER_IP=2", "ROOMGATE_MESSAGES_PER_SECOND=5"},
		"-addr", addr, "-data", t.TempDir(), "-max-sockets-per-room", "1", "-trusted-proxies", "10.0.0.0/8, 192.0.2.1")
	dial := func(path string) error {
		c, err := testkit.DialContext(context.Background(), "ws://"+addr+path)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return err
	}
	first := testkit.Dial(t, "ws://"+addr+"/ws/echo/one")
	// The 101 comes before the room has the socket; its echo, after.
	wsutil.WriteClientText(first, []byte("in?"))
	if got, err := wsutil.ReadServerText(first); err != nil || string(got) != "in?" {
		t.Fatalf("echo: %q %v", got, err)
	}
	if err := dial("/ws/echo/one"); err != ws.StatusError(http.StatusServiceUnavailable) {
		t.Errorf("2nd socket with -max-sockets-per-room 1: %v, want 503", err)
	}
	if err := dial("/ws/echo/two"); err != nil {
		t.Fatalf("socket in another room: %v", err)
	}
	if err := dial("/ws/echo/three"); err != ws.StatusError(http.StatusTooManyRequests) {
		t.Errorf("3rd socket with ROOMGATE_MAX_CONNS_PER_IP=2: %v, want 429", err)
	}
	for range 30 {
		wsutil.WriteClientText(first, []byte("x"))
	}
	testkit.ExpectClose(t, first, 1008)

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`roomgate_limited_total{kind="room_full"} 1`,
		`roomgate_limited_total{kind="conns_per_ip"} 1`,
		`roomgate_limited_total{kind="messages"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
