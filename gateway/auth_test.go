package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/auth"
	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

var authSecret = []byte("test-secret-test-secret-test-secret")

// whoami tells each socket, on connect, what the room knows of it:
// "id|name|query|claims". A socket whose token says role "banned" is
// refused.
type whoami struct{}

func (whoami) OnConnect(ctx context.Context, r *rooms.Room, c *rooms.Conn) error {
	if c.Claims()["role"] == "banned" {
		return errors.New("banned")
	}
	claims, _ := json.Marshal(c.Claims())
	return c.SendText(fmt.Sprintf("%s|%s|%s|%s", c.User().ID, c.User().Name, c.Query().Encode(), claims))
}

func (whoami) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	return nil
}

// syncBuffer is a log destination the test reads while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// authServer runs a gateway that checks tokens signed with authSecret,
// logging everything at Debug into log.
func authServer(t *testing.T, o Options, leeway time.Duration) (*testServer, *syncBuffer) {
	t.Helper()
	v, err := auth.New(auth.Options{Secret: authSecret, Leeway: leeway})
	if err != nil {
		t.Fatal(err)
	}
	log := &syncBuffer{}
	rt := newRuntime(t, rooms.Options{}, map[string]func() rooms.Handler{
		"whoami": func() rooms.Handler { return whoami{} },
		"tagged": func() rooms.Handler { return tagged{} },
	})
	o.Router, o.Admin, o.Ready, o.Auth = rt, rt, rt.Ready, v
	o.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return startServer(t, o), log
}

