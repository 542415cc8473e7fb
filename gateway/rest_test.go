package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

// tagged tags each socket with its ?tag= values and answers HTTP requests.
type tagged struct{}

func (tagged) OnConnect(ctx context.Context, r *rooms.Room, c *rooms.Conn) error {
	return c.SetTags(c.Query()["tag"]...)
}
func (tagged) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	return r.Storage().Put("last", f.Data)
}
func (tagged) OnRequest(ctx context.Context, r *rooms.Room, w http.ResponseWriter, req *http.Request) error {
	body, _ := io.ReadAll(req.Body)
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%s %s %s", req.Method, req.URL.Path, body)
	return nil
}

func restServer(t *testing.T) *testServer {
	rt := newRuntime(t, rooms.Options{}, map[string]func() rooms.Handler{"tagged": func() rooms.Handler { return tagged{} }})
	return startServer(t, Options{Router: rt, Admin: rt, MaxMessageBytes: 1024})
}

// call does one REST request and decodes a JSON answer into out (when set).
func call(t *testing.T, ts *testServer, method, path, body string, out any) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, ts.http+path, strings.NewReader(body))
	if method == "POST" {
		// In dev mode a POST needs a type no page of another site could
		// send without a preflight; JSON keeps a broadcast a text message.
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, b)
		}
	}
	return resp
}

type apiError struct {
	Error struct{ Code, Message string }
}

func expectError(t *testing.T, ts *testServer, method, path, body string, status int, code string) {
	t.Helper()
	var e apiError
	resp := call(t, ts, method, path, body, &e)
	if resp.StatusCode != status || e.Error.Code != code || e.Error.Message == "" {
		t.Errorf("%s %s: %d %+v, want %d %q", method, path, resp.StatusCode, e, status, code)
	}
}

func TestRESTRooms(t *testing.T) {
	ts := restServer(t)
	var classes struct{ Classes []string }
	call(t, ts, "GET", "/v1/classes", "", &classes)
	if strings.Join(classes.Classes, ",") != "canvas,chat,counter,echo,tagged" {
		t.Fatalf("classes: %v", classes)
	}
	// Three stored rooms and one with only a socket.
	for _, room := range []string{"c1", "c2", "c3"} {
		c := dial(t, ts, "/ws/counter/"+room)
		readMsg(t, c)
		sendText(t, c, "inc")
		readMsg(t, c)
		c.Close()
	}
	live := dial(t, ts, "/ws/chat/live?user=u1&name=Una")
	readType(t, live, "welcome")

	var page struct {
		Rooms      []rooms.RoomInfo
		NextCursor string `json:"next_cursor"`
	}
	call(t, ts, "GET", "/v1/rooms?limit=2", "", &page)
	if len(page.Rooms) != 2 || page.Rooms[0].Room != "live" || page.Rooms[1].Room != "c1" || page.NextCursor != "counter/c1" {
		t.Fatalf("page 1: %+v", page)
	}
	call(t, ts, "GET", "/v1/rooms?limit=2&cursor="+page.NextCursor, "", &page)
	if len(page.Rooms) != 2 || page.Rooms[0].Room != "c2" || page.Rooms[1].Room != "c3" || page.NextCursor != "" {
		t.Fatalf("page 2, the last: %+v", page)
	}
	call(t, ts, "GET", "/v1/rooms?class=counter&prefix=c2", "", &page)
	if len(page.Rooms) != 1 || page.Rooms[0].Room != "c2" {
		t.Fatalf("class and prefix: %+v", page)
	}

	var info rooms.RoomInfo
	call(t, ts, "GET", "/v1/rooms/chat/live", "", &info)
	if info.State != "active" || info.Connections != 1 || info.Owner == "" {
		t.Fatalf("live room: %+v", info)
	}
	call(t, ts, "GET", "/v1/rooms/counter/c1", "", &info)
	if info.StorageKeys != 1 || info.StorageBytes != int64(len("value")+1) || info.Alarm != nil {
		t.Fatalf("stored room: %+v", info)
	}

	var conns struct{ Connections []rooms.ConnInfo }
	call(t, ts, "GET", "/v1/rooms/chat/live/connections", "", &conns)
	if len(conns.Connections) != 1 || conns.Connections[0].User.Name != "Una" || len(conns.Connections[0].ID) != 16 ||
		conns.Connections[0].ConnectedAt.IsZero() {
		t.Fatalf("connections: %+v", conns)
	}
	if resp := call(t, ts, "DELETE", "/v1/rooms/chat/live/connections/"+conns.Connections[0].ID, "", nil); resp.StatusCode != 204 {
		t.Fatalf("kick: %d", resp.StatusCode)
	}
	testkit.ExpectClose(t, live, 4403)
	expectError(t, ts, "DELETE", "/v1/rooms/chat/live/connections/0000000000000001", "", 404, "socket_not_found")
	expectError(t, ts, "DELETE", "/v1/rooms/chat/live/connections/nope", "", 404, "socket_not_found")

	var items struct {
		Items []struct{ Key, Value string }
	}
	call(t, ts, "GET", "/v1/rooms/counter/c1/storage", "", &items)
	if len(items.Items) != 1 || items.Items[0].Key != "value" || items.Items[0].Value != "1" {
		t.Fatalf("storage: %+v", items)
	}

	// Delete closes the room's sockets with 4404 and wipes its storage; twice is fine.
	c := dial(t, ts, "/ws/counter/c2")
	readMsg(t, c)
	for range 2 {
		if resp := call(t, ts, "DELETE", "/v1/rooms/counter/c2", "", nil); resp.StatusCode != 204 {
			t.Fatalf("delete: %d", resp.StatusCode)
		}
	}
	testkit.ExpectClose(t, c, 4404)
	call(t, ts, "GET", "/v1/rooms/counter/c2/storage", "", &items)
	if len(items.Items) != 0 {
		t.Fatalf("storage after delete: %+v", items)
	}

	var nodes struct{ Nodes []rooms.NodeInfo }
	call(t, ts, "GET", "/v1/nodes", "", &nodes)
	if len(nodes.Nodes) != 1 || nodes.Nodes[0].StartedAt.IsZero() {
		t.Fatalf("nodes: %+v", nodes)
	}
}

