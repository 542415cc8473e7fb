package client_test

// These tests put an httptest server where the node would be. A real node
// cannot be made to answer 503, 429 or a reset at a chosen moment, and
// what is tested is the client's answer to them, which must not depend on
// luck: the fakes below answer exactly what Roomgate answers in those
// cases (README: 503 draining/unavailable, 429 with Retry-After), and
// every other behaviour is tested against a real node.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomgate/roomgate/client"
)

// fake serves answer for every request, counting them.
type fake struct {
	*httptest.Server
	calls atomic.Int32
}

func newFake(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, call int)) *fake {
	t.Helper()
	f := &fake{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, int(f.calls.Add(1)))
	}))
	t.Cleanup(f.Close)
	return f
}

// refuse answers as Roomgate does: a JSON error body with status.
func refuse(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":"%s, from the fake"}}`, code, code)
}

// fast retries without making the test wait.
var fast = client.Options{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

// unavailableThenOK refuses the first n calls with 503 draining.
func unavailableThenOK(n int, body string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, call int) {
		if call <= n {
			refuse(w, http.StatusServiceUnavailable, client.CodeDraining)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}
}

// TestRetryOn503: a 503 is a refusal before anything ran, so every call,
// a GET, a broadcast and an RPC alike, is tried again until it passes.
func TestRetryOn503(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		call func(ctx context.Context, c *client.Client) error
	}{
		{"GET", `{"classes":["chat"]}`, func(ctx context.Context, c *client.Client) error {
			classes, err := c.Classes(ctx)
			if err == nil && (len(classes) != 1 || classes[0] != "chat") {
				return fmt.Errorf("classes %v", classes)
			}
			return err
		}},
		{"broadcast", ``, func(ctx context.Context, c *client.Client) error {
			return c.Room("chat", "x").Broadcast(ctx, []byte("hi"))
		}},
		{"RPC", `{"result":7}`, func(ctx context.Context, c *client.Client) error {
			var n int
			err := c.Room("counter", "x").Call(ctx, "increment", nil, &n)
			if err == nil && n != 7 {
				return fmt.Errorf("result %d", n)
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, unavailableThenOK(2, tc.body))
			if err := tc.call(ctx(t), mustNew(t, f.URL, fast)); err != nil {
				t.Fatal(err)
			}
			if got := f.calls.Load(); got != 3 {
				t.Errorf("%d calls, want 3: two 503s, then the answer", got)
			}
		})
	}
}

// TestRetryGivesUp: after MaxAttempts the last refusal is the error, and
// errors that a retry cannot help are not retried.
func TestRetryGivesUp(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		code   string
		calls  int32
	}{
		{"503 every time", http.StatusServiceUnavailable, client.CodeUnavailable, 3},
		{"500", http.StatusInternalServerError, client.CodeInternal, 1},
		{"404", http.StatusNotFound, client.CodeRoomNotFound, 1},
		{"401", http.StatusUnauthorized, client.CodeTokenExpired, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, r *http.Request, call int) { refuse(w, tc.status, tc.code) })
			o := fast
			o.MaxAttempts = 3
			_, err := mustNew(t, f.URL, o).Room("chat", "x").Info(ctx(t))
			wantError(t, "Info", err, tc.status, tc.code)
			if got := f.calls.Load(); got != tc.calls {
				t.Errorf("%d calls, want %d", got, tc.calls)
			}
		})
	}
}

