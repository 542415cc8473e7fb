package client_test

import (
	"context"
	"errors"
	"net/http"
	"os/exec"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomgate/roomgate/client"
	"github.com/roomgate/roomgate/internal/testkit"
)

// TestAuth: a node with a key answers the admin API only to an admin
// token, and the client's refusals carry the codes of README's REST
// section.
func TestAuth(t *testing.T) {
	n := startNode(t, true)
	ctx := ctx(t)
	admin := token(t, "-sub", "ops", "-admin")
	for _, tc := range []struct {
		name   string
		o      client.Options
		status int
		code   string
	}{
		{"no token", client.Options{}, http.StatusUnauthorized, client.CodeTokenMissing},
		{"not a token", client.Options{Token: "garbage"}, http.StatusUnauthorized, client.CodeTokenInvalid},
		{"a user's token", client.Options{Token: token(t, "-sub", "alice", "-rooms", "chat/*")}, http.StatusForbidden, client.CodeAdminRequired},
		{"an admin's token", client.Options{Token: admin}, 0, ""},
		{"an admin's token from a function", client.Options{TokenFunc: func(context.Context) (string, error) { return admin, nil }}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, n.url, tc.o)
			classes, err := c.Classes(ctx)
			if tc.status == 0 {
				if err != nil || !slices.Contains(classes, "chat") {
					t.Fatalf("Classes = %v, %v", classes, err)
				}
				return
			}
			wantError(t, "Classes", err, tc.status, tc.code)
		})
	}
}

// TestTokenFunc: the function is asked before every call, and its error
// fails the call at once, sending nothing.
func TestTokenFunc(t *testing.T) {
	n := startNode(t, true)
	ctx := ctx(t)
	var asked atomic.Int32
	broken := errors.New("token service down")
	c := mustNew(t, n.url, client.Options{TokenFunc: func(context.Context) (string, error) {
		if asked.Add(1) == 3 {
			return "", broken
		}
		return token(t, "-sub", "ops", "-admin"), nil
	}})
	for range 2 {
		if _, err := c.Nodes(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Nodes(ctx); !errors.Is(err, broken) {
		t.Fatalf("with the token function failing: %v", err)
	}
	if got := asked.Load(); got != 3 {
		t.Errorf("TokenFunc called %d times for 3 calls, the failed one not retried", got)
	}
}

// TestRetryAcrossNodeStart: a call made before the node listens is
// retried (the connection could not be opened, so nothing was sent) until
// the node answers, a broadcast as well as a GET.
func TestRetryAcrossNodeStart(t *testing.T) {
	addr := testkit.FreeAddr(t)
	c := mustNew(t, "http://"+addr, client.Options{MaxAttempts: 1000, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	ctx := ctx(t)
	got := make(chan error, 2)
	go func() { _, err := c.Classes(ctx); got <- err }()
	go func() { got <- c.Room("chat", "early").Broadcast(ctx, []byte(`{"type":"early"}`)) }()
	select {
	case err := <-got:
		t.Fatalf("a call returned before the node started: %v", err)
	case <-time.After(300 * time.Millisecond): // time must pass: the calls keep trying
	}
	testkit.StartProcess(t, exec.Command(binary, "-addr", addr, "-data", t.TempDir(), "-log-level", "warn"))
	for range 2 {
		if err := <-got; err != nil {
			t.Errorf("call across the node's start: %v", err)
		}
	}
}

// TestRPCOnRealNode: a method a built-in class does not have is a 404
// *Error: no_such_method once the node serves RPC (not_found from the
// router of a node without the route).
func TestRPCOnRealNode(t *testing.T) {
	n := startNode(t, false)
	ctx := ctx(t)
	var reply int
	err := n.client(t).Room("counter", "x").Call(ctx, "increment", map[string]int{"by": 1}, &reply)
	var e *client.Error
	if !errors.As(err, &e) || e.Status != http.StatusNotFound {
		t.Fatalf("Call of a method counter lacks: %v, want a 404 *Error", err)
	}
	if e.Code != client.CodeNoSuchMethod {
		t.Errorf("code %q, want no_such_method", e.Code)
	}
}
