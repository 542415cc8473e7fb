package client_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/client"
	"github.com/roomgate/roomgate/internal/testkit"
)

// wantError checks that err is an *Error with status and code.
func wantError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: err = %v, want an *Error %d %s", what, err, status, code)
	}
	if e.Status != status || e.Code != code {
		t.Fatalf("%s: got %d %q (%s), want %d %q", what, e.Status, e.Code, e.Message, status, code)
	}
	if client.CodeOf(err) != code {
		t.Fatalf("%s: CodeOf = %q, want %q", what, client.CodeOf(err), code)
	}
}

// TestAdminCalls walks every admin call against a real node in dev mode,
// with two chat sockets open so that each has something to show.
func TestAdminCalls(t *testing.T) {
	n := startNode(t, false)
	c := n.client(t)
	ctx := ctx(t)

	classes, err := c.Classes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"canvas", "chat", "counter", "echo"} {
		if !slices.Contains(classes, want) {
			t.Errorf("Classes = %v, missing %s", classes, want)
		}
	}

	alice := n.dial(t, "chat", "lobby", "alice", "")
	nextType(t, alice, "welcome")
	bob := n.dial(t, "chat", "lobby", "bob", "")
	nextType(t, bob, "welcome")
	nextType(t, alice, "join")
	say(t, alice, "hello")

	nodes, err := c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].ID == "" || nodes[0].StartedAt.IsZero() {
		t.Fatalf("Nodes = %+v, want this one node", nodes)
	}
	lobby := c.Room("chat", "lobby")
	if lobby.Class() != "chat" || lobby.Name() != "lobby" {
		t.Errorf("stub names %s/%s", lobby.Class(), lobby.Name())
	}
	info, err := lobby.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Class != "chat" || info.Room != "lobby" || info.State != "active" || info.Connections != 2 ||
		info.Owner != nodes[0].ID || info.StorageKeys == 0 || info.StorageBytes == 0 {
		t.Errorf("Info = %+v, want chat/lobby active on %s with 2 connections and storage", info, nodes[0].ID)
	}

	page, err := c.Rooms(ctx, client.RoomsQuery{Class: "chat"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Rooms) != 1 || page.Rooms[0].Room != "lobby" || page.Rooms[0].Connections != 2 || page.NextCursor != "" {
		t.Errorf("Rooms = %+v, want chat/lobby alone", page)
	}

	conns, err := lobby.Connections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]client.Connection{}
	for _, cn := range conns {
		users[cn.User.ID] = cn
	}
	if len(conns) != 2 || users["alice"].ID == "" || users["bob"].User.Name != "bob" ||
		users["alice"].Edge != nodes[0].ID || users["alice"].ConnectedAt.IsZero() {
		t.Fatalf("Connections = %+v, want alice and bob at %s", conns, nodes[0].ID)
	}

	items, err := lobby.Storage(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) == 0 || !slices.ContainsFunc(items, func(it client.Item) bool { return bytes.Contains(it.Value, []byte("hello")) }) {
		t.Errorf("Storage = %q, want the message hello among its values", items)
	}
	one, err := lobby.Storage(ctx, items[0].Key, 1)
	if err != nil || len(one) != 1 || one[0].Key != items[0].Key {
		t.Errorf("Storage(%q, 1) = %q, %v", items[0].Key, one, err)
	}

	// A text broadcast reaches both sockets as text.
	note := []byte(`{"type":"note","text":"maintenance at 5"}`)
	if err := lobby.Broadcast(ctx, note); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]net.Conn{"alice": alice, "bob": bob} {
		next(t, s, name+"'s note", func(data []byte, op ws.OpCode) bool {
			if bytes.Equal(data, note) && op != ws.OpText {
				t.Errorf("%s got the note as %v, want text", name, op)
			}
			return bytes.Equal(data, note)
		})
	}
	// One tagged for nobody goes to nobody: the next broadcast is what
	// alice gets first, as broadcasts keep their order.
	if err := lobby.Broadcast(ctx, []byte(`{"type":"secret"}`), client.Tag("mods")); err != nil {
		t.Fatal(err)
	}
	after := []byte(`{"type":"after"}`)
	if err := lobby.Broadcast(ctx, after); err != nil {
		t.Fatal(err)
	}
	got := next(t, alice, "a broadcast", func(data []byte, op ws.OpCode) bool {
		return bytes.Equal(data, after) || bytes.Contains(data, []byte("secret"))
	})
	if !bytes.Equal(got, after) {
		t.Errorf("alice got %q, a broadcast tagged mods, which she is not", got)
	}
	// Binary stays binary, even when it is valid UTF-8.
	if err := lobby.Broadcast(ctx, []byte("raw"), client.Binary()); err != nil {
		t.Fatal(err)
	}
	next(t, alice, "the binary broadcast", func(data []byte, op ws.OpCode) bool {
		if string(data) == "raw" && op != ws.OpBinary {
			t.Errorf("binary broadcast came as %v", op)
		}
		return string(data) == "raw"
	})

	// Kick closes bob's socket with 4403; once the room has seen it go
	// (its OnClose ran), a second kick finds no socket.
	if err := lobby.Kick(ctx, users["bob"].ID); err != nil {
		t.Fatal(err)
	}
	testkit.ExpectClose(t, bob, 4403)
	testkit.Eventually(t, 10*time.Second, func() error {
		if err := lobby.Kick(ctx, users["bob"].ID); client.CodeOf(err) != client.CodeSocketNotFound {
			return fmt.Errorf("kick again: %v, want socket_not_found", err)
		}
		return nil
	})
	wantError(t, "kick again", lobby.Kick(ctx, users["bob"].ID), http.StatusNotFound, client.CodeSocketNotFound)
	if !client.IsNotFound(lobby.Kick(ctx, "not-an-id")) {
		t.Error("kicking a malformed id is not a 404")
	}

	// Delete closes alice's socket with 4404 and empties the room's
	// storage (the instance may stay in memory until it hibernates, so
	// Info may still find it, empty); a second delete is no error.
	if err := lobby.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.ExpectClose(t, alice, 4404)
	if items, err := lobby.Storage(ctx, "", 0); err != nil || len(items) != 0 {
		t.Errorf("Storage after Delete = %q, %v", items, err)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		info, err := lobby.Info(ctx)
		if client.CodeOf(err) != client.CodeRoomNotFound && (err != nil || info.Connections != 0 || info.StorageKeys != 0) {
			return fmt.Errorf("Info after Delete: %+v, %v, want an empty room or room_not_found", info, err)
		}
		return nil
	})
	if err := lobby.Delete(ctx); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

