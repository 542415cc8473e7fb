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

func errorCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var e apiError
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error.Message == "" {
		t.Fatalf("%d: body is not a JSON error: %v", resp.StatusCode, err)
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