func token(t *testing.T, c auth.Claims) string {
	t.Helper()
	if c.ExpiresAt.IsZero() {
		c.ExpiresAt = time.Now().Add(time.Hour)
	}
	tok, err := auth.Mint(auth.MintOptions{Secret: authSecret}, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawUpgrade sends an upgrade request for path with extra header lines,
// on a fresh connection or (keepAlive) after a plain request on it, which
// makes net/http and chi serve it. It returns the response and, after a
// 101, the connection to read frames from.
func rawUpgrade(t *testing.T, ts *testServer, path, headers string, keepAlive bool) (*http.Response, io.ReadWriter) {
	t.Helper()
	c, err := net.Dial("tcp", ts.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	if keepAlive {
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s\r\n", path, headers)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade %s: %v", path, err)
	}
	return resp, struct {
		io.Reader
		io.Writer
	}{br, c}
}

func errorCode(tb testing.TB, resp *http.Response) string {
	tb.Helper()
	defer resp.Body.Close()
	var e apiError
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error.Message == "" {
		tb.Fatalf("%d: body is not a JSON error: %v", resp.StatusCode, err)
	}
	return e.Error.Code
}

// TestTokensAtTheHandshake: with a key configured a socket opens only
// with a valid token that covers its room, on both upgrade paths, and the
// room sees the token's user and claims, never the token or ?user=.
func TestTokensAtTheHandshake(t *testing.T) {
	ts, log := authServer(t, Options{}, 0)
	alice := token(t, auth.Claims{Subject: "alice", Name: "Alice", Rooms: []string{"whoami/*"}, Extra: []byte(`{"role":"member"}`)})
	bob := token(t, auth.Claims{Subject: "bob", Rooms: []string{"whoami/lobby"}})
	expired := token(t, auth.Claims{Subject: "alice", Rooms: []string{"*"}, ExpiresAt: time.Now().Add(-time.Hour)})
	banned := token(t, auth.Claims{Subject: "eve", Rooms: []string{"*"}, Extra: []byte(`{"role":"banned"}`)})
	longName := token(t, auth.Claims{Subject: "x", Name: strings.Repeat("n", 65), Rooms: []string{"*"}})
	for _, keepAlive := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepAlive=%v", keepAlive), func(t *testing.T) {
			for _, tc := range []struct {
				name, path, headers string
				status              int
				code, kind          string
			}{
				{"no token", "/whoami/lobby", "", 401, "token_missing", "token_missing"},
				{"empty token", "/whoami/lobby?token=", "", 401, "token_missing", "token_missing"},
				{"garbage", "/whoami/lobby?token=abc.def.ghi", "", 401, "token_invalid", "token_invalid"},
				{"expired", "/whoami/lobby?token=" + expired, "", 401, "token_expired", "token_expired"},
				{"another room", "/whoami/den?token=" + bob, "", 403, "forbidden", "token_scope"},
				{"another class", "/echo/lobby?token=" + alice, "", 403, "forbidden", "token_scope"},
				{"two tokens", "/whoami/lobby?token=" + alice + "&token=" + alice, "", 401, "token_invalid", "token_invalid"},
				{"two headers", "/whoami/lobby", "Authorization: Bearer " + alice + "\r\nAuthorization: Bearer " + alice + "\r\n", 401, "token_invalid", "token_invalid"},
				{"bad header, no fallback", "/whoami/lobby", "Authorization: Bearer nonsense\r\n", 401, "token_invalid", "token_invalid"},
				{"name too long", "/whoami/lobby?token=" + longName, "", 401, "token_invalid", "token_invalid"},
				{"user cannot stand in for a token", "/whoami/lobby?user=alice", "", 401, "token_missing", "token_missing"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					before := ts.badInput(tc.kind)
					resp, _ := rawUpgrade(t, ts, "/ws"+tc.path, tc.headers, keepAlive)
					if code := errorCode(t, resp); resp.StatusCode != tc.status || code != tc.code {
						t.Fatalf("%d %q, want %d %q", resp.StatusCode, code, tc.status, tc.code)
					}
					if got := ts.badInput(tc.kind); got != before+1 {
						t.Fatalf("roomgate_bad_input_total{kind=%q} = %v, want %v", tc.kind, got, before+1)
					}
				})
			}
			for _, tc := range []struct {
				name, path, headers, want string
			}{
				{"query token", "/whoami/lobby?token=" + alice + "&user=mallory&name=M&since=4", "",
					`alice|Alice|since=4|{"role":"member"}`},
				{"bearer header", "/whoami/lobby?x=1", "Authorization: Bearer " + alice + "\r\n",
					`alice|Alice|x=1|{"role":"member"}`},
				{"header wins over query", "/whoami/lobby?token=" + bob, "Authorization: bearer " + alice + "\r\n",
					`alice|Alice||{"role":"member"}`},
				{"another scheme falls back to the query", "/whoami/lobby?token=" + bob, "Authorization: Basic Ym9iOnB3\r\n",
					`bob|bob||null`},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp, rw := rawUpgrade(t, ts, "/ws"+tc.path, tc.headers, keepAlive)
					if resp.StatusCode != http.StatusSwitchingProtocols {
						t.Fatalf("status %d (%s), want 101", resp.StatusCode, errorCode(t, resp))
					}
					got, err := wsutil.ReadServerText(rw)
					if err != nil || string(got) != tc.want {
						t.Fatalf("the room saw %q (%v), want %q", got, err, tc.want)
					}
				})
			}
		})
	}
	// A class refuses by claim after the upgrade: 4403.
	c := dial(t, ts, "/ws/whoami/lobby?token="+banned)
	testkit.ExpectClose(t, c, 4403)

	for _, tok := range []string{alice, bob, expired, banned} {
		if strings.Contains(log.String(), tok) || strings.Contains(log.String(), tok[strings.LastIndexByte(tok, '.')+1:]) {
			t.Fatalf("a token was logged:\n%s", log)
		}
	}
}

