package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomgate/roomgate/auth"
	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

// stub is Durable Objects' Counter reached through its stub: increment
// persists and broadcasts; the other methods fail or refuse.
type stub struct{ n int }

func (s *stub) OnStart(ctx context.Context, r *rooms.Room) error {
	v, err := r.Storage().Get(ctx, "n")
	s.n, _ = strconv.Atoi(string(v))
	return err
}

func (s *stub) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	return c.SendText("echo " + string(f.Data))
}

func (s *stub) Methods() []rooms.RPCMethod {
	return []rooms.RPCMethod{
		rooms.Method("increment", func(ctx context.Context, r *rooms.Room, by int) (int, error) {
			s.n += by
			if err := r.Storage().Put("n", []byte(strconv.Itoa(s.n))); err != nil {
				return 0, err
			}
			return s.n, r.BroadcastText(fmt.Sprint("n=", s.n))
		}),
		rooms.Method("get", func(ctx context.Context, r *rooms.Room, _ struct{}) (int, error) { return s.n, nil }),
		rooms.Method("boom", func(ctx context.Context, r *rooms.Room, _ struct{}) (int, error) { panic("boom") }),
		rooms.Method("limited", func(ctx context.Context, r *rooms.Room, _ struct{}) (int, error) {
			return 0, &rooms.UserError{Status: 429, Code: "rate_limited", Message: "slow down", RetryAfter: 1500 * time.Millisecond}
		}),
	}
}

func rpcServer(t testing.TB, o Options) *testServer {
	rt := newRuntime(t, rooms.Options{}, map[string]func() rooms.Handler{"stub": func() rooms.Handler { return new(stub) }})
	o.Router, o.Admin, o.Ready = rt, rt, rt.Ready
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = 1024
	}
	return startServer(t, o)
}

// rpc POSTs body to path with the headers, and returns the status and body.
func rpc(t testing.TB, ts *testServer, path, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", ts.http+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestRPCOverREST: POST /v1/rooms/{class}/{room}/rpc/{method} calls the
// method with the body and answers {"result":…} once its writes are
// committed; what it broadcasts reaches the room's sockets.
func TestRPCOverREST(t *testing.T) {
	ts := rpcServer(t, Options{})
	c := dial(t, ts, "/ws/stub/x")
	sendText(t, c, "hi") // the socket is in the room once its first message is answered
	if got, _, err := testkit.ReadData(t, c); err != nil || string(got) != "echo hi" {
		t.Fatalf("echo: %q %v", got, err)
	}
	for _, tc := range []struct{ method, body, want string }{
		{"increment", "2", `{"result":2}`},
		{"increment", " 3 ", `{"result":5}`},
		{"get", "", `{"result":5}`},
		{"get", "null", `{"result":5}`},
	} {
		resp, body := rpc(t, ts, "/v1/rooms/stub/x/rpc/"+tc.method, tc.body)
		if resp.StatusCode != 200 || strings.TrimSpace(body) != tc.want || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s(%s): %d %q %q, want 200 %s", tc.method, tc.body, resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.want)
		}
	}
	for _, want := range []string{"n=2", "n=5"} {
		if got, _, err := testkit.ReadData(t, c); err != nil || string(got) != want {
			t.Fatalf("broadcast: %q %v, want %s", got, err, want)
		}
	}
}

