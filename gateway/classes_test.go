package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

// msg is a decoded JSON message from a built-in class.
type msg map[string]any

func (m msg) str(k string) string { s, _ := m[k].(string); return s }
func (m msg) num(k string) int    { f, _ := m[k].(float64); return int(f) }
func (m msg) obj(k string) msg    { o, _ := m[k].(map[string]any); return o }
func (m msg) list(k string) []any { l, _ := m[k].([]any); return l }

func sendJSON(t *testing.T, c net.Conn, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := wsutil.WriteClientText(c, b); err != nil {
		t.Fatal(err)
	}
}

func sendText(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if err := wsutil.WriteClientText(c, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

// readMsg reads the next JSON message.
func readMsg(t *testing.T, c net.Conn) msg {
	t.Helper()
	b, _, err := testkit.ReadData(t, c)
	if err != nil {
		t.Fatalf("reading a message: %v", err)
	}
	var m msg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %q", b)
	}
	return m
}

// readType reads messages until one of type typ, failing on an error message.
func readType(t *testing.T, c net.Conn, typ string) msg {
	t.Helper()
	for {
		m := readMsg(t, c)
		if m.str("type") == typ {
			return m
		}
	}
}

// noMessage checks nothing arrives for a moment.
func noMessage(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	if b, err := wsutil.ReadServerText(c); err == nil {
		t.Fatalf("unexpected message %s", b)
	}
}

func TestCounterProtocol(t *testing.T) {
	ts := startServer(t, Options{})
	a := dial(t, ts, "/ws/counter/c1")
	if m := readMsg(t, a); m.str("type") != "count" || m.num("value") != 0 {
		t.Fatalf("on connect: %v", m)
	}
	b := dial(t, ts, "/ws/counter/c1")
	readType(t, b, "count")
	sendText(t, a, "inc")
	sendText(t, b, "inc")
	for _, c := range []net.Conn{a, b} {
		if m1, m2 := readMsg(t, c), readMsg(t, c); m1.num("value") != 1 || m2.num("value") != 2 {
			t.Fatalf("got %v then %v, want 1 then 2", m1, m2)
		}
	}
	for _, bad := range []string{"INC", "", `{"type":"inc"}`} {
		sendText(t, a, bad)
		if m := readMsg(t, a); m.str("type") != "error" || m.str("code") != "bad_command" {
			t.Fatalf("%q: got %v", bad, m)
		}
	}
	wsutil.WriteClientBinary(a, []byte("inc"))
	if m := readMsg(t, a); m.str("code") != "bad_command" {
		t.Fatalf("binary inc: %v", m)
	}
	a.Close()
	b.Close()
	c := dial(t, ts, "/ws/counter/c1")
	if m := readMsg(t, c); m.num("value") != 2 {
		t.Fatalf("a new socket sees %v, want the persisted 2", m)
	}
}

func TestChatProtocol(t *testing.T) {
	ts := startServer(t, Options{})
	alice := dial(t, ts, "/ws/chat/lobby?user=a1&name=Alice")
	w := readMsg(t, alice)
	if w.str("type") != "welcome" || w.obj("you").str("id") != "a1" || w.obj("you").str("name") != "Alice" ||
		len(w.list("members")) != 1 || len(w.list("history")) != 0 {
		t.Fatalf("welcome: %v", w)
	}
	bob := dial(t, ts, "/ws/chat/lobby?user=b1&name=Bob")
	if w := readType(t, bob, "welcome"); len(w.list("members")) != 2 {
		t.Fatalf("bob's welcome lists %v", w.list("members"))
	}
	if j := readMsg(t, alice); j.str("type") != "join" || j.obj("user").str("name") != "Bob" {
		t.Fatalf("alice got %v, want bob's join", j)
	}
	// A second tab of the same user is not a new member.
	bob2 := dial(t, ts, "/ws/chat/lobby?user=b1&name=Bob")
	readType(t, bob2, "welcome")

	sendJSON(t, alice, map[string]any{"type": "say", "text": "hi bob"})
	readType(t, bob, "message") // so bob's answer comes second
	sendJSON(t, bob, map[string]any{"type": "say", "text": "hi alice"})
	readType(t, bob, "message")
	for _, c := range []net.Conn{alice, bob2} {
		m1, m2 := readType(t, c, "message"), readType(t, c, "message")
		if m1.num("seq") != 1 || m1.str("text") != "hi bob" || m1.obj("user").str("id") != "a1" || m1.num("ts") == 0 ||
			m2.num("seq") != 2 || m2.str("text") != "hi alice" {
			t.Fatalf("got %v and %v", m1, m2)
		}
	}
	bob2.Close()
	noMessage(t, alice) // bob still has a socket
	bob.Close()
	if l := readType(t, alice, "leave"); l.obj("user").str("id") != "b1" {
		t.Fatalf("leave: %v", l)
	}

	bad := []struct {
		send any
		code string
	}{
		{"not json", "bad_json"},
		{map[string]any{"type": "shout", "text": "x"}, "unknown_type"},
		{map[string]any{"type": "say"}, "empty_text"},
		{map[string]any{"type": "say", "text": "   "}, "empty_text"},
		{map[string]any{"type": "say", "text": 42}, "bad_json"},
		{map[string]any{"type": "say", "text": strings.Repeat("x", 4097)}, "too_long"},
	}
	for _, b := range bad {
		if s, ok := b.send.(string); ok {
			sendText(t, alice, s)
		} else {
			sendJSON(t, alice, b.send)
		}
		if m := readMsg(t, alice); m.str("type") != "error" || m.str("code") != b.code || m.str("message") == "" {
			t.Fatalf("%v: got %v, want error %s", b.send, m, b.code)
		}
	}
	wsutil.WriteClientBinary(alice, []byte(`{"type":"say","text":"x"}`))
	if m := readMsg(t, alice); m.str("code") != "bad_json" {
		t.Fatalf("binary: %v", m)
	}
	// The socket stayed open through all of it.
	sendJSON(t, alice, map[string]any{"type": "say", "text": "still here"})
	if m := readType(t, alice, "message"); m.num("seq") != 3 {
		t.Fatalf("after bad input: %v", m)
	}
}

func TestChatHistoryAndResume(t *testing.T) {
	ts := startServer(t, Options{})
	a := dial(t, ts, "/ws/chat/hist")
	readType(t, a, "welcome")
	for i := 1; i <= 105; i++ {
		sendJSON(t, a, map[string]any{"type": "say", "text": fmt.Sprint("m", i)})
	}
	for i := 1; i <= 105; i++ {
		readType(t, a, "message")
	}
	w := readType(t, dial(t, ts, "/ws/chat/hist"), "welcome")
	h := w.list("history")
	if len(h) != 100 || msg(h[0].(map[string]any)).num("seq") != 6 || msg(h[99].(map[string]any)).num("seq") != 105 {
		t.Fatalf("history of %d from seq %v", len(h), h[0])
	}
	w = readType(t, dial(t, ts, "/ws/chat/hist?since=100"), "welcome")
	h = w.list("history")
	if len(h) != 5 || msg(h[0].(map[string]any)).num("seq") != 101 {
		t.Fatalf("since=100: %d messages from %v", len(h), h)
	}
	c := dial(t, ts, "/ws/chat/hist?since=banana")
	readType(t, c, "welcome")
	if m := readMsg(t, c); m.str("code") != "bad_since" {
		t.Fatalf("bad since: %v", m)
	}
}

func TestCanvasProtocol(t *testing.T) {
	ts := startServer(t, Options{})
	a := dial(t, ts, "/ws/canvas/art?user=a&name=Ann")
	st := readMsg(t, a)
	board := st.list("board")
	if st.str("type") != "state" || len(board) != 64 || len(board[0].([]any)) != 64 || board[0].([]any)[0] != "#ffffff" ||
		len(st.list("players")) != 1 {
		t.Fatalf("state: type %v, %d rows, players %v", st["type"], len(board), st["players"])
	}
	b := dial(t, ts, "/ws/canvas/art?user=b&name=Ben")
	readType(t, b, "state")
	if j := readMsg(t, a); j.str("type") != "join" || j.obj("player").str("name") != "Ben" || j.obj("player").str("color") == "" {
		t.Fatalf("join: %v", j)
	}
	sendJSON(t, a, map[string]any{"type": "paint", "x": 3, "y": 5, "color": "#ff0000"})
	for _, c := range []net.Conn{a, b} {
		if p := readType(t, c, "paint"); p.num("x") != 3 || p.num("y") != 5 || p.str("color") != "#ff0000" {
			t.Fatalf("paint: %v", p)
		}
	}
	sendJSON(t, a, map[string]any{"type": "cursor", "x": 1.5, "y": 2.25})
	if cur := readType(t, b, "cursor"); cur.str("id") != "a" || cur["x"].(float64) != 1.5 {
		t.Fatalf("cursor: %v", cur)
	}
	noMessage(t, a) // the sender does not get its own cursor
	for _, bad := range []struct {
		send map[string]any
		code string
	}{
		{map[string]any{"type": "paint", "x": 64, "y": 0, "color": "#000000"}, "bad_position"},
		{map[string]any{"type": "paint", "x": 1.5, "y": 0, "color": "#000000"}, "bad_position"},
		{map[string]any{"type": "paint", "x": 1, "y": 0, "color": "red"}, "bad_color"},
		{map[string]any{"type": "paint", "color": "#000000"}, "bad_position"},
		{map[string]any{"type": "cursor", "x": -1, "y": 0}, "bad_position"},
		{map[string]any{"type": "wave", "x": 1, "y": 1}, "unknown_type"},
	} {
		sendJSON(t, a, bad.send)
		if m := readMsg(t, a); m.str("type") != "error" || m.str("code") != bad.code {
			t.Fatalf("%v: got %v, want %s", bad.send, m, bad.code)
		}
	}
	// Cursors are rate-limited: a burst of 100 reaches the other player as
	// at most the bucket's burst plus what refilled meanwhile.
	for range 100 {
		sendJSON(t, a, map[string]any{"type": "cursor", "x": 1, "y": 1})
	}
	sendJSON(t, a, map[string]any{"type": "paint", "x": 0, "y": 0, "color": "#00ff00"})
	cursors := 0
	for {
		m := readMsg(t, b)
		if m.str("type") == "paint" {
			break
		}
		cursors++
	}
	if cursors < 5 || cursors > 30 {
		t.Errorf("%d of 100 burst cursors delivered, want about 10", cursors)
	}
	// The board is persisted; cursors are not.
	a.Close()
	b.Close()
	st = readType(t, dial(t, ts, "/ws/canvas/art"), "state")
	if row := st.list("board")[5].([]any); row[3] != "#ff0000" {
		t.Fatalf("persisted cell: %v", row[3])
	}
}

// TestOrderingTenSocketsThousandMessages has 10 sockets each send 1,000
// numbered messages to one chat room: every socket must receive all 10,000
// with seq going up by one, and each sender's messages in the order sent.
func TestOrderingTenSocketsThousandMessages(t *testing.T) {
	const senders, each = 10, 1000
	ts := startServer(t, Options{})
	conns := make([]net.Conn, senders)
	for i := range conns {
		conns[i] = dial(t, ts, fmt.Sprintf("/ws/chat/order?user=u%d", i))
		readType(t, conns[i], "welcome")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*senders)
	for i, c := range conns {
		wg.Add(2)
		go func() { // sender
			defer wg.Done()
			var buf bytes.Buffer
			for n := range each {
				buf.Reset()
				fmt.Fprintf(&buf, `{"type":"say","text":"%d %d"}`, i, n)
				if err := wsutil.WriteClientText(c, buf.Bytes()); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() { // receiver
			defer wg.Done()
			last := make([]int, senders)
			for j := range last {
				last[j] = -1
			}
			seq := 0
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			for seq < senders*each {
				b, err := wsutil.ReadServerText(c)
				if err != nil {
					errs <- fmt.Errorf("socket %d after seq %d: %v", i, seq, err)
					return
				}
				var m struct {
					Type string
					Seq  int
					Text string
				}
				json.Unmarshal(b, &m)
				if m.Type != "message" {
					continue // joins of sockets that connected after this one
				}
				if m.Seq != seq+1 {
					errs <- fmt.Errorf("socket %d: seq %d after %d", i, m.Seq, seq)
					return
				}
				seq = m.Seq
				var from, n int
				fmt.Sscanf(m.Text, "%d %d", &from, &n)
				if n != last[from]+1 {
					errs <- fmt.Errorf("socket %d: sender %d's message %d after %d", i, from, n, last[from])
					return
				}
				last[from] = n
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// seqs returns the seq of each message in a history list.
func seqs(l []any) []int {
	out := make([]int, len(l))
	for i, m := range l {
		out[i] = msg(m.(map[string]any)).num("seq")
	}
	return out
}

// TestChatWelcomeIsBoundedInBytes: a welcome carried the last 100
// messages (or 1,000 after ?since=) whatever their size, 4.2 MB on a full
// room, and ?since=9223372036854775807 wrapped around to the oldest
// messages. Now a welcome is at most 256 KiB: the newest messages that fit,
// "more" when older ones asked for were left out, and "history" requests
// page back through the rest, each as bounded.
func TestChatWelcomeIsBoundedInBytes(t *testing.T) {
	const total = 120
	ts := startServer(t, Options{})
	a := dial(t, ts, "/ws/chat/big")
	readType(t, a, "welcome")
	// Control characters are escaped as \u00XX: 4 KiB of text is 24 KiB of JSON.
	text := strings.Repeat("\x01", 4096)
	for range total {
		sendJSON(t, a, map[string]any{"type": "say", "text": text})
	}
	for range total {
		readType(t, a, "message")
	}

	// pageBack asks for older pages from first down to after, checking
	// each, and returns every seq the pages held.
	pageBack := func(c net.Conn, first, after int) []int {
		var got []int
		for more := true; more; {
			req := map[string]any{"type": "history", "before": first}
			if after > 0 {
				req["after"] = after
			}
			sendJSON(t, c, req)
			b, _, err := testkit.ReadData(t, c)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > 256<<10 {
				t.Fatalf("a history page of %d bytes", len(b))
			}
			var p msg
			json.Unmarshal(b, &p)
			if p.str("type") != "history" {
				t.Fatalf("asked for history, got %s", b[:min(len(b), 200)])
			}
			page := seqs(p.list("messages"))
			if len(page) == 0 || page[len(page)-1] != first-1 {
				t.Fatalf("page before %d holds %v", first, page)
			}
			got = append(page, got...)
			first, more = page[0], p["more"] == true
		}
		return got
	}
	contiguous := func(got []int, from, to int) {
		t.Helper()
		if len(got) != to-from+1 || got[0] != from || got[len(got)-1] != to {
			t.Fatalf("got %d messages %v…, want %d to %d", len(got), got[:min(len(got), 3)], from, to)
		}
		for i := 1; i < len(got); i++ {
			if got[i] != got[i-1]+1 {
				t.Fatalf("seq %d after %d", got[i], got[i-1])
			}
		}
	}

	for _, tc := range []struct {
		query string
		from  int // the first message asked for
		want  int // messages asked for: the last 100, or all after since
	}{
		{"", total - 99, 100},
		{"?since=0", 1, total},
		{"?since=100", 101, total - 100},
	} {
		c := dial(t, ts, "/ws/chat/big"+tc.query)
		b, _, err := testkit.ReadData(t, c)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 256<<10 {
			t.Fatalf("%q: a welcome of %d bytes", tc.query, len(b))
		}
		var w msg
		json.Unmarshal(b, &w)
		h := seqs(w.list("history"))
		if len(h) == 0 || h[len(h)-1] != total {
			t.Fatalf("%q: welcome history %v, want the newest messages", tc.query, h)
		}
		more := w["more"] == true
		if more != (len(h) < tc.want) {
			t.Fatalf("%q: %d of %d messages and more=%v", tc.query, len(h), tc.want, more)
		}
		if more {
			after := tc.from - 1
			if tc.query == "" {
				after = 0 // the client pages back as far as it likes
			}
			got := append(pageBack(c, h[0], after), h...)
			if tc.query == "" {
				got = got[len(got)-100:]
			}
			contiguous(got, tc.from, total)
		}
	}

	// One past the last message, and the largest seq there is: no history.
	for _, since := range []string{fmt.Sprint(total), "9223372036854775807"} {
		w := readType(t, dial(t, ts, "/ws/chat/big?since="+since), "welcome")
		if h := w.list("history"); len(h) != 0 || w["more"] != false {
			t.Fatalf("since=%s: %d messages, more=%v; want none", since, len(h), w["more"])
		}
	}
	// A negative or unreadable since gets the latest messages and an error.
	for _, since := range []string{"-1", "banana", "99999999999999999999"} {
		c := dial(t, ts, "/ws/chat/big?since="+since)
		readType(t, c, "welcome")
		if m := readMsg(t, c); m.str("code") != "bad_since" {
			t.Fatalf("since=%s: %v", since, m)
		}
	}
	// A history request needs a before.
	for _, bad := range []map[string]any{
		{"type": "history"}, {"type": "history", "before": 0}, {"type": "history", "before": 5, "after": -1},
	} {
		sendJSON(t, a, bad)
		if m := readType(t, a, "error"); m.str("code") != "bad_history" {
			t.Fatalf("%v: %v", bad, m)
		}
	}
	sendJSON(t, a, map[string]any{"type": "history", "before": 5, "after": 5})
	if p := readType(t, a, "history"); len(p.list("messages")) != 0 || p["more"] != false {
		t.Fatalf("an empty range: %v", p)
	}
}

// TestChatAtItsStorageQuota: a chat room at its storage quota refuses new
// messages with the error storage_full, counted, and keeps the socket
// open; before the quota, one client wrote 513 MB of chat in 16 s.
func TestChatAtItsStorageQuota(t *testing.T) {
	const limit = 64 << 10
	reg := prometheus.NewRegistry()
	rt := newRuntime(t, rooms.Options{MaxRoomBytes: limit, Metrics: reg}, nil)
	ts := startServer(t, Options{Router: rt, Admin: rt})
	a := dial(t, ts, "/ws/chat/full")
	readType(t, a, "welcome")
	text := strings.Repeat("x", 4000)
	said := 0
	for ; said < 2*limit/len(text); said++ {
		sendJSON(t, a, map[string]any{"type": "say", "text": text})
		if m := readMsg(t, a); m.str("type") == "error" {
			if m.str("code") != "storage_full" {
				t.Fatalf("message %d: %v", said+1, m)
			}
			break
		}
	}
	if said == 0 || said >= 2*limit/len(text) {
		t.Fatalf("%d messages of %d bytes stored under a quota of %d bytes", said, len(text), limit)
	}
	info, err := rt.Room(context.Background(), rooms.Addr{Class: "chat", Room: "full"})
	if err != nil {
		t.Fatal(err)
	}
	if info.StorageBytes > limit {
		t.Fatalf("the room stores %d bytes; its quota is %d", info.StorageBytes, limit)
	}
	// The socket is still open and served.
	sendJSON(t, a, map[string]any{"type": "history", "before": said + 1})
	if p := readType(t, a, "history"); len(p.list("messages")) == 0 {
		t.Fatalf("history after the quota: %v", p)
	}
	if n := metric(t, reg, "roomgate_room_limited_total", "storage_quota"); n < 1 {
		t.Fatalf("roomgate_room_limited_total{kind=storage_quota} = %v", n)
	}
}