// TestTokenExpiryClosesWith4401: a socket whose token expires while it is
// open is closed with 4401 within about a second of the expiry.
func TestTokenExpiryClosesWith4401(t *testing.T) {
	ts, _ := authServer(t, Options{}, time.Millisecond)
	// exp has whole seconds: this token expires one to two seconds from now.
	exp := time.Now().Add(2 * time.Second)
	short := token(t, auth.Claims{Subject: "a", Rooms: []string{"echo/*"}, ExpiresAt: exp})
	long := token(t, auth.Claims{Subject: "b", Rooms: []string{"echo/*"}})
	c := dial(t, ts, "/ws/echo/x?token="+short)
	stays := dial(t, ts, "/ws/echo/x?token="+long)
	wsutil.WriteClientText(c, []byte("before"))
	if got, _, err := testkit.ReadData(t, c); err != nil || string(got) != "before" {
		t.Fatalf("echo before expiry: %q %v", got, err)
	}
	testkit.ExpectClose(t, c, 4401)
	if late := time.Since(exp.Truncate(time.Second)); late > 3*time.Second {
		t.Errorf("closed %v after the token expired", late)
	}
	wsutil.WriteClientText(stays, []byte("still here"))
	if got, _, err := testkit.ReadData(t, stays); err != nil || string(got) != "still here" {
		t.Fatalf("a socket with a valid token: %q %v", got, err)
	}
}

// TestClaimsSurviveHibernationThroughTheGateway: a class that admits
// admins by claim still sees the claim once the room slept and woke.
func TestClaimsSurviveHibernationThroughTheGateway(t *testing.T) {
	var ahead atomic.Int64
	reg := prometheus.NewRegistry()
	rt := newRuntime(t, rooms.Options{
		Metrics:        reg,
		HibernateAfter: time.Hour,
		Clock:          func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) },
	}, map[string]func() rooms.Handler{"staff": func() rooms.Handler { return staffOnly{} }})
	v, err := auth.New(auth.Options{Secret: authSecret})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Options{Router: rt, Admin: rt, Metrics: reg, Auth: v})
	member := dial(t, ts, "/ws/staff/office?token="+token(t, auth.Claims{Subject: "m", Rooms: []string{"*"}, Extra: []byte(`{"role":"member"}`)}))
	testkit.ExpectClose(t, member, 4403)
	admin := dial(t, ts, "/ws/staff/office?token="+token(t, auth.Claims{Subject: "a", Rooms: []string{"*"}, Extra: []byte(`{"role":"admin"}`)}))
	if got, err := roundTrip(admin, "role?"); err != nil || got != "admin" {
		t.Fatalf("role before hibernation: %q %v", got, err)
	}
	testkit.Eventually(t, 30*time.Second, func() error {
		if n := metric(t, reg, "roomgate_rooms_running", ""); n != 0 {
			return errorf("%v rooms still running", n)
		}
		return nil
	})
	ahead.Add(int64(2 * time.Hour))
	testkit.Eventually(t, 30*time.Second, func() error {
		if n := metric(t, reg, "roomgate_rooms", "active"); n != 0 {
			return errorf("%v rooms still active", n)
		}
		return nil
	})
	if got, err := roundTrip(admin, "role?"); err != nil || got != "admin" {
		t.Fatalf("role after the room woke: %q %v", got, err)
	}
}

// staffOnly admits sockets whose token says role "admin" and answers any
// message with that role.
type staffOnly struct{}

func (staffOnly) OnConnect(ctx context.Context, r *rooms.Room, c *rooms.Conn) error {
	if c.Claims()["role"] != "admin" {
		return errors.New("staff only")
	}
	return nil
}

func (staffOnly) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	role, _ := c.Claims()["role"].(string)
	return c.SendText(role)
}

