package roomgate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

// shout is a class of the application's own: it sends every message back
// in capitals.
type shout struct{}

func (shout) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	return c.Send(rooms.Frame{Op: f.Op, Data: bytes.ToUpper(f.Data)})
}

func newShout() rooms.Handler { return shout{} }

// config is a DefaultConfig for a test: a loopback listener of its own, a
// fresh data directory (or dir), logs in the test's output.
func config(t *testing.T, dir string) roomgate.Config {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := roomgate.DefaultConfig()
	c.Listener = ln
	c.Data = dir
	c.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	return c
}

// running is a Server under Run, stopped when the test ends.
type running struct {
	srv  *roomgate.Server
	addr string
	stop context.CancelFunc
	done chan error
}

// run builds a Server from c and opts, runs it, and returns once it is
// ready.
func run(t *testing.T, c roomgate.Config, opts ...roomgate.Option) *running {
	t.Helper()
	srv, err := roomgate.New(c, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &running{srv: srv, stop: stop, done: make(chan error, 1)}
	go func() { r.done <- srv.Run(ctx) }()
	r.addr = srv.Addr().String()
	t.Cleanup(func() { r.shutdown(t) })
	testkit.WaitReady(t, "http://"+r.addr+"/readyz", 10*time.Second)
	return r
}

// shutdown cancels Run's context and waits for it to return.
func (r *running) shutdown(t *testing.T) {
	t.Helper()
	r.stop()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15 s of its context ending")
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func roundTrip(t *testing.T, c net.Conn, send, want string) {
	t.Helper()
	if err := wsutil.WriteClientText(c, []byte(send)); err != nil {
		t.Fatalf("send %q: %v", send, err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := wsutil.ReadServerText(c)
	if err != nil || string(got) != want {
		t.Fatalf("sent %q: got %q, %v; want %q", send, got, err, want)
	}
}

// TestServerServesClassesRoutesAndPages: a Server built with New serves an
// application's class beside the built-ins, its own route beside
// Roomgate's, the pages and the REST API; ending Run's context drains it
// like SIGTERM, closing sockets with 1012.
func TestServerServesClassesRoutesAndPages(t *testing.T) {
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.PathValue("name"))
	})
	r := run(t, config(t, t.TempDir()),
		roomgate.Builtins(),
		roomgate.Class("shout", newShout),
		roomgate.Handle("GET /hello/{name}", hello),
	)
	base := "http://" + r.addr

	shouter := testkit.Dial(t, "ws://"+r.addr+"/ws/shout/x")
	roundTrip(t, shouter, "hi there", "HI THERE")
	echo := testkit.Dial(t, "ws://"+r.addr+"/ws/echo/x")
	roundTrip(t, echo, "hi there", "hi there")

	if code, body := get(t, base+"/hello/bob"); code != 200 || body != "hello bob" {
		t.Errorf("GET /hello/bob: %d %q, want 200 \"hello bob\"", code, body)
	}
	if code, body := get(t, base+"/chat/"); code != 200 || !strings.Contains(body, `data-testid="messages"`) {
		t.Errorf("GET /chat/: %d, want the chat page", code)
	}
	if code, body := get(t, base+"/healthz"); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Errorf("GET /healthz: %d %q", code, body)
	}
	code, body := get(t, base+"/v1/classes")
	var classes struct {
		Classes []string `json:"classes"`
	}
	if err := json.Unmarshal([]byte(body), &classes); code != 200 || err != nil {
		t.Fatalf("GET /v1/classes: %d %q %v", code, body, err)
	}
	if got, want := strings.Join(classes.Classes, ","), "canvas,chat,counter,echo,shout"; got != want {
		t.Errorf("classes: %s, want %s", got, want)
	}
	if r.srv.Runtime() == nil || !strings.Contains(strings.Join(r.srv.Runtime().Classes(), ","), "shout") {
		t.Error("Runtime() is not the runtime serving the classes")
	}

	r.stop()
	testkit.ExpectClose(t, shouter, 1012)
	testkit.ExpectClose(t, echo, 1012)
	r.shutdown(t)
}

