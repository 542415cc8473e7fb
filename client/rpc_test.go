package client_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/roomgate/roomgate/client"
)

// rpcRoom is a handler of DESIGN §1's RPC contract, for a counter room:
// POST /v1/rooms/{class}/{room}/rpc/{method}, a JSON body in,
// {"result":…} out, a user error as a 4xx with its code, anything else a
// 500, an unknown method 404 no_such_method. It stands in for a node with
// RPC until the node has it; TestRPCOnRealNode calls the real one.
type rpcRoom struct {
	mu     sync.Mutex
	counts map[string]int
	bodies []string
}

func (h *rpcRoom) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/rooms/"), "/")
	if r.Method != http.MethodPost || len(parts) != 4 || parts[2] != "rpc" {
		refuse(w, http.StatusNotFound, client.CodeNotFound)
		return
	}
	if r.Header.Get("Content-Type") != "application/json" {
		refuse(w, http.StatusForbidden, client.CodeCrossSite)
		return
	}
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bodies = append(h.bodies, string(body))
	room := parts[0] + "/" + parts[1]
	switch parts[3] {
	case "increment":
		var args *struct{ By int }
		if err := json.Unmarshal(body, &args); err != nil {
			refuse(w, http.StatusBadRequest, client.CodeBadRequest)
			return
		}
		by := 1
		if args != nil {
			by = args.By
		}
		if by < 0 {
			refuse(w, http.StatusConflict, "negative_step") // a user error, with the class's code
			return
		}
		h.counts[room] += by
		json.NewEncoder(w).Encode(map[string]any{"result": h.counts[room]})
	case "reset":
		h.counts[room] = 0
		io.WriteString(w, `{"result":null}`)
	case "panic":
		refuse(w, http.StatusInternalServerError, client.CodeRoomFailed)
	default:
		refuse(w, http.StatusNotFound, client.CodeNoSuchMethod)
	}
}

// TestCall: arguments go as JSON, the result comes back decoded, and the
// method's errors come back as *Error with the class's code.
func TestCall(t *testing.T) {
	h := &rpcRoom{counts: map[string]int{}}
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, call int) { h.ServeHTTP(w, r) })
	c := mustNew(t, f.URL, fast)
	ctx := ctx(t)
	x := c.Room("counter", "x")

	var n int
	if err := x.Call(ctx, "increment", map[string]int{"by": 2}, &n); err != nil || n != 2 {
		t.Fatalf("increment by 2: %d, %v", n, err)
	}
	if err := x.Call(ctx, "increment", nil, &n); err != nil || n != 3 {
		t.Fatalf("increment with no args: %d, %v", n, err)
	}
	if err := x.Call(ctx, "increment", json.RawMessage(`{"By":10}`), &n); err != nil || n != 13 {
		t.Fatalf("increment with raw JSON: %d, %v", n, err)
	}
	if err := c.Room("counter", "y").Call(ctx, "increment", struct{ By int }{5}, &n); err != nil || n != 5 {
		t.Fatalf("another room: %d, %v", n, err)
	}
	if err := x.Call(ctx, "increment", nil, nil); err != nil {
		t.Fatalf("a nil reply discards the result: %v", err)
	}
	n = 99
	if err := x.Call(ctx, "reset", nil, &n); err != nil || n != 99 {
		t.Fatalf("a null result leaves the reply: %d, %v", n, err)
	}

	wantError(t, "user error", x.Call(ctx, "increment", map[string]int{"by": -1}, &n), http.StatusConflict, "negative_step")
	wantError(t, "bad args", x.Call(ctx, "increment", "many", &n), http.StatusBadRequest, client.CodeBadRequest)
	wantError(t, "panic", x.Call(ctx, "panic", nil, nil), http.StatusInternalServerError, client.CodeRoomFailed)
	err := x.Call(ctx, "decrement", nil, nil)
	wantError(t, "unknown method", err, http.StatusNotFound, client.CodeNoSuchMethod)
	if !client.IsNotFound(err) {
		t.Error("an unknown method is not IsNotFound")
	}

	var wrong string
	if err := x.Call(ctx, "increment", nil, &wrong); err == nil || errors.As(err, new(*client.Error)) {
		t.Errorf("a result that does not fit the reply: %v, want a decode error", err)
	}
	if err := x.Call(ctx, "increment", func() {}, nil); err == nil {
		t.Error("arguments that cannot be JSON were sent")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if got := h.bodies[1]; got != "null" {
		t.Errorf("nil args sent %q, want null", got)
	}
}