// TestAdminAPIWithKey: with a key configured, the admin API needs an admin
// token in the Authorization header, from any peer, loopback included;
// health, readiness and metrics stay open.
func TestAdminAPIWithKey(t *testing.T) {
	ts, _ := authServer(t, Options{}, 0)
	admin := token(t, auth.Claims{Subject: "ops", Admin: true})
	user := token(t, auth.Claims{Subject: "u", Rooms: []string{"*"}})
	for _, tc := range []struct {
		name, auth, path string
		status           int
		code, kind       string
	}{
		{"no token", "", "/v1/classes", 401, "token_missing", "token_missing"},
		{"bad token", "Bearer x.y.z", "/v1/classes", 401, "token_invalid", "token_invalid"},
		{"not bearer", "Basic YWRtaW46YWRtaW4=", "/v1/classes", 401, "token_missing", "token_missing"},
		{"token in the query", "", "/v1/classes?token=" + admin, 401, "token_missing", "token_missing"},
		{"not an admin", "Bearer " + user, "/v1/classes", 403, "admin_required", "not_admin"},
		{"admin", "Bearer " + admin, "/v1/classes", 200, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.badInput(tc.kind)
			req, _ := http.NewRequest("GET", ts.http+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			checkAnswer(t, ts, resp, tc.status, tc.code, tc.kind, before)
		})
	}
	// An admin token broadcasts with any body type: no page of another
	// site can send the Authorization header without a preflight.
	c := dial(t, ts, "/ws/tagged/r?token="+user)
	testkit.Eventually(t, 5*time.Second, func() error {
		req, _ := http.NewRequest("POST", ts.http+"/v1/rooms/tagged/r/broadcast", strings.NewReader("hello"))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "text/plain")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 204 {
			return fmt.Errorf("broadcast: %d", resp.StatusCode)
		}
		return nil
	})
	if got, _, err := testkit.ReadData(t, c); err != nil || string(got) != "hello" {
		t.Fatalf("broadcast with an admin token: %q %v", got, err)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if resp, _ := httpGet(t, ts.http+path); resp.StatusCode != 200 {
			t.Errorf("%s without a token: %d", path, resp.StatusCode)
		}
	}
}