// TestServerReleasesItsStore: Run closes the store when it returns, and
// Close does for a Server that never ran, so the same directory opens
// again; a Server runs only once.
func TestServerReleasesItsStore(t *testing.T) {
	dir := t.TempDir()
	r := run(t, config(t, dir), roomgate.Builtins())
	c := testkit.Dial(t, "ws://"+r.addr+"/ws/counter/kept")
	readCount := func(c net.Conn) string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := wsutil.ReadServerText(c)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	readCount(c) // the value on connect
	wsutil.WriteClientText(c, []byte("inc"))
	if got := readCount(c); got != `{"type":"count","value":1}` {
		t.Fatalf("after inc: %s", got)
	}
	r.shutdown(t)
	if err := r.srv.Run(context.Background()); err == nil {
		t.Error("a second Run succeeded")
	}

	never, err := roomgate.New(config(t, dir), roomgate.Builtins())
	if err != nil {
		t.Fatalf("New on the directory a finished Run left: %v", err)
	}
	if err := never.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := never.Run(context.Background()); err == nil {
		t.Error("Run after Close succeeded")
	}

	again := run(t, config(t, dir), roomgate.Builtins())
	c2 := testkit.Dial(t, "ws://"+again.addr+"/ws/counter/kept")
	if got := readCount(c2); got != `{"type":"count","value":1}` {
		t.Fatalf("the count after two restarts: %s, want 1", got)
	}
}

// TestHandleRefusesRoomgatesRoutes: an application route where Roomgate
// routes itself would never be reached (or would take the link between
// nodes), and clashing patterns are a mistake: New says so, and releases
// the store it opened.
func TestHandleRefusesRoomgatesRoutes(t *testing.T) {
	ok := http.NotFoundHandler()
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		routes []roomgate.Option
		want   string
	}{
		{"the REST API", []roomgate.Option{roomgate.Handle("/v1/things", ok)}, "/v1"},
		{"the REST root", []roomgate.Option{roomgate.Handle("GET /v1", ok)}, "/v1"},
		{"sockets", []roomgate.Option{roomgate.Handle("GET /ws/{class}/{room}", ok)}, "/ws/"},
		{"health", []roomgate.Option{roomgate.Handle("/healthz", ok)}, "/healthz"},
		{"readiness on a host", []roomgate.Option{roomgate.Handle("example.com/readyz", ok)}, "/readyz"},
		{"metrics", []roomgate.Option{roomgate.Handle("POST /metrics", ok)}, "/metrics"},
		{"the link between nodes", []roomgate.Option{roomgate.Handle(rooms.LinkPath, ok)}, rooms.LinkPath},
		{"a clash", []roomgate.Option{roomgate.Handle("/a/{x}", ok), roomgate.Handle("/a/{y}", ok)}, "conflicts"},
		{"no path", []roomgate.Option{roomgate.Handle("GET", ok)}, "Handle"},
		{"no handler", []roomgate.Option{roomgate.Handle("/a", nil)}, "nil handler"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config(t, dir)
			defer c.Listener.Close()
			srv, err := roomgate.New(c, append(tc.routes, roomgate.Builtins())...)
			if err == nil {
				srv.Close()
				t.Fatal("New accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error naming %q", err, tc.want)
			}
		})
	}
	// Every failed New closed the store: the directory opens.
	run(t, config(t, dir), roomgate.Builtins())
}

// TestHandleRootReplacesPages: an application that routes "/" serves every
// page path itself, while Roomgate's own routes stay Roomgate's.
func TestHandleRootReplacesPages(t *testing.T) {
	mine := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "mine "+r.URL.Path) })
	r := run(t, config(t, t.TempDir()), roomgate.Class("shout", newShout), roomgate.Handle("/", mine))
	base := "http://" + r.addr
	for _, path := range []string{"/", "/chat/", "/client.js"} {
		if code, body := get(t, base+path); code != 200 || body != "mine "+path {
			t.Errorf("GET %s: %d %q, want the application's page", path, code, body)
		}
	}
	if code, body := get(t, base+"/healthz"); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Errorf("GET /healthz: %d %q, want Roomgate's", code, body)
	}
	if code, body := get(t, base+rooms.LinkPath); strings.HasPrefix(body, "mine") {
		t.Errorf("GET %s: %d %q, the application took the link between nodes", rooms.LinkPath, code, body)
	}
	roundTrip(t, testkit.Dial(t, "ws://"+r.addr+"/ws/shout/y"), "up", "UP")
}

