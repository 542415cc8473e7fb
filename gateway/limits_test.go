package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

// The flood tests play an attacker on 127.0.0.1 and a well-behaved client
// on 127.0.0.2: limits are per address, so the second must not notice the
// first. Caps are scaled down from production so that the floods stay
// within the race detector's goroutines and the process's descriptors.
const (
	attacker = "127.0.0.1"
	neighbor = "127.0.0.2"
)

func (ts *testServer) limited(kind string) float64 {
	return testutil.ToFloat64(ts.limits.limited.WithLabelValues(kind))
}

func fromIP(ip string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
}

// dialFrom opens a WebSocket to path from the loopback address ip, closed
// when the test ends.
func dialFrom(tb testing.TB, ts *testServer, ip, path string) net.Conn {
	tb.Helper()
	c, err := dialFromErr(tb, ts, ip, path)
	if err != nil {
		tb.Fatalf("dial %s from %s: %v", path, ip, err)
	}
	return c
}

// dialFromErr is dialFrom for a dial that may be refused; a socket that
// opens is closed when the test ends.
func dialFromErr(tb testing.TB, ts *testServer, ip, path string) (net.Conn, error) {
	d := ws.Dialer{NetDial: fromIP(ip).DialContext, Timeout: 5 * time.Second}
	c, br, _, err := d.Dial(context.Background(), ts.url+path)
	if err != nil {
		return nil, err
	}
	tb.Cleanup(func() { c.Close() })
	if br != nil {
		return &readerConn{Conn: c, r: br}, nil
	}
	return c, nil
}