// TestAdminAPIInDevMode: without a key the admin API answers only this
// machine, addressed by a loopback name, with nothing a page of another
// site could send: these are the attacks that worked before, each refused
// and counted.
func TestAdminAPIInDevMode(t *testing.T) {
	ts := restServer(t)
	red := dial(t, ts, "/ws/tagged/r?tag=red")
	testkit.Eventually(t, 5*time.Second, func() error {
		var conns struct{ Connections []rooms.ConnInfo }
		call(t, ts, "GET", "/v1/rooms/tagged/r/connections", "", &conns)
		if len(conns.Connections) != 1 {
			return fmt.Errorf("%d of 1 socket in the room", len(conns.Connections))
		}
		return nil
	})
	port := ts.Addr().(*net.TCPAddr).Port
	own := fmt.Sprintf("http://127.0.0.1:%d", port)
	const broadcast = "/v1/rooms/tagged/r/broadcast"
	for _, tc := range []struct {
		name, method, path string
		headers            map[string]string
		status             int
		code, kind         string
	}{
		{"a reverse proxy's Host", "GET", "/v1/classes", map[string]string{"Host": "evil.example"}, 403, "host_refused", "admin_host"},
		{"DNS rebinding", "DELETE", "/v1/rooms/tagged/r", map[string]string{"Host": fmt.Sprintf("rebind.evil.example:%d", port)}, 403, "host_refused", "admin_host"},
		{"a proxy's forwarding header", "GET", "/v1/classes", map[string]string{"X-Forwarded-For": "203.0.113.9"}, 403, "forbidden", "admin_remote"},
		{"a proxy's Via", "GET", "/v1/classes", map[string]string{"Via": "1.1 proxy"}, 403, "forbidden", "admin_remote"},
		{"a cross-site text/plain POST", "POST", broadcast, map[string]string{"Content-Type": "text/plain"}, 403, "cross_site", "cross_site"},
		{"a cross-site form", "POST", broadcast, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 403, "cross_site", "cross_site"},
		{"a multipart POST", "POST", broadcast, map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, 403, "cross_site", "cross_site"},
		{"a text/plain POST with parameters", "POST", broadcast, map[string]string{"Content-Type": "Text/Plain; charset=utf-8"}, 403, "cross_site", "cross_site"},
		{"a POST without a type", "POST", broadcast, nil, 403, "cross_site", "cross_site"},
		{"an unparsable type", "POST", broadcast, map[string]string{"Content-Type": "text/plain;;="}, 403, "cross_site", "cross_site"},
		{"another site's Origin", "POST", broadcast, map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, 403, "cross_site", "cross_site"},
		{"a null Origin", "POST", broadcast, map[string]string{"Content-Type": "application/json", "Origin": "null"}, 403, "cross_site", "cross_site"},
		{"Sec-Fetch-Site cross-site", "GET", "/v1/classes", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "cross_site", "cross_site"},
		{"Sec-Fetch-Site same-site", "DELETE", "/v1/rooms/tagged/r", map[string]string{"Sec-Fetch-Site": "same-site"}, 403, "cross_site", "cross_site"},
		{"a JSON POST", "POST", broadcast, map[string]string{"Content-Type": "application/json"}, 204, "", ""},
		{"a binary POST from this origin", "POST", broadcast, map[string]string{"Content-Type": "application/octet-stream", "Origin": own, "Sec-Fetch-Site": "same-origin"}, 204, "", ""},
		{"localhost", "GET", "/v1/classes", map[string]string{"Host": fmt.Sprintf("localhost:%d", port)}, 200, "", ""},
		{"[::1]", "GET", "/v1/classes", map[string]string{"Host": "[::1]"}, 200, "", ""},
		{"a DELETE without a type", "DELETE", "/v1/rooms/counter/none", nil, 204, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.badInput(tc.kind)
			req, _ := http.NewRequest(tc.method, ts.http+tc.path, strings.NewReader("sneaky"))
			for k, v := range tc.headers {
				if k == "Host" {
					req.Host = v
				} else {
					req.Header.Set(k, v)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status/100 == 2 {
				resp.Body.Close()
				return
			}
			if code := errorCode(t, resp); code != tc.code {
				t.Fatalf("code %q, want %q", code, tc.code)
			}
			if got := ts.badInput(tc.kind); got != before+1 {
				t.Fatalf("roomgate_bad_input_total{kind=%q} = %v, want %v", tc.kind, got, before+1)
			}
		})
	}
	// Only the two admitted broadcasts reached the socket.
	for range 2 {
		if got, _, err := testkit.ReadData(t, red); err != nil || string(got) != "sneaky" {
			t.Fatalf("admitted broadcast: %q %v", got, err)
		}
	}
	noMessage(t, red)
}

// A token meant never to expire (exp in the year 3000, past where Unix
// nanoseconds end in 2262) keeps its socket open: its expiry used to wrap
// around to the past, and the janitor closed it with 4401 within a second.
// Its socket now holds no deadline at all, which the janitor skips.
func TestTokenFarInTheFutureDoesNotExpire(t *testing.T) {
	ts, _ := authServer(t, Options{}, time.Millisecond)
	far := token(t, auth.Claims{Subject: "a", Rooms: []string{"echo/*"}, ExpiresAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)})
	c := dial(t, ts, "/ws/echo/x?token="+far)
	wsutil.WriteClientText(c, []byte("hello"))
	if got, _, err := testkit.ReadData(t, c); err != nil || string(got) != "hello" {
		t.Fatalf("echo: %q %v", got, err)
	}
	n := 0
	ts.fds.each(func(sk *socket) {
		n++
		if exp := sk.expires.Load(); exp != 0 {
			t.Errorf("the socket's token expires at %v, want never (0)", time.Unix(0, exp))
		}
	})
	if n != 1 {
		t.Fatalf("%d sockets open, want 1", n)
	}
}

// checkAnswer fails unless resp has status and, for a refusal, the JSON
// error code, a WWW-Authenticate header on a 401, and one more count of
// kind in roomgate_bad_input_total than before.
func checkAnswer(t *testing.T, ts *testServer, resp *http.Response, status int, code, kind string, before float64) {
	t.Helper()
	if resp.StatusCode != status {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("status %d %s, want %d", resp.StatusCode, b, status)
	}
	if status == 200 {
		resp.Body.Close()
		return
	}
	if got := errorCode(t, resp); got != code {
		t.Fatalf("code %q, want %q", got, code)
	}
	if status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
		t.Error("a 401 without WWW-Authenticate")
	}
	if got := ts.badInput(kind); got != before+1 {
		t.Fatalf("roomgate_bad_input_total{kind=%q} = %v, want %v", kind, got, before+1)
	}
}
