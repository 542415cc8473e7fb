package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/client"
	"github.com/roomgate/roomgate/examples/internal/examplenode"
	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

func TestClass(t *testing.T) {
	if err := rooms.CheckClass(newChat(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// retention is short so that the prune runs within the test, and long
// enough that the history is read before it does.
const retention = 1500 * time.Millisecond

func TestChat(t *testing.T) {
	url, _ := examplenode.Start(t, "", roomgate.Builtins(), roomgate.Class("stored-chat", newChat(retention)))
	addr := strings.TrimPrefix(url, "http://")
	ctx := context.Background()
	api, err := client.New(url, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	room := api.Room("stored-chat", "lobby")
	history := func(limit int) []string {
		t.Helper()
		var ms []Message
		if err := room.Call(ctx, "history", limit, &ms); err != nil {
			t.Fatalf("history: %v", err)
		}
		var texts []string
		for _, m := range ms {
			texts = append(texts, m.Text)
		}
		return texts
	}

	ann := testkit.Dial(t, "ws://"+addr+"/ws/stored-chat/lobby?user=ann&name=Ann")
	bob := testkit.Dial(t, "ws://"+addr+"/ws/stored-chat/lobby?user=bob&name=Bob")
	say := func(text string) {
		t.Helper()
		if err := wsutil.WriteClientText(ann, []byte(text)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []net.Conn{ann, bob} {
			b, _, err := testkit.ReadData(t, c)
			var m Message
			if err == nil {
				err = json.Unmarshal(b, &m)
			}
			if err != nil || m.Text != text || m.User != "Ann" {
				t.Fatalf("broadcast of %q: got %s, %v", text, b, err)
			}
		}
	}
	for _, text := range []string{"one", "two", "three"} {
		say(text)
	}
	if got := fmt.Sprint(history(2)); got != "[two three]" {
		t.Fatalf("history(2) = %s, want [two three]", got)
	}

	// The prune, armed for "one", deletes it and re-arms itself for the
	// others still fresh, until none is left; a new message arms it again.
	testkit.WaitFor(t, 10*time.Second, "old messages deleted", func() bool { return len(history(10)) == 0 })
	say("four")
	if got := fmt.Sprint(history(10)); got != "[four]" {
		t.Fatalf("history(10) = %s, want [four]", got)
	}
	testkit.WaitFor(t, 10*time.Second, "the new message deleted", func() bool { return len(history(10)) == 0 })
}