// TestRPCOverRESTRefusals: each refusal's status and code, and that the
// client's mistakes, and only those, grow roomgate_bad_input_total.
func TestRPCOverRESTRefusals(t *testing.T) {
	ts := rpcServer(t, Options{})
	rpc(t, ts, "/v1/rooms/stub/x/rpc/increment", "1")
	for _, tc := range []struct {
		name, path, body string
		status           int
		code, kind       string
	}{
		{"unknown method", "/v1/rooms/stub/x/rpc/nope", "1", 404, "no_such_method", "no_such_method"},
		{"a method name no method has", "/v1/rooms/stub/x/rpc/a%2Fb", "1", 404, "no_such_method", "no_such_method"},
		{"argument of the wrong type", "/v1/rooms/stub/x/rpc/increment", `"two"`, 400, "bad_request", "rpc_argument"},
		{"argument not JSON", "/v1/rooms/stub/x/rpc/increment", `{`, 400, "bad_request", "rpc_argument"},
		{"two arguments", "/v1/rooms/stub/x/rpc/increment", `1 2`, 400, "bad_request", "rpc_argument"},
		{"body too big", "/v1/rooms/stub/x/rpc/increment", strings.Repeat("1", 1025), 413, "too_big", "too_big"},
		{"unknown class", "/v1/rooms/nope/x/rpc/increment", "1", 404, "unknown_class", "unknown_class"},
		{"bad room name", "/v1/rooms/stub/a%20b/rpc/increment", "1", 400, "bad_name", "bad_name"},
		{"a method that panics", "/v1/rooms/stub/x/rpc/boom", "", 500, "room_failed", ""},
		{"a UserError", "/v1/rooms/stub/x/rpc/limited", "", 429, "rate_limited", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kinds := badInputKinds
			before := badInputTotals(ts, kinds)
			var e apiError
			resp := call(t, ts, "POST", tc.path, tc.body, &e)
			if resp.StatusCode != tc.status || e.Error.Code != tc.code || e.Error.Message == "" {
				t.Fatalf("%d %+v, want %d %q", resp.StatusCode, e, tc.status, tc.code)
			}
			after := badInputTotals(ts, kinds)
			for _, k := range kinds {
				want := before[k]
				if k == tc.kind {
					want++
				}
				if after[k] != want {
					t.Errorf("roomgate_bad_input_total{kind=%q} = %v, want %v", k, after[k], want)
				}
			}
		})
	}
	var e apiError
	resp := call(t, ts, "POST", "/v1/rooms/stub/x/rpc/limited", "", &e)
	if resp.Header.Get("Retry-After") != "2" || e.Error.Message != "slow down" {
		t.Errorf("a UserError with RetryAfter 1.5s: Retry-After %q, message %q", resp.Header.Get("Retry-After"), e.Error.Message)
	}
	resp = call(t, ts, "POST", "/v1/rooms/stub/x/rpc/boom", "", &e)
	if strings.Contains(e.Error.Message, "goroutine") {
		t.Errorf("a panic's stack trace went to the client: %q", e.Error.Message)
	}
	if resp = call(t, ts, "GET", "/v1/rooms/stub/x/rpc/get", "", &e); resp.StatusCode != 405 {
		t.Errorf("GET on the rpc route: %d", resp.StatusCode)
	}
}

// TestRPCOverRESTPanicLeavesSocketsAlone: a method that panics fails its
// call with 500 and rebuilds the instance from storage; the room's
// sockets stay open.
func TestRPCOverRESTPanicLeavesSocketsAlone(t *testing.T) {
	ts := rpcServer(t, Options{})
	c := dial(t, ts, "/ws/stub/p")
	sendText(t, c, "hi")
	testkit.ReadData(t, c)
	if resp, body := rpc(t, ts, "/v1/rooms/stub/p/rpc/increment", "4"); resp.StatusCode != 200 {
		t.Fatalf("increment: %d %s", resp.StatusCode, body)
	}
	testkit.ReadData(t, c) // n=4
	if resp, body := rpc(t, ts, "/v1/rooms/stub/p/rpc/boom", ""); resp.StatusCode != 500 {
		t.Fatalf("boom: %d %s", resp.StatusCode, body)
	}
	sendText(t, c, "still here?")
	if got, _, err := testkit.ReadData(t, c); err != nil || string(got) != "echo still here?" {
		t.Fatalf("after the panic the socket got %q, %v", got, err)
	}
	if resp, body := rpc(t, ts, "/v1/rooms/stub/p/rpc/increment", "1"); resp.StatusCode != 200 || strings.TrimSpace(body) != `{"result":5}` {
		t.Fatalf("increment after the rebuild: %d %s, want 5 from storage", resp.StatusCode, body)
	}
}