// TestClassMistakesPanic: a class name registered twice or invalid, or a
// handler method with a wrong signature, panics when the Server is built,
// with a message naming the class; the store is released.
func TestClassMistakesPanic(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		opts []roomgate.Option
		want string
	}{
		{"twice", []roomgate.Option{roomgate.Class("shout", newShout), roomgate.Class("shout", newShout)}, `class "shout" registered twice`},
		{"a built-in's name", []roomgate.Option{roomgate.Builtins(), roomgate.Class("chat", newShout)}, `class "chat" registered twice`},
		{"capitals", []roomgate.Option{roomgate.Class("Shout", newShout)}, `invalid class name "Shout"`},
		{"a wrong signature", []roomgate.Option{roomgate.Class("bad", func() rooms.Handler { return badClose{} })}, `class "bad"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config(t, dir)
			defer c.Listener.Close()
			defer func() {
				p := recover()
				if p == nil || !strings.Contains(fmt.Sprint(p), tc.want) {
					t.Fatalf("panic %v, want one saying %s", p, tc.want)
				}
			}()
			srv, err := roomgate.New(c, tc.opts...)
			if err == nil {
				srv.Close()
			}
			t.Fatalf("New returned (%v) instead of panicking", err)
		})
	}
	run(t, config(t, dir), roomgate.Builtins()) // the store was released
}

// badClose has an OnClose that is not rooms.CloseHandler's.
type badClose struct{ shout }

func (badClose) OnClose(ctx context.Context, r *rooms.Room, c *rooms.Conn) error { return nil }

func TestNilClassFactoryPanics(t *testing.T) {
	defer func() {
		if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), `"shout"`) {
			t.Fatalf("panic %v, want one naming the class", p)
		}
	}()
	roomgate.Class("shout", nil)
}

// TestNoClassIsAnError: a node with no class would refuse every socket;
// New says what is missing instead.
func TestNoClassIsAnError(t *testing.T) {
	c := config(t, t.TempDir())
	defer c.Listener.Close()
	_, err := roomgate.New(c, roomgate.Handle("/x", http.NotFoundHandler()))
	if err == nil || !strings.Contains(err.Error(), "roomgate.Builtins()") {
		t.Fatalf("New without a class: %v", err)
	}
}

// TestConfigErrorsNameTheFlag: New reports a bad field as the serve
// command reports the flag, so one message serves both.
func TestConfigErrorsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*roomgate.Config)
		want string
	}{
		{"a zero Config's pending handshakes", func(c *roomgate.Config) { *c = roomgate.Config{Listener: c.Listener, Data: c.Data} }, "-max-pending-handshakes-per-ip"},
		{"log level", func(c *roomgate.Config) { c.Logger = nil; c.LogLevel = "loud" }, "-log-level"},
		{"short secret", func(c *roomgate.Config) { c.JWTSecret = "short" }, "-jwt-secret"},
		{"proxy", func(c *roomgate.Config) { c.TrustedProxies = []string{"proxy.internal"} }, "-trusted-proxies"},
		{"TLS half", func(c *roomgate.Config) { c.TLSKey = "key.pem" }, "go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config(t, t.TempDir())
			defer c.Listener.Close()
			tc.set(&c)
			if _, err := roomgate.New(c, roomgate.Builtins()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// TestRunReportsAListenError: an address in use fails Run with the reason,
// and the start-up log, which waits for the address, does not trip on it.
func TestRunReportsAListenError(t *testing.T) {
	c := config(t, t.TempDir())
	taken := c.Listener // still open: its address is in use
	defer taken.Close()
	c.Listener = nil
	c.Addr = taken.Addr().String()
	srv, err := roomgate.New(c, roomgate.Builtins())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Run on a taken address: %v", err)
	}
	if srv.Addr() != nil {
		t.Errorf("Addr after a failed listen: %v, want nil", srv.Addr())
	}
}