// TestRetryAfter: a 429's Retry-After is waited for when the client may
// wait that long, and otherwise handed to the caller at once.
func TestRetryAfter(t *testing.T) {
	limited := func(w http.ResponseWriter, r *http.Request, call int) {
		if call == 1 {
			w.Header().Set("Retry-After", "1")
			refuse(w, http.StatusTooManyRequests, client.CodeRateLimited)
			return
		}
		io.WriteString(w, `{"nodes":[]}`)
	}
	t.Run("waited for", func(t *testing.T) {
		f := newFake(t, limited)
		o := fast
		o.MaxBackoff = 2 * time.Second
		start := time.Now()
		if _, err := mustNew(t, f.URL, o).Nodes(ctx(t)); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited < time.Second {
			t.Errorf("retried after %v, before the Retry-After of 1s", waited)
		}
	})
	t.Run("longer than MaxBackoff", func(t *testing.T) {
		f := newFake(t, limited)
		_, err := mustNew(t, f.URL, fast).Nodes(ctx(t))
		wantError(t, "Nodes", err, http.StatusTooManyRequests, client.CodeRateLimited)
		var e *client.Error
		errors.As(err, &e)
		if e.RetryAfter != time.Second || f.calls.Load() != 1 {
			t.Errorf("RetryAfter %v after %d calls, want 1s after 1", e.RetryAfter, f.calls.Load())
		}
	})
}

// TestRetryBoundedByContext: a wait that would outlast the call's
// deadline is not begun; the call fails at once with the last refusal.
func TestRetryBoundedByContext(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, call int) {
		refuse(w, http.StatusServiceUnavailable, client.CodeDraining)
	})
	c := mustNew(t, f.URL, client.Options{MinBackoff: 5 * time.Second, MaxBackoff: 10 * time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Classes(ctx)
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("took %v: waited toward a retry past the deadline", took)
	}
	wantError(t, "Classes", err, http.StatusServiceUnavailable, client.CodeDraining)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want it to say the deadline stopped the retries", err)
	}

	// A context cancelled during the wait ends it.
	c = mustNew(t, f.URL, client.Options{MinBackoff: 5 * time.Second, MaxBackoff: 10 * time.Second})
	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	_, err = c.Classes(ctx)
	if took := time.Since(start); took > 2*time.Second || !errors.Is(err, context.Canceled) {
		t.Errorf("after %v: %v, want the cancel to end the wait", took, err)
	}
}

// TestRetryOnReset: a connection closed after the request was read may
// come after the work was done: a GET or a room's delete is sent again, a
// broadcast, an RPC and a kick are not.
func TestRetryOnReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		call  func(ctx context.Context, c *client.Client) error
		calls int32
	}{
		{"GET", func(ctx context.Context, c *client.Client) error { _, err := c.Nodes(ctx); return err }, 3},
		{"delete", func(ctx context.Context, c *client.Client) error { return c.Room("chat", "x").Delete(ctx) }, 3},
		{"broadcast", func(ctx context.Context, c *client.Client) error {
			return c.Room("chat", "x").Broadcast(ctx, []byte("hi"))
		}, 1},
		{"RPC", func(ctx context.Context, c *client.Client) error {
			return c.Room("counter", "x").Call(ctx, "increment", nil, nil)
		}, 1},
		{"kick", func(ctx context.Context, c *client.Client) error { return c.Room("chat", "x").Kick(ctx, "1") }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, r *http.Request, call int) {
				io.Copy(io.Discard, r.Body)
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close() // the request arrived; no answer leaves
				}
			})
			o := fast
			o.MaxAttempts = 3
			err := tc.call(ctx(t), mustNew(t, f.URL, o))
			var e *client.Error
			if err == nil || errors.As(err, &e) {
				t.Fatalf("err = %v, want a transport error", err)
			}
			if got := f.calls.Load(); got != tc.calls {
				t.Errorf("%d calls, want %d", got, tc.calls)
			}
		})
	}
}

// TestRetryOnDialError: a connection that cannot be opened carried
// nothing, so even a POST is tried again.
func TestRetryOnDialError(t *testing.T) {
	var dials atomic.Int32
	refused := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
		},
	}}
	o := fast
	o.MaxAttempts = 4
	o.HTTPClient = refused
	err := mustNew(t, "http://127.0.0.1:1", o).Room("counter", "x").Call(ctx(t), "increment", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
	if got := dials.Load(); got != 4 {
		t.Errorf("%d dials, want 4", got)
	}
}

