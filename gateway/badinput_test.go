package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

// echoWorks checks the server still serves a fresh client.
func echoWorks(t *testing.T, ts *testServer) {
	t.Helper()
	c := dial(t, ts, "/ws/echo/still-alive")
	if err := wsutil.WriteClientText(c, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	got, _, err := testkit.ReadData(t, c)
	if err != nil || string(got) != "ping" {
		t.Fatalf("echo after bad input: %q, %v", got, err)
	}
}

func rawFrame(h ws.Header, payload []byte) []byte {
	var b bytes.Buffer
	if err := ws.WriteHeader(&b, h); err != nil {
		panic(err)
	}
	p := bytes.Clone(payload)
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	b.Write(p)
	return b.Bytes()
}

func masked(op ws.OpCode, fin bool, payload []byte) []byte {
	return rawFrame(ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(payload))}, payload)
}

func TestBadFramesGetTheirCloseCode(t *testing.T) {
	ts := startServer(t, Options{MaxMessageBytes: 1024})
	closeBody := func(code int, reason string) []byte {
		b := binary.BigEndian.AppendUint16(nil, uint16(code))
		return append(b, reason...)
	}
	tests := []struct {
		name  string
		bytes []byte
		code  int
		kind  string
	}{
		{"unmasked frame", rawFrame(ws.Header{Fin: true, OpCode: ws.OpText, Length: 2}, []byte("hi")), 1002, "protocol"},
		{"invalid UTF-8 text", masked(ws.OpText, true, []byte{'a', 0xff, 'b'}), 1007, "utf8"},
		{"invalid UTF-8 split across fragments", append(masked(ws.OpText, false, []byte{'a', 0xe2, 0x82}), masked(ws.OpContinuation, true, []byte{'b'})...), 1007, "utf8"},
		{"invalid UTF-8 close reason", masked(ws.OpClose, true, closeBody(1000, "\xff")), 1007, "utf8"},
		{"declared length over the limit", rawFrame(ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Length: 1 << 40}, nil), 1009, "too_big"},
		{"one frame over the limit", masked(ws.OpBinary, true, make([]byte, 1025)), 1009, "too_big"},
		{"fragments over the limit", append(masked(ws.OpBinary, false, make([]byte, 600)), masked(ws.OpContinuation, true, make([]byte, 600))...), 1009, "too_big"},
		{"reserved opcode", masked(ws.OpCode(0x3), true, nil), 1002, "protocol"},
		{"rsv bits without extension", rawFrame(ws.Header{Fin: true, Rsv: 4, OpCode: ws.OpText, Masked: true, Length: 1}, []byte("x")), 1002, "protocol"},
		{"continuation with nothing to continue", masked(ws.OpContinuation, true, []byte("x")), 1002, "protocol"},
		{"new message inside a fragmented one", append(masked(ws.OpText, false, []byte("a")), masked(ws.OpText, true, []byte("b"))...), 1002, "protocol"},
		{"fragmented ping", masked(ws.OpPing, false, nil), 1002, "protocol"},
		{"ping over 125 bytes", masked(ws.OpPing, true, make([]byte, 126)), 1002, "protocol"},
		{"close with a one-byte body", masked(ws.OpClose, true, []byte{3}), 1002, "protocol"},
		{"close with reserved code 1005", masked(ws.OpClose, true, closeBody(1005, "")), 1002, "protocol"},
		{"close with code 5000", masked(ws.OpClose, true, closeBody(5000, "")), 1002, "protocol"},
		{"64-bit length with its top bit set", []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, 1002, "protocol"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.badInput(tc.kind)
			c := dial(t, ts, "/ws/echo/bad")
			if _, err := c.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			testkit.ExpectClose(t, c, tc.code)
			testkit.ExpectEOF(t, c)
			if got := ts.badInput(tc.kind); got != before+1 {
				t.Errorf("roomgate_bad_input_total{kind=%q} = %v, want %v", tc.kind, got, before+1)
			}
			echoWorks(t, ts)
		})
	}
}

func TestMessageAtTheLimitPasses(t *testing.T) {
	ts := startServer(t, Options{MaxMessageBytes: 1024})
	c := dial(t, ts, "/ws/echo/limit")
	msg := bytes.Repeat([]byte("a"), 1024)
	wsutil.WriteClientText(c, msg)
	got, _, err := testkit.ReadData(t, c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("1024-byte message at a 1024-byte limit: %d bytes, %v", len(got), err)
	}
}