// TestRPCAuthorization: with a key, an RPC call needs an admin token or
// one whose rooms cover the room, and whose rpc claim, when it has one,
// lists the method. Each refusal is counted.
func TestRPCAuthorization(t *testing.T) {
	v, err := auth.New(auth.Options{Secret: authSecret})
	if err != nil {
		t.Fatal(err)
	}
	ts := rpcServer(t, Options{Auth: v})
	admin := token(t, auth.Claims{Subject: "ops", Admin: true})
	roomA := token(t, auth.Claims{Subject: "u", Rooms: []string{"stub/a"}})
	getOnly := token(t, auth.Claims{Subject: "u", Rooms: []string{"stub/*"}, Extra: []byte(`{"rpc":["get"]}`)})
	every := token(t, auth.Claims{Subject: "u", Rooms: []string{"stub/*"}, Extra: []byte(`{"rpc":["*"],"role":"x"}`)})
	none := token(t, auth.Claims{Subject: "u", Rooms: []string{"stub/*"}, Extra: []byte(`{"rpc":[]}`)})
	badClaim := token(t, auth.Claims{Subject: "u", Rooms: []string{"stub/*"}, Extra: []byte(`{"rpc":"increment"}`)})
	nullClaim := token(t, auth.Claims{Subject: "u", Rooms: []string{"stub/*"}, Extra: []byte(`{"rpc":null}`)})
	for _, tc := range []struct {
		name, token, path string
		status            int
		code, kind        string
	}{
		{"no token", "", "/v1/rooms/stub/a/rpc/increment", 401, "token_missing", "token_missing"},
		{"admin", admin, "/v1/rooms/stub/b/rpc/increment", 200, "", ""},
		{"scoped, its room", roomA, "/v1/rooms/stub/a/rpc/increment", 200, "", ""},
		{"scoped, another room", roomA, "/v1/rooms/stub/b/rpc/increment", 403, "forbidden", "token_scope"},
		{"scoped, a class it does not cover", roomA, "/v1/rooms/nope/a/rpc/increment", 403, "forbidden", "token_scope"},
		{"scoped, an admin route", roomA, "/v1/rooms/stub/a", 403, "admin_required", "not_admin"},
		{"scoped, no route", roomA, "/v1/nothing", 403, "admin_required", "not_admin"},
		{"scoped, a route under a room", roomA, "/v1/rooms/stub/a/nothing", 403, "admin_required", "not_admin"},
		{"rpc claim, a method it lists", getOnly, "/v1/rooms/stub/a/rpc/get", 200, "", ""},
		{"rpc claim, a method it does not list", getOnly, "/v1/rooms/stub/a/rpc/increment", 403, "forbidden", "rpc_scope"},
		{`rpc claim "*"`, every, "/v1/rooms/stub/a/rpc/increment", 200, "", ""},
		{"rpc claim empty", none, "/v1/rooms/stub/a/rpc/get", 403, "forbidden", "rpc_scope"},
		{"rpc claim not a list", badClaim, "/v1/rooms/stub/a/rpc/get", 401, "token_invalid", "token_invalid"},
		{"rpc claim null", nullClaim, "/v1/rooms/stub/a/rpc/get", 401, "token_invalid", "token_invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.badInput(tc.kind)
			method := "POST"
			if !strings.Contains(tc.path, "/rpc/") {
				method = "GET"
			}
			body := "1"
			if strings.HasSuffix(tc.path, "/get") {
				body = ""
			}
			req, _ := http.NewRequest(method, ts.http+tc.path, strings.NewReader(body))
			req.Header.Set("Content-Type", "text/plain") // a token, not the body's type, keeps other sites out
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			checkAnswer(t, ts, resp, tc.status, tc.code, tc.kind, before)
		})
	}
	if resp, _ := rpc(t, ts, "/v1/rooms/stub/a/rpc/get?token="+admin, ""); resp.StatusCode != 401 {
		t.Errorf("a token in the query: %d, want 401", resp.StatusCode)
	}
}

// TestRPCInDevMode: without a key, RPC follows the admin API's dev-mode
// rules: this machine only, a loopback Host, nothing a page of another
// site could send.
func TestRPCInDevMode(t *testing.T) {
	ts := rpcServer(t, Options{})
	path := "/v1/rooms/stub/d/rpc/increment"
	for _, tc := range []struct {
		name    string
		headers []string
		status  int
		code    string
	}{
		{"a cross-site text/plain POST", []string{"Content-Type", "text/plain"}, 403, "cross_site"},
		{"another site's Origin", []string{"Origin", "https://evil.example"}, 403, "cross_site"},
		{"a proxy's forwarding header", []string{"X-Forwarded-For", "203.0.113.9"}, 403, "forbidden"},
		{"a JSON POST", nil, 200, ""},
	} {
		resp, body := rpc(t, ts, path, "1", tc.headers...)
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.code) {
			t.Errorf("%s: %d %s, want %d %s", tc.name, resp.StatusCode, body, tc.status, tc.code)
		}
	}
	req := httptest.NewRequest("POST", path, strings.NewReader("1"))
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = "203.0.113.7:4000"
	rec := httptest.NewRecorder()
	ts.routes().ServeHTTP(rec, req)
	if rec.Code != 403 {
		t.Errorf("from another machine: %d %s", rec.Code, rec.Body)
	}
	req.RemoteAddr, req.Host = "127.0.0.1:4000", "evil.example"
	rec = httptest.NewRecorder()
	ts.routes().ServeHTTP(rec, req)
	if rec.Code != 403 || !strings.Contains(rec.Body.String(), "host_refused") {
		t.Errorf("a rebound Host: %d %s", rec.Code, rec.Body)
	}
}