// TestRequests: what goes on the wire: the path under the base URL's
// prefix, the query, the token, the content types a dev-mode node asks of
// a POST.
func TestRequests(t *testing.T) {
	var mu sync.Mutex
	var got []string
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, call int) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, fmt.Sprintf("%s %s %s %s %q", r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"), r.Header.Get("Content-Type"), body))
		switch {
		case r.Method != http.MethodGet:
			w.WriteHeader(http.StatusNoContent)
		case strings.Contains(r.URL.Path, "/storage"):
			io.WriteString(w, `{"items":[{"key":"a","value":"text"},{"key":"b","value_base64":"AP8="}]}`)
		default:
			io.WriteString(w, `{}`)
		}
	})
	c := mustNew(t, f.URL+"/gw/", client.Options{Token: "tok"})
	ctx := ctx(t)
	room := c.Room("chat", "a.b~c_d-1")
	c.Rooms(ctx, client.RoomsQuery{Class: "chat", Prefix: "a b", Limit: 10, Cursor: "chat/x"})
	room.Info(ctx)
	room.Connections(ctx)
	room.Kick(ctx, "42")
	room.Delete(ctx)
	room.Broadcast(ctx, []byte("hi"), client.Tag("mods"))
	room.Broadcast(ctx, []byte{0, 1}, client.Binary())
	items, err := room.Storage(ctx, "msg:", 5)
	room.Call(ctx, "add/one", map[string]int{"by": 2}, nil)
	room.Call(ctx, "ping", nil, nil)
	want := []string{
		`GET /gw/v1/rooms?class=chat&cursor=chat%2Fx&limit=10&prefix=a+b Bearer tok  ""`,
		`GET /gw/v1/rooms/chat/a.b~c_d-1 Bearer tok  ""`,
		`GET /gw/v1/rooms/chat/a.b~c_d-1/connections Bearer tok  ""`,
		`DELETE /gw/v1/rooms/chat/a.b~c_d-1/connections/42 Bearer tok  ""`,
		`DELETE /gw/v1/rooms/chat/a.b~c_d-1 Bearer tok  ""`,
		`POST /gw/v1/rooms/chat/a.b~c_d-1/broadcast?tag=mods Bearer tok application/json "hi"`,
		`POST /gw/v1/rooms/chat/a.b~c_d-1/broadcast Bearer tok application/octet-stream "\x00\x01"`,
		`GET /gw/v1/rooms/chat/a.b~c_d-1/storage?limit=5&prefix=msg%3A Bearer tok  ""`,
		`POST /gw/v1/rooms/chat/a.b~c_d-1/rpc/add%2Fone Bearer tok application/json "{\"by\":2}"`,
		`POST /gw/v1/rooms/chat/a.b~c_d-1/rpc/ping Bearer tok application/json "null"`,
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err != nil || len(items) != 2 || string(items[0].Value) != "text" || string(items[1].Value) != "\x00\xff" {
		t.Errorf("Storage = %q, %v: want a text value and a base64 one decoded", items, err)
	}
}

// TestNew refuses what cannot work, before anything is sent.
func TestNew(t *testing.T) {
	tf := func(context.Context) (string, error) { return "", nil }
	for _, tc := range []struct {
		name string
		url  string
		o    client.Options
		ok   bool
	}{
		{"plain", "http://localhost:8080", client.Options{}, true},
		{"https with a prefix", "https://rooms.example.com/roomgate/", client.Options{}, true},
		{"no scheme", "localhost:8080", client.Options{}, false},
		{"websocket scheme", "ws://localhost:8080", client.Options{}, false},
		{"query", "http://localhost:8080/?x=1", client.Options{}, false},
		{"user info", "http://u:p@localhost:8080", client.Options{}, false},
		{"both tokens", "http://localhost:8080", client.Options{Token: "t", TokenFunc: tf}, false},
		{"negative attempts", "http://localhost:8080", client.Options{MaxAttempts: -1}, false},
		{"backoff range upside down", "http://localhost:8080", client.Options{MinBackoff: time.Minute}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.New(tc.url, tc.o)
			if (err == nil) != tc.ok {
				t.Errorf("New(%q) = %v, want ok %v", tc.url, err, tc.ok)
			}
		})
	}
}