func TestGarbageInsteadOfHTTP(t *testing.T) {
	ts := startServer(t, Options{})
	for _, garbage := range []string{
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not a TLS hello either\r\n\r\n",
		"GET /ws/echo/x HTTP/1.1\r\nHost\r\n\r\n",
		"hello\r\n\r\n",
	} {
		c, err := net.Dial("tcp", ts.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(garbage))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: no HTTP answer: %v", garbage, err)
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%q: status %d, want 400", garbage, resp.StatusCode)
		}
		c.Close()
	}
	testkit.Eventually(t, 5*time.Second, func() error {
		if n := ts.badInput("handshake"); n < 3 {
			return fmt.Errorf("roomgate_bad_input_total{kind=handshake} = %v, want 3", n)
		}
		return nil
	})
	echoWorks(t, ts)
}

// TestHalfOpenHandshakesBlockNobody leaves 200 handshakes unfinished, of
// every shape, while a normal client connects and echoes; then checks that
// the server drops them all at the deadline and counts them.
func TestHalfOpenHandshakesBlockNobody(t *testing.T) {
	ts := startServer(t, Options{HandshakeTimeout: 2 * time.Second})
	partial := []string{
		"",                                       // connects, says nothing
		"GE",                                     // too short to tell who serves it
		"GET /ws/echo/x HTTP/1.1\r\nHost: x\r\n", // our upgrader, headers never end
		"GET /healthz HTTP/1.1\r\nHo",            // net/http, headers never end
	}
	var conns []net.Conn
	for i := range 200 {
		c, err := net.Dial("tcp", ts.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte(partial[i%len(partial)]))
		conns = append(conns, c)
	}
	start := time.Now()
	echoWorks(t, ts)
	if d := time.Since(start); d > time.Second {
		t.Errorf("a normal client took %v to echo beside 200 half-open handshakes", d)
	}
	for _, c := range conns {
		testkit.ExpectEOF(t, c)
	}
	testkit.Eventually(t, 5*time.Second, func() error {
		got := ts.badInput("handshake_timeout") + ts.badInput("handshake")
		if got < 200 {
			return fmt.Errorf("counted %v dropped handshakes, want 200", got)
		}
		return nil
	})
}

func TestHandshakeRefusalsAreJSON(t *testing.T) {
	ts := startServer(t, Options{AllowedOrigins: []string{"https://app.example"}})
	tests := []struct {
		name   string
		path   string
		origin string
		status int
		code   string
		kind   string
	}{
		{"bad class name", "/ws/Echo/x", "", 400, "bad_name", "bad_name"},
		{"bad room name", "/ws/echo/a%20b", "", 400, "bad_name", "bad_name"},
		{"room name too long", "/ws/echo/" + strings.Repeat("r", 129), "", 400, "bad_name", "bad_name"},
		{"extra path segment", "/ws/echo/a/b", "", 400, "bad_name", "bad_name"},
		{"unknown class", "/ws/nope/x", "", 404, "unknown_class", "unknown_class"},
		{"origin not allowed", "/ws/echo/x", "https://evil.example", 403, "origin_refused", "origin"},
		{"bad query", "/ws/echo/x?name=%zz", "", 400, "bad_query", "bad_query"},
		{"name with control characters", "/ws/echo/x?name=a%07b", "", 400, "bad_query", "bad_query"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.badInput(tc.kind)
			d := ws.Dialer{}
			if tc.origin != "" {
				d.Header = ws.HandshakeHeaderHTTP(http.Header{"Origin": {tc.origin}})
			}
			_, _, _, err := d.Dial(context.Background(), ts.url+tc.path)
			var se ws.StatusError
			if !errors.As(err, &se) || int(se) != tc.status {
				t.Fatalf("dial error %v, want status %d", err, tc.status)
			}
			// The same request over plain HTTP shows the body.
			req, _ := http.NewRequest("GET", ts.http+tc.path, nil)
			req.Header = http.Header{
				"Upgrade": {"websocket"}, "Connection": {"Upgrade"},
				"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="},
			}
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Error struct{ Code, Message string }
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status || body.Error.Code != tc.code || body.Error.Message == "" {
				t.Errorf("got %d %+v, want %d code %q with a message", resp.StatusCode, body, tc.status, tc.code)
			}
			if got := ts.badInput(tc.kind); got != before+2 {
				t.Errorf("roomgate_bad_input_total{kind=%q} = %v, want %v", tc.kind, got, before+2)
			}
		})
	}
	t.Run("allowed origin and no origin connect", func(t *testing.T) {
		d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {"https://app.example"}})}
		c, _, _, err := d.Dial(context.Background(), ts.url+"/ws/echo/x")
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		dial(t, ts, "/ws/echo/x")
	})
}

// upgradeRequest asks for a WebSocket to /ws/echo/%s.
const upgradeRequest = "GET /ws/echo/%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"

// keptAlive opens a connection that has served one plain HTTP request, so
// the next request on it goes to net/http and chi, not the zero-copy path.
func keptAlive(t *testing.T, ts *testServer) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", ts.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	return c, br
}