type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// upgradeFrom sends a WebSocket upgrade for path from ip, with extra
// header lines, and returns the answer and its JSON error code, if any.
// A 101's socket stays open until the test ends; anything else is closed.
func upgradeFrom(tb testing.TB, ts *testServer, ip, path string, extra ...string) (*http.Response, string) {
	tb.Helper()
	c, err := fromIP(ip).Dial("tcp", ts.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	var hdr strings.Builder
	for _, h := range extra {
		hdr.WriteString(h + "\r\n")
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: roomgate\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n", path, hdr.String())
	return readAnswer(tb, c)
}

func readAnswer(tb testing.TB, c net.Conn) (*http.Response, string) {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		tb.Fatalf("no HTTP answer: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		tb.Cleanup(func() { c.Close() })
		return resp, ""
	}
	defer c.Close()
	return resp, errorCode(tb, resp)
}

// neighborProbe is a socket from 127.0.0.2 echoing while a test floods
// from another address.
type neighborProbe struct {
	trips atomic.Int64 // round trips made so far
	stop  func() (median, worst time.Duration)
}

// neighborEcho keeps a socket from 127.0.0.2 echoing, one round trip every
// 10 ms, until its stop is called; stop returns the round trips' median
// and maximum. The median is what the test holds under 50 ms: on a
// machine shared with other test runs a single round trip can wait for a
// CPU, whatever the gateway does.
func neighborEcho(t *testing.T, ts *testServer) *neighborProbe {
	t.Helper()
	c := dialFrom(t, ts, neighbor, "/ws/echo/neighbor")
	nb := &neighborProbe{}
	stop := make(chan struct{})
	done := make(chan []time.Duration)
	go func() {
		var rtts []time.Duration
		defer func() { done <- rtts }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			start := time.Now()
			if err := wsutil.WriteClientText(c, []byte("hello")); err != nil {
				t.Errorf("neighbor write: %v", err)
				return
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, err := wsutil.ReadServerText(c); err != nil || string(got) != "hello" {
				t.Errorf("neighbor echo: %q, %v", got, err)
				return
			}
			rtts = append(rtts, time.Since(start))
			nb.trips.Add(1)
		}
	}()
	nb.stop = func() (time.Duration, time.Duration) {
		close(stop)
		rtts := <-done
		if len(rtts) == 0 {
			t.Fatal("the neighbor made no round trip")
		}
		slices.Sort(rtts)
		return rtts[len(rtts)/2], rtts[len(rtts)-1]
	}
	return nb
}

func checkNeighbor(t *testing.T, nb *neighborProbe) {
	t.Helper()
	median, worst := nb.stop()
	t.Logf("neighbor on %s: echo median %v, worst %v", neighbor, median, worst)
	if median > 50*time.Millisecond {
		t.Errorf("neighbor's echo median = %v during the flood, want under 50 ms", median)
	}
}

func TestMaxConnsPerIP(t *testing.T) {
	ts := startServer(t, Options{Limits: Limits{MaxConnsPerIP: 5}})
	var conns []net.Conn
	for range 5 {
		conns = append(conns, dialFrom(t, ts, attacker, "/ws/echo/a"))
	}
	resp, code := upgradeFrom(t, ts, attacker, "/ws/echo/b")
	if resp.StatusCode != http.StatusTooManyRequests || code != "too_many_sockets" {
		t.Fatalf("6th socket from one address: %d %q, want 429 too_many_sockets", resp.StatusCode, code)
	}
	if got := ts.limited("conns_per_ip"); got != 1 {
		t.Errorf("roomgate_limited_total{kind=conns_per_ip} = %v, want 1", got)
	}
	dialFrom(t, ts, neighbor, "/ws/echo/a") // another address has its own count
	// A socket that closes gives its place back.
	conns[0].Close()
	testkit.Eventually(t, 5*time.Second, func() error {
		c, err := dialFromErr(t, ts, attacker, "/ws/echo/a")
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
}

// TestManySocketsFromOneIP: an address opening sockets far past its cap
// gets exactly the cap, and a neighbor's echo does not notice.
func TestManySocketsFromOneIP(t *testing.T) {
	const cap, tries = 50, 300
	ts := startServer(t, Options{Limits: Limits{MaxConnsPerIP: cap}})
	nb := neighborEcho(t, ts)
	var opened, refused atomic.Int32
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < tries; i += 8 {
				c, err := dialFromErr(t, ts, attacker, "/ws/echo/flood-"+strconv.Itoa(i%10))
				if err != nil {
					if err != ws.StatusError(http.StatusTooManyRequests) {
						t.Errorf("socket %d: %v, want 429", i, err)
					}
					refused.Add(1)
					continue
				}
				opened.Add(1)
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	checkNeighbor(t, nb)
	for _, c := range conns {
		c.Close()
	}
	if opened.Load() != cap || refused.Load() != tries-cap {
		t.Errorf("opened %d and refused %d of %d, want %d opened", opened.Load(), refused.Load(), tries, cap)
	}
	if got := ts.limited("conns_per_ip"); got != tries-cap {
		t.Errorf("roomgate_limited_total{kind=conns_per_ip} = %v, want %d", got, tries-cap)
	}
}

// TestHandshakeFloodFromOneIP sends handshakes from one address as fast
// as eight connections can, far over its rate: those past the burst and
// the rate get 429 with Retry-After, and a neighbor's echo goes on.
func TestHandshakeFloodFromOneIP(t *testing.T) {
	const perSecond, tries = 20, 400
	ts := startServer(t, Options{Limits: Limits{HandshakesPerIP: perSecond}})
	nb := neighborEcho(t, ts)
	start := time.Now()
	var opened, refused atomic.Int32
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for range tries / 8 {
				resp, code := upgradeFrom(t, ts, attacker, "/ws/echo/flood-"+strconv.Itoa(w))
				switch {
				case resp.StatusCode == http.StatusSwitchingProtocols:
					opened.Add(1)
				case resp.StatusCode == http.StatusTooManyRequests && code == "rate_limited":
					if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
						t.Errorf("429 with Retry-After %q, want a number of seconds", resp.Header.Get("Retry-After"))
					}
					refused.Add(1)
				default:
					t.Errorf("handshake: %d %q, want 101 or 429 rate_limited", resp.StatusCode, code)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	checkNeighbor(t, nb)
	// The burst, then the rate for as long as the flood lasted.
	most := 2*perSecond + int32(elapsed.Seconds()*perSecond) + 1
	t.Logf("%d of %d handshakes in %v passed (at most %d may)", opened.Load(), tries, elapsed, most)
	if opened.Load() > most || opened.Load() < 2*perSecond {
		t.Errorf("%d handshakes passed, want from %d (the burst) to %d", opened.Load(), 2*perSecond, most)
	}
	if got := ts.limited("handshakes_per_ip"); got != float64(refused.Load()) {
		t.Errorf("roomgate_limited_total{kind=handshakes_per_ip} = %v, want %d", got, refused.Load())
	}
}

// TestSlowlorisFromOneIP: 200 handshakes trickle from one address. Without
// a cap per address they fill the node's cap on handshakes in progress
// (here 100) and every new client is dropped; with it, the address holds
// only its 20 and the neighbor connects and echoes as usual.
func TestSlowlorisFromOneIP(t *testing.T) {
	ts := startServer(t, Options{MaxPendingHandshakes: 100, HandshakeTimeout: 5 * time.Second,
		Limits: Limits{MaxPendingHandshakesPerIP: 20}})
	for i := range 200 {
		c, err := fromIP(attacker).Dial("tcp", ts.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("GET /ws/echo/slow-" + strconv.Itoa(i) + " HTTP/1.1\r\nHost: x\r\n")) // and never the rest
	}
	testkit.Eventually(t, 5*time.Second, func() error {
		if got := ts.limited("pending_per_ip"); got != 180 {
			return fmt.Errorf("roomgate_limited_total{kind=pending_per_ip} = %v, want 180", got)
		}
		return nil
	})
	nb := neighborEcho(t, ts)
	// Round trips while the 20 trickle on: enough for a median.
	testkit.WaitFor(t, 5*time.Second, "10 round trips of the neighbor", func() bool { return nb.trips.Load() >= 10 })
	checkNeighbor(t, nb)
	if got := ts.badInput("handshake_flood"); got != 0 {
		t.Errorf("roomgate_bad_input_total{kind=handshake_flood} = %v: one address filled the node's cap", got)
	}
}

// TestMessageFloodOnOneSocket: a socket sending far over its rate is
// closed with 1008 rate_limited, one at its rate is not, and a neighbor's
// echo does not notice the flood.
func TestMessageFloodOnOneSocket(t *testing.T) {
	const perSecond = 100
	ts := startServer(t, Options{Limits: Limits{MessagesPerSecond: perSecond}})
	nb := neighborEcho(t, ts)
	calm := dialFrom(t, ts, attacker, "/ws/echo/calm")
	calmDone := make(chan error, 1)
	go func() {
		// Half the rate for a second: never refused.
		tick := time.NewTicker(time.Second / (perSecond / 2))
		defer tick.Stop()
		for range perSecond / 2 {
			<-tick.C
			wsutil.WriteClientText(calm, []byte("calm"))
			calm.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, err := wsutil.ReadServerText(calm); err != nil || string(got) != "calm" {
				calmDone <- fmt.Errorf("calm socket: %q, %v", got, err)
				return
			}
		}
		calmDone <- nil
	}()

	flood := dialFrom(t, ts, attacker, "/ws/echo/flood")
	go io.Copy(io.Discard, flood) // its echoes, until the close below ends the test's reads
	frame := masked(ws.OpText, true, []byte("flood"))
	batch := repeatFrame(frame, 100)
	for range 100 { // 10,000 messages, as fast as the kernel takes them
		if _, err := flood.Write(batch); err != nil {
			break // closed under us: the limit held
		}
	}
	testkit.Eventually(t, 5*time.Second, func() error {
		if got := ts.limited("messages"); got != 1 {
			return fmt.Errorf("roomgate_limited_total{kind=messages} = %v, want 1", got)
		}
		if got := testutil.ToFloat64(ts.m.closesSent.WithLabelValues("1008")); got != 1 {
			return fmt.Errorf("close frames with 1008 sent: %v, want 1", got)
		}
		return nil
	})
	if err := <-calmDone; err != nil {
		t.Error(err)
	}
	checkNeighbor(t, nb)
}

// TestMessageFloodCloseCode reads the flooder's close: 1008 rate_limited.
func TestMessageFloodCloseCode(t *testing.T) {
	ts := startServer(t, Options{Limits: Limits{MessagesPerSecond: 5}})
	c := dialFrom(t, ts, attacker, "/ws/counter/flood")
	c.Write(repeatFrame(masked(ws.OpText, true, []byte("nope")), 50))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := ws.ReadFrame(c)
		if err != nil {
			t.Fatalf("no close frame: %v", err)
		}
		if f.Header.OpCode == ws.OpClose {
			code, reason := ws.ParseCloseFrameData(f.Payload)
			if code != 1008 || reason != "rate_limited" {
				t.Errorf("close %d %q, want 1008 rate_limited", code, reason)
			}
			return
		}
	}
}

func repeatFrame(b []byte, n int) []byte {
	out := make([]byte, 0, len(b)*n)
	for range n {
		out = append(out, b...)
	}
	return out
}

// hideCapacity is the runtime as a Router that cannot say a room is full
// before the upgrade, like a room whose owner is another node.
type hideCapacity struct{ rooms.Router }

func TestRoomFull(t *testing.T) {
	rt := newRuntime(t, rooms.Options{MaxSockets: 3}, nil)
	ts := startServer(t, Options{Router: rt, Admin: rt, Ready: rt.Ready})
	for range 3 {
		dial(t, ts, "/ws/echo/small")
	}
	// The 101 comes before the room has the socket: wait until it has all.
	small := rooms.Addr{Class: "echo", Room: "small"}
	testkit.WaitFor(t, 5*time.Second, "the room to fill", func() bool { return rt.Full(small) })
	resp, code := upgradeFrom(t, ts, attacker, "/ws/echo/small")
	if resp.StatusCode != http.StatusServiceUnavailable || code != "room_full" {
		t.Fatalf("4th socket in a room of 3: %d %q, want 503 room_full", resp.StatusCode, code)
	}
	if got := ts.limited("room_full"); got != 1 {
		t.Errorf("roomgate_limited_total{kind=room_full} = %v, want 1", got)
	}
	dial(t, ts, "/ws/echo/other") // other rooms are not full

	// A room the edge cannot see refuses the socket itself, after the upgrade.
	rt2 := newRuntime(t, rooms.Options{MaxSockets: 1}, nil)
	ts2 := startServer(t, Options{Router: hideCapacity{rt2}})
	first := dial(t, ts2, "/ws/echo/small")
	wsutil.WriteClientText(first, []byte("in?")) // its echo comes once the room has it
	if got, _, err := testkit.ReadData(t, first); err != nil || string(got) != "in?" {
		t.Fatalf("echo: %q %v", got, err)
	}
	c := dial(t, ts2, "/ws/echo/small")
	testkit.ExpectClose(t, c, 1008)
	if got := ts2.limited("room_full"); got != 1 {
		t.Errorf("roomgate_limited_total{kind=room_full} after the upgrade = %v, want 1", got)
	}
}

func TestRESTRatePerClient(t *testing.T) {
	ts := startServer(t, Options{Limits: Limits{RESTPerSecond: 2}})
	for i := range 4 { // the burst
		if resp, body := httpGet(t, ts.http+"/v1/classes"); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, err := http.Get(ts.http + "/v1/classes")
	if err != nil {
		t.Fatal(err)
	}
	if code := errorCode(t, resp); resp.StatusCode != http.StatusTooManyRequests || code != "rate_limited" {
		t.Fatalf("5th request at once: %d %q, want 429 rate_limited", resp.StatusCode, code)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After %q, want a number of seconds", resp.Header.Get("Retry-After"))
	}
	if got := ts.limited("rest_per_ip"); got != 1 {
		t.Errorf("roomgate_limited_total{kind=rest_per_ip} = %v, want 1", got)
	}
	if resp, _ := httpGet(t, ts.http+"/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %d; health checks are not REST", resp.StatusCode)
	}
}

// TestTrustedProxyNamesTheClient: behind a trusted proxy the limits count
// the address X-Forwarded-For gives; from anyone else the header is ignored.
func TestTrustedProxyNamesTheClient(t *testing.T) {
	ts := startServer(t, Options{Limits: Limits{MaxConnsPerIP: 1,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix(attacker + "/32")}}})
	via := func(ip, client string) int {
		resp, _ := upgradeFrom(t, ts, ip, "/ws/echo/p", "X-Forwarded-For: 203.0.113.5, "+client)
		return resp.StatusCode
	}
	if got := via(attacker, "198.51.100.1"); got != 101 {
		t.Fatalf("first client through the proxy: %d", got)
	}
	if got := via(attacker, "198.51.100.2"); got != 101 {
		t.Errorf("second client through the proxy: %d, want 101: it is another client", got)
	}
	if got := via(attacker, "198.51.100.1"); got != 429 {
		t.Errorf("first client's second socket: %d, want 429", got)
	}
	// 127.0.0.2 is not trusted: its header names nobody, it is the client.
	if got := via(neighbor, "198.51.100.3"); got != 101 {
		t.Fatalf("untrusted peer: %d", got)
	}
	if got := via(neighbor, "198.51.100.4"); got != 429 {
		t.Errorf("untrusted peer's second socket under another name: %d, want 429", got)
	}
}

// TestDefaultsRefuseNothingFromOneIP: with the defaults, one address (a
// NAT, a load test) opening sockets, shaking hands, sending messages and
// calling REST at a modest rate is never refused.
func TestDefaultsRefuseNothingFromOneIP(t *testing.T) {
	ts := startServer(t, Options{})
	var conns []net.Conn
	for i := range 300 {
		c, err := dialFromErr(t, ts, attacker, "/ws/echo/r"+strconv.Itoa(i%20))
		if err != nil {
			t.Fatalf("socket %d: %v", i, err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	tick := time.NewTicker(time.Second / 200)
	defer tick.Stop()
	for range 200 { // 200 messages a second on one socket for a second
		<-tick.C
		wsutil.WriteClientText(conns[0], []byte("m"))
		if _, _, err := testkit.ReadData(t, conns[0]); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		if resp, body := httpGet(t, ts.http+"/v1/classes"); resp.StatusCode != http.StatusOK {
			t.Fatalf("REST request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	for _, kind := range limitKinds {
		if got := ts.limited(kind); got != 0 {
			t.Errorf("roomgate_limited_total{kind=%s} = %v with the defaults, want 0", kind, got)
		}
	}
}