// badInputTotals reads roomgate_bad_input_total for each of kinds.
func badInputTotals(ts *testServer, kinds []string) map[string]float64 {
	m := make(map[string]float64, len(kinds))
	for _, k := range kinds {
		m[k] = ts.badInput(k)
	}
	return m
}

func TestRESTBroadcastAndRequest(t *testing.T) {
	ts := restServer(t)
	red := dial(t, ts, "/ws/tagged/r?tag=red")
	blue := dial(t, ts, "/ws/tagged/r?tag=blue&tag=team")
	// The 101 reaches a client before its room has taken the socket in; a
	// broadcast queued before that would rightly miss it.
	testkit.Eventually(t, 5*time.Second, func() error {
		var conns struct{ Connections []rooms.ConnInfo }
		call(t, ts, "GET", "/v1/rooms/tagged/r/connections", "", &conns)
		if len(conns.Connections) != 2 {
			return fmt.Errorf("%d of 2 sockets in the room", len(conns.Connections))
		}
		return nil
	})
	if resp := call(t, ts, "POST", "/v1/rooms/tagged/r/broadcast", "to all", nil); resp.StatusCode != 204 {
		t.Fatalf("broadcast: %d", resp.StatusCode)
	}
	if b, _, _ := testkit.ReadData(t, red); string(b) != "to all" {
		t.Fatalf("red got %q", b)
	}
	if b, _, _ := testkit.ReadData(t, blue); string(b) != "to all" {
		t.Fatalf("blue got %q", b)
	}
	call(t, ts, "POST", "/v1/rooms/tagged/r/broadcast?tag=team", "team only", nil)
	if b, _, _ := testkit.ReadData(t, blue); string(b) != "team only" {
		t.Fatalf("blue got %q", b)
	}
	noMessage(t, red)
	expectError(t, ts, "POST", "/v1/rooms/tagged/r/broadcast", strings.Repeat("x", 1025), 413, "too_big")

	req, _ := http.NewRequest("PUT", ts.http+"/v1/rooms/tagged/r/request/a/b?q=1", strings.NewReader("payload"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "PUT /a/b payload" {
		t.Fatalf("request: %d %q", resp.StatusCode, body)
	}
	expectError(t, ts, "GET", "/v1/rooms/counter/x/request/", "", 404, "no_request_handler")
}

// TestRESTBadInput checks each refusal's status and code, and that the
// client's mistakes, and only those, grow roomgate_bad_input_total by one
// (DESIGN §3.6). A room or route that does not exist is no mistake.
func TestRESTBadInput(t *testing.T) {
	ts := restServer(t)
	big := strings.Repeat("x", 1025) // restServer's MaxMessageBytes is 1024
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
		kind                     string // "": no kind may grow
	}{
		{"upper-case class", "GET", "/v1/rooms/Bad/x", "", 400, "bad_name", "bad_name"},
		{"long room", "GET", "/v1/rooms/chat/" + strings.Repeat("r", 129), "", 400, "bad_name", "bad_name"},
		{"space in room", "GET", "/v1/rooms/chat/a%20b", "", 400, "bad_name", "bad_name"},
		{"unknown class", "GET", "/v1/rooms/nope/x", "", 404, "unknown_class", "unknown_class"},
		{"unknown class under a room", "GET", "/v1/rooms/nope/x/storage", "", 404, "unknown_class", "unknown_class"},
		{"room never seen", "GET", "/v1/rooms/chat/never", "", 404, "room_not_found", ""},
		{"limit zero", "GET", "/v1/rooms?limit=0", "", 400, "bad_request", "bad_request"},
		{"limit not a number", "GET", "/v1/rooms?limit=x", "", 400, "bad_request", "bad_request"},
		{"limit too high", "GET", "/v1/rooms?limit=5000", "", 400, "bad_request", "bad_request"},
		{"bad cursor", "GET", "/v1/rooms?cursor=nonsense", "", 400, "bad_request", "bad_request"},
		{"bad class filter", "GET", "/v1/rooms?class=Bad", "", 400, "bad_name", "bad_name"},
		{"storage limit too high", "GET", "/v1/rooms/chat/x/storage?limit=5000", "", 400, "bad_request", "bad_request"},
		{"storage limit zero", "GET", "/v1/rooms/chat/x/storage?limit=0", "", 400, "bad_request", "bad_request"},
		{"broadcast too big", "POST", "/v1/rooms/tagged/r/broadcast", big, 413, "too_big", "too_big"},
		{"request too big", "PUT", "/v1/rooms/tagged/r/request/a", big, 413, "too_big", "too_big"},
		{"unparsable socket id", "DELETE", "/v1/rooms/chat/x/connections/nope", "", 404, "socket_not_found", "bad_request"},
		{"socket gone", "DELETE", "/v1/rooms/chat/x/connections/0000000000000001", "", 404, "socket_not_found", ""},
		{"no route", "GET", "/v1/nothing", "", 404, "not_found", ""},
		{"wrong method", "PATCH", "/v1/rooms/chat/x", "", 405, "method_not_allowed", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kinds := badInputKinds
			if tc.kind != "" && !slices.Contains(kinds, tc.kind) {
				kinds = append(slices.Clone(kinds), tc.kind) // unregistered: it must still grow
			}
			before := badInputTotals(ts, kinds)
			expectError(t, ts, tc.method, tc.path, tc.body, tc.status, tc.code)
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
	// The admin API answers loopback clients only, until tokens exist.
	req := httptest.NewRequest("GET", "/v1/classes", nil)
	req.RemoteAddr = "203.0.113.7:4000"
	rec := httptest.NewRecorder()
	ts.routes().ServeHTTP(rec, req)
	var e apiError
	json.Unmarshal(rec.Body.Bytes(), &e)
	if rec.Code != 403 || e.Error.Code != "forbidden" {
		t.Fatalf("remote admin: %d %s", rec.Code, rec.Body)
	}
}