// TestUpgradeOnKeepAliveConnection sends an HTTP request and then an upgrade
// on the same connection, which net/http and chi's route must serve.
func TestUpgradeOnKeepAliveConnection(t *testing.T) {
	ts := startServer(t, Options{})
	c, br := keptAlive(t, ts)
	fmt.Fprintf(c, upgradeRequest, "keep")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	wsutil.WriteClientText(c, []byte("kept"))
	got, err := wsutil.ReadServerText(struct {
		io.Reader
		io.Writer
	}{br, c})
	if err != nil || string(got) != "kept" {
		t.Fatalf("echo on the upgraded keep-alive connection: %q %v", got, err)
	}
}

// A client that reuses a keep-alive connection and sends its first frame
// right behind the upgrade request, before the 101 (RFC 6455 asks it to
// wait, some do not), is answered: net/http had read the frame with the
// request, and it is parsed before the socket is read at all.
func TestFrameSentWithTheUpgradeIsAnswered(t *testing.T) {
	ts := startServer(t, Options{MessageTimeout: time.Second})
	c, br := keptAlive(t, ts)
	c.Write(append(fmt.Appendf(nil, upgradeRequest, "eager"), masked(ws.OpText, true, []byte("eager"))...))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := ws.ReadHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, h.Length)
	io.ReadFull(br, payload)
	if h.OpCode != ws.OpText || string(payload) != "eager" {
		t.Fatalf("first frame back: %v %q; want the echo of the frame sent with the upgrade", h.OpCode, payload)
	}
}

// smallBufferDialer dials with a 4 KiB receive buffer so a client that stops
// reading fills the path quickly.
func smallBufferDialer() ws.Dialer {
	return ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return serr
		}}
		return d.DialContext(ctx, network, addr)
	}}
}

// TestSlowConsumerIsClosed has a client send without reading: the echoes
// fill the kernel's buffers, then the bounded queue, and the socket must be
// closed with 1008 instead of growing the server's memory.
func TestSlowConsumerIsClosed(t *testing.T) {
	ts := startServer(t, Options{MaxQueueBytes: 64 << 10})
	d := smallBufferDialer()
	c, _, _, err := d.Dial(context.Background(), ts.url+"/ws/echo/slow")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("s"), 32<<10)
	// Write until the server gives up on us (its close makes writes fail) or
	// far more than every buffer on the path could hold.
	for sent := 0; sent < 256<<20 && ts.badInput("slow_consumer") == 0; sent += len(msg) {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := wsutil.WriteClientBinary(c, msg); err != nil {
			break
		}
	}
	if got := ts.badInput("slow_consumer"); got != 1 {
		t.Fatalf("roomgate_bad_input_total{kind=slow_consumer} = %v, want 1", got)
	}
	// Now read: whole echoes, then the close frame with 1008.
	testkit.ExpectClose(t, c, 1008)
	echoWorks(t, ts)
}

// TestSlowConsumerQueueStaysWithinBound sends frames that do not divide
// MaxQueueBytes to a client that never reads: a queue just under the bound
// must refuse the frame that would cross it, not take it whole.
func TestSlowConsumerQueueStaysWithinBound(t *testing.T) {
	const bound = 10000
	got := make(chan *socket, 1)
	ts := startServer(t, Options{MaxQueueBytes: bound, Router: captureRouter{got: got}})
	d := smallBufferDialer()
	c, _, _, err := d.Dial(context.Background(), ts.url+"/ws/echo/bound")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sk := <-got
	msg := rooms.Frame{Op: rooms.Binary, Data: bytes.Repeat([]byte("b"), 3000)}
	queued := 0
	for sent := 0; sent < 256<<20; sent += len(msg.Data) {
		err := sk.Send(msg)
		if errors.Is(err, rooms.ErrSlow) {
			break
		}
		if err != nil {
			t.Fatalf("Send after %d bytes: %v", sent, err)
		}
		sk.wmu.Lock()
		if sk.out != nil {
			queued = sk.out.bytes
		}
		sk.wmu.Unlock()
		if queued > bound {
			t.Fatalf("after an accepted Send, %d bytes are queued; MaxQueueBytes is %d", queued, bound)
		}
	}
	if n := ts.badInput("slow_consumer"); n != 1 {
		t.Fatalf("roomgate_bad_input_total{kind=slow_consumer} = %v, want 1", n)
	}
	if queued == 0 {
		t.Fatal("nothing was ever queued: the test did not reach the bound")
	}
	testkit.ExpectClose(t, c, 1008)
}

// failing is a class whose handler fails on demand.
type failing struct{}