// TestAdminErrors: the node's refusals come back as *Error with their
// status and code.
func TestAdminErrors(t *testing.T) {
	n := startNode(t, false)
	c := n.client(t)
	ctx := ctx(t)
	for _, tc := range []struct {
		name   string
		call   func() error
		status int
		code   string
	}{
		{"room that never was", func() error { _, err := c.Room("chat", "never").Info(ctx); return err }, 404, client.CodeRoomNotFound},
		{"unknown class", func() error { _, err := c.Room("nope", "x").Info(ctx); return err }, 404, client.CodeUnknownClass},
		{"bad room name", func() error { _, err := c.Room("chat", "no spaces").Connections(ctx); return err }, 400, client.CodeBadName},
		{"bad class filter", func() error { _, err := c.Rooms(ctx, client.RoomsQuery{Class: "Chat"}); return err }, 400, client.CodeBadName},
		{"limit too high", func() error { _, err := c.Rooms(ctx, client.RoomsQuery{Limit: 5000}); return err }, 400, client.CodeBadRequest},
		{"bad cursor", func() error { _, err := c.Rooms(ctx, client.RoomsQuery{Cursor: "nonsense"}); return err }, 400, client.CodeBadRequest},
		{"storage limit", func() error { _, err := c.Room("chat", "x").Storage(ctx, "", -1); return err }, 400, client.CodeBadRequest},
		{"socket of another room", func() error { return c.Room("chat", "x").Kick(ctx, "1") }, 404, client.CodeSocketNotFound},
		{"broadcast to an unknown class", func() error { return c.Room("nope", "x").Broadcast(ctx, []byte("hi")) }, 404, client.CodeUnknownClass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			wantError(t, tc.name, err, tc.status, tc.code)
			if got := client.IsNotFound(err); got != (tc.status == 404) {
				t.Errorf("IsNotFound = %v", got)
			}
		})
	}
}

// TestAllRooms pages through rooms with a small limit, in order.
func TestAllRooms(t *testing.T) {
	n := startNode(t, false)
	c := n.client(t)
	ctx := ctx(t)
	var want []string
	for i := range 5 {
		room := fmt.Sprintf("p-%d", i)
		want = append(want, room)
		s := n.dial(t, "counter", room, "u", "")
		if err := wsutil.WriteClientText(s, []byte("inc")); err != nil {
			t.Fatal(err)
		}
		next(t, s, "the count", func(data []byte, op ws.OpCode) bool { return bytes.Contains(data, []byte(`"value":1`)) })
	}
	n.dial(t, "counter", "other", "u", "") // not under the prefix

	first, err := c.Rooms(ctx, client.RoomsQuery{Class: "counter", Prefix: "p-", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Rooms) != 2 || first.NextCursor == "" {
		t.Fatalf("first page = %+v, want 2 rooms and a cursor", first)
	}
	var got []string
	for info, err := range c.AllRooms(ctx, client.RoomsQuery{Class: "counter", Prefix: "p-", Limit: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, info.Room)
	}
	if !slices.Equal(got, want) {
		t.Errorf("AllRooms = %v, want %v", got, want)
	}
	// Breaking out of the loop stops the walk.
	got = got[:0]
	for info := range c.AllRooms(ctx, client.RoomsQuery{Class: "counter", Limit: 1}) {
		got = append(got, info.Room)
		if len(got) == 3 {
			break
		}
	}
	if len(got) != 3 {
		t.Errorf("after a break: %v", got)
	}
	// A failing page ends the walk with its error.
	seen := 0
	for _, err := range c.AllRooms(ctx, client.RoomsQuery{Limit: -1}) {
		seen++
		wantError(t, "AllRooms with a bad limit", err, 400, client.CodeBadRequest)
	}
	if seen != 1 {
		t.Errorf("AllRooms with a bad limit yielded %d times, want once with the error", seen)
	}
}
