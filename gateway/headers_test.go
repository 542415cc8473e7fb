package gateway

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roomgate/roomgate/internal/testkit"
)

// TestHeadersOverTheLimitGet431: on both paths, a request whose line and
// headers pass 16 KiB is answered 431, not cut off.
func TestHeadersOverTheLimitGet431(t *testing.T) {
	ts := startServer(t, Options{})
	big := "Cookie: " + strings.Repeat("c", 24<<10)
	before := ts.badInput("handshake")
	resp, code := upgradeFrom(t, ts, attacker, "/ws/echo/big", big)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || code != "header_too_large" {
		t.Errorf("upgrade with 24 KiB of headers: %d %q, want 431 header_too_large", resp.StatusCode, code)
	}
	c, err := net.Dial("tcp", ts.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: roomgate\r\n%s\r\n\r\n", big)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp2, err := http.ReadResponse(bufio.NewReader(c), nil)
	c.Close()
	if err != nil || resp2.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("plain request with 24 KiB of headers: %v, %v; want 431", resp2, err)
	}
	testkit.Eventually(t, 5*time.Second, func() error {
		if got := ts.badInput("handshake") - before; got != 2 {
			return fmt.Errorf("roomgate_bad_input_total{kind=handshake} grew by %v, want 2", got)
		}
		return nil
	})
	echoWorks(t, ts)
}

func TestTwoOriginsAreRefused(t *testing.T) {
	ts := startServer(t, Options{AllowedOrigins: []string{"https://app.example"}})
	// The last one is allowed: a gateway where the last wins would let it in.
	resp, code := upgradeFrom(t, ts, attacker, "/ws/echo/o", "Origin: https://evil.example", "Origin: https://app.example")
	if resp.StatusCode != http.StatusBadRequest || code != "bad_handshake" {
		t.Errorf("two Origins on the upgrade path: %d %q, want 400 bad_handshake", resp.StatusCode, code)
	}
	// The chi path: a connection that served a plain request first.
	c, br := keptAlive(t, ts)
	fmt.Fprintf(c, "GET /ws/echo/o HTTP/1.1\r\nHost: roomgate\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
		"Origin: https://evil.example\r\nOrigin: https://app.example\r\n\r\n")
	r, err := http.ReadResponse(br, nil)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if code := errorCode(t, r); r.StatusCode != http.StatusBadRequest || code != "bad_handshake" {
		t.Errorf("two Origins on the chi path: %d %q, want 400 bad_handshake", r.StatusCode, code)
	}
	if got := ts.badInput("origin"); got != 2 {
		t.Errorf("roomgate_bad_input_total{kind=origin} = %v, want 2", got)
	}
}