func (failing) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	switch string(f.Data) {
	case "error":
		return errors.New("asked to fail")
	case "panic":
		panic("asked to panic")
	}
	return c.Send(f)
}

func TestRoomFailureClosesOnlyItsSocket(t *testing.T) {
	rt := newRuntime(t, rooms.Options{}, map[string]func() rooms.Handler{"failing": func() rooms.Handler { return failing{} }})
	ts := startServer(t, Options{Router: rt})
	bystander := dial(t, ts, "/ws/failing/r")
	for _, trigger := range []string{"error", "panic"} {
		c := dial(t, ts, "/ws/failing/r")
		wsutil.WriteClientText(c, []byte(trigger))
		testkit.ExpectClose(t, c, 1011)
		wsutil.WriteClientText(bystander, []byte("fine"))
		got, _, err := testkit.ReadData(t, bystander)
		if err != nil || string(got) != "fine" {
			t.Fatalf("bystander after %s: %q %v", trigger, got, err)
		}
	}
}

func TestShutdownClosesSocketsWith1012(t *testing.T) {
	ts := startServer(t, Options{DrainTimeout: time.Second})
	polite := dial(t, ts, "/ws/echo/a")
	silent := dial(t, ts, "/ws/echo/b") // never answers the close frame
	testkit.Eventually(t, 5*time.Second, func() error {
		if n := ts.openCount.Load(); n != 2 {
			return fmt.Errorf("%d sockets open, want 2", n)
		}
		return nil
	})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		testkit.ExpectClose(t, polite, 1012) // wsutil answers the close frame
	}()
	start := time.Now()
	ts.stop(t)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v with a 1s drain timeout", d)
	}
	wg.Wait()
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := ws.ReadFrame(silent)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := ws.ParseCloseFrameData(f.Payload); f.Header.OpCode != ws.OpClose || code != 1012 {
		t.Fatalf("silent client got %v %d, want close 1012", f.Header.OpCode, code)
	}
	testkit.ExpectEOF(t, silent)
	if _, err := net.Dial("tcp", ts.Addr().String()); err == nil {
		t.Error("server still accepts connections after shutdown")
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	ts := startServer(t, Options{})
	c := dial(t, ts, "/ws/echo/m")
	wsutil.WriteClientText(c, []byte("x"))
	testkit.ReadData(t, c)
	if resp, _ := httpGet(t, ts.http+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
	if resp, _ := httpGet(t, ts.http+"/readyz"); resp.StatusCode != 200 {
		t.Errorf("readyz: %d", resp.StatusCode)
	}
	// The reader counts a read's frames once it has handed them all on,
	// so the echo may arrive a moment before its frame is counted.
	testkit.Eventually(t, 5*time.Second, func() error {
		_, body := httpGet(t, ts.http+"/metrics")
		for _, want := range []string{
			"roomgate_sockets_open 1",
			"roomgate_frames_in_total 1",
			"roomgate_frames_out_total 1",
			`roomgate_bad_input_total{kind="protocol"} 0`,
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("/metrics lacks %q", want)
			}
		}
		return nil
	})
}

func TestErrorMessagesLeaveOutThePackage(t *testing.T) {
	for in, want := range map[string]string{
		"gateway: origin not allowed":         "origin not allowed",
		"rooms: unknown class":                "unknown class",
		"rooms: failed: redisstore: timeout":  "failed: redisstore: timeout",
		"Room full: try later":                "Room full: try later",
		"room 'a b': not a valid name, sorry": "room 'a b': not a valid name, sorry",
		"no package here":                     "no package here",
	} {
		if got := withoutPackage(in); got != want {
			t.Errorf("withoutPackage(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPublicErrorsTable(t *testing.T) {
	for _, row := range publicErrors {
		t.Run(row.code, func(t *testing.T) {
			wrapped := fmt.Errorf("context: %w", row.err)
			code, status, closeCode, kind := publicError(wrapped)
			if code != row.code || status != row.status || closeCode != row.close || kind != row.kind {
				t.Errorf("publicError(%v) = %q %d %d %q, want %q %d %d %q", wrapped, code, status, closeCode, kind, row.code, row.status, row.close, row.kind)
			}
			if len(code) > maxCloseReason {
				t.Errorf("code %q does not fit a close reason", code)
			}
			if row.kind != "" && !slices.Contains(badInputKinds, row.kind) {
				t.Errorf("kind %q is not in badInputKinds, so /metrics does not show it before it first grows", row.kind)
			}
		})
	}
	if code, status, closeCode, _ := publicError(errors.New("surprise")); code != "internal" || status != 500 || closeCode != 1011 {
		t.Errorf("unknown error maps to %q %d %d, want internal 500 1011", code, status, closeCode)
	}
}
