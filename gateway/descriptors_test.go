package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/roomgate/roomgate/internal/testkit"
)

// TestDescriptorReserve moves the line to 40 descriptors above what the
// process holds, then opens sockets past it: they get 503 node_full, while
// /healthz and /metrics answer, on connections closed after the answer,
// pages do not, and idle keep-alive connections are closed. Once sockets
// close, sockets open again.
func TestDescriptorReserve(t *testing.T) {
	ts := startServer(t, Options{})
	idle, idleReader := keptAlive(t, ts)
	n, err := countFDs(make([]byte, 16<<10))
	if err != nil {
		t.Fatal(err)
	}
	ts.limits.fds.soft.Store(n + 40)
	var conns []net.Conn
	for len(conns) < 60 { // each socket is two descriptors: ours and the server's
		c, err := dialFromErr(t, ts, attacker, "/ws/echo/many")
		if err != nil {
			if err != ws.StatusError(http.StatusServiceUnavailable) {
				t.Fatalf("socket %d: %v, want 503", len(conns), err)
			}
			break
		}
		defer c.Close()
		conns = append(conns, c)
	}
	t.Logf("%d sockets opened before the line", len(conns))
	if len(conns) == 60 {
		t.Fatal("60 sockets opened past a line 40 descriptors away")
	}
	if resp, code := upgradeFrom(t, ts, attacker, "/ws/echo/many"); resp.StatusCode != http.StatusServiceUnavailable || code != "node_full" {
		t.Errorf("socket past the line: %d %q, want 503 node_full", resp.StatusCode, code)
	}
	// A census confirms the line at most every 50 ms, and only when a
	// request asks: health checks ask here.
	testkit.Eventually(t, 5*time.Second, func() error {
		httpGet(t, ts.http+"/healthz")
		idle.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := idleReader.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("the idle keep-alive connection is still open (%v)", err)
		}
		return nil
	})
	if got := ts.limited("descriptors"); got < 2 {
		t.Errorf("roomgate_limited_total{kind=descriptors} = %v, want at least 2", got)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, _ := httpGet(t, ts.http+path)
		if resp.StatusCode != http.StatusOK || !resp.Close {
			t.Errorf("%s past the line: %d, close %v; want 200 on a connection that closes", path, resp.StatusCode, resp.Close)
		}
	}
	if resp, _ := httpGet(t, ts.http+"/chat/"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a page past the line: %d, want 503", resp.StatusCode)
	}
	for _, c := range conns {
		c.Close()
	}
	testkit.Eventually(t, 5*time.Second, func() error {
		c, err := dialFromErr(t, ts, attacker, "/ws/echo/many")
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
}

func TestIdleKeepAliveIsClosed(t *testing.T) {
	ts := startServer(t, Options{Limits: Limits{HTTPIdleTimeout: 200 * time.Millisecond}})
	c, br := keptAlive(t, ts)
	start := time.Now()
	testkit.ExpectEOF(t, &readerConn{Conn: c, r: br})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("idle keep-alive connection closed after %v, want about 200 ms", d)
	}
}
