package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/roomgate/roomgate/web"
)

// client.js's token logic in a real Chromium, against a stub that plays
// the server's part of DESIGN §1 by the token's first word: "bad-…" and
// "stale-…" are refused with 401 at the handshake (and the probe), a
// socket opened with "expire-…" is closed with 4401 after 1.2 s, and any
// other token is echoed. The stub is only here, for the client's logic:
// the same flow against a real node is TestBrowserTokenRefreshAgainstNode.

// tokenStub records the token of every upgrade it was asked for, by room.
type tokenStub struct {
	mu     sync.Mutex
	tokens map[string][]string
}

func startTokenStub(t *testing.T) (*httptest.Server, *tokenStub) {
	t.Helper()
	stub := &tokenStub{tokens: map[string][]string{}}
	mux := http.NewServeMux()
	mux.Handle("/", web.Handler())
	mux.HandleFunc("/ws/echo/{room}", stub.serve)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, stub
}

func (st *tokenStub) serve(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("token")
	upgrade := strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
	if upgrade {
		st.mu.Lock()
		st.tokens[r.PathValue("room")] = append(st.tokens[r.PathValue("room")], token)
		st.mu.Unlock()
	}
	if strings.HasPrefix(token, "bad-") || strings.HasPrefix(token, "stale-") {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"code":"token_invalid","message":"token is not valid"}}`))
		return
	}
	if !upgrade {
		// What a real node answers the probe for a socket it would admit.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":{"code":"bad_handshake","message":"not a valid WebSocket upgrade"}}`))
		return
	}
	c, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	defer c.Close()
	var wmu sync.Mutex // the expiry timer writes too
	closed := false    // our close frame is out: nothing may follow it
	if strings.HasPrefix(token, "expire-") {
		timer := time.AfterFunc(1200*time.Millisecond, func() {
			wmu.Lock()
			defer wmu.Unlock()
			closed = true
			ws.WriteFrame(c, ws.NewCloseFrame(ws.NewCloseFrameBody(4401, "token expired")))
		})
		defer timer.Stop()
	}
	for {
		f, err := ws.ReadFrame(c)
		if err != nil {
			return
		}
		f = ws.UnmaskFrameInPlace(f)
		wmu.Lock()
		switch {
		case f.Header.OpCode == ws.OpClose:
			if !closed {
				ws.WriteFrame(c, ws.NewCloseFrame(f.Payload[:min(len(f.Payload), 2)]))
			}
			wmu.Unlock()
			return
		case !closed && (f.Header.OpCode == ws.OpText || f.Header.OpCode == ws.OpBinary):
			ws.WriteFrame(c, ws.NewFrame(f.Header.OpCode, true, f.Payload))
		}
		wmu.Unlock()
	}
}

func (st *tokenStub) seen(room string) []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return slices.Clone(st.tokens[room])
}

// tokenEvent is what the test page records of a RoomSocket's events.
type tokenEvent struct {
	Room, Type string
	Code       int
	Delay      float64
	Status     int
	Data       string
}

// tokenPage opens the stub's landing page and runs script in it, with
// window.track(room, socket) recording the socket's events in
// window.events, and window.calls counting each room's token requests.
func tokenPage(t *testing.T, url, script string) context.Context {
	t.Helper()
	page := tab(t, browser(t), url+"/")
	value[bool](t, page, `(() => {
		window.events = [];
		window.calls = {};
		window.track = (room, s) => {
			for (const type of ["open", "close", "reconnecting", "tokenexpired", "tokenerror", "refused", "message"]) {
				s.addEventListener(type, (e) => {
					const d = e.detail ?? {};
					window.events.push({ room, type, code: typeof d.code === "number" ? d.code : 0, delay: d.delay ?? -1, status: d.status ?? 0, data: typeof d.data === "string" ? d.data : "" });
				});
			}
			return s;
		};
		import("/client.js").then((client) => { `+script+` });
		return true;
	})()`)
	return page
}

func eventsOf(events []tokenEvent, room string) []string {
	var out []string
	for _, e := range events {
		if e.Room != room {
			continue
		}
		s := e.Type
		switch e.Type {
		case "close", "tokenexpired":
			s += fmt.Sprintf(" %d", e.Code)
		case "reconnecting":
			if e.Delay == 0 {
				s += " at once"
			}
		case "refused":
			s += fmt.Sprintf(" %d", e.Status)
		case "message":
			s += " " + e.Data
		}
		out = append(out, s)
	}
	return out
}

// TestClientTokenFunctionOn4401: a token function is asked before the
// first connect; when the open socket is closed with 4401 it is asked
// again and the socket reconnects at once with the fresh token, and keeps
// working. A fixed token that expires stops the socket instead.
func TestClientTokenFunctionOn4401(t *testing.T) {
	srv, stub := startTokenStub(t)
	page := tokenPage(t, srv.URL, `
		const next = (room, tokens) => async () => {
			window.calls[room] = (window.calls[room] ?? 0) + 1;
			await new Promise((r) => setTimeout(r, 20)); // as a fetch to the app's token endpoint would
			return tokens[Math.min(window.calls[room], tokens.length) - 1];
		};
		let opens = 0;
		const s = track("renew", new client.RoomSocket({ class: "echo", room: "renew", minDelay: 2000, token: next("renew", ["expire-1", "good-2"]) }));
		s.addEventListener("open", () => s.send("hello " + ++opens));
		const f = track("fixed", new client.RoomSocket({ class: "echo", room: "fixed", minDelay: 50, token: "expire-fixed" }));
		f.addEventListener("open", () => f.send("hello"));
	`)
	run(t, page, waitJS(`window.events.some((e) => e.room === "renew" && e.data === "hello 2")`))
	if got := value[int](t, page, `window.calls.renew`); got != 2 {
		t.Errorf("the token function was called %d times, want 2: once per connect", got)
	}
	if got := stub.seen("renew"); fmt.Sprint(got) != "[expire-1 good-2]" {
		t.Errorf("the server saw tokens %q, want the first, then the fresh one", got)
	}
	// minDelay is 2 s: "hello 2" within the wait above came without backoff.
	want := "open|message hello 1|close 4401|tokenexpired 4401|reconnecting at once|open|message hello 2"
	if got := strings.Join(eventsOf(value[[]tokenEvent](t, page, `window.events`), "renew"), "|"); got != want {
		t.Errorf("events\n got %s\nwant %s", got, want)
	}

	run(t, page, waitJS(`window.events.some((e) => e.room === "fixed" && e.type === "tokenexpired")`))
	waitBackoffs(t, page, 4) // a retry would have shown
	want = "open|message hello|close 4401|tokenexpired 4401"
	if got := strings.Join(eventsOf(value[[]tokenEvent](t, page, `window.events`), "fixed"), "|"); got != want {
		t.Errorf("a fixed token that expired: events\n got %s\nwant %s (and no retry)", got, want)
	}
	if got := stub.seen("fixed"); len(got) != 1 {
		t.Errorf("a fixed token that expired was tried %d times, want once", len(got))
	}
}

// TestClientTokenFunctionOn401: a handshake refused with 401 asks the
// token function once more and tries again at once; a second 401 in a row
// is reported as "refused" and the socket stops: no loop. A fixed token
// refused with 401 is reported at once.
func TestClientTokenFunctionOn401(t *testing.T) {
	srv, stub := startTokenStub(t)
	page := tokenPage(t, srv.URL, `
		const next = (room, tokens) => async () => {
			window.calls[room] = (window.calls[room] ?? 0) + 1;
			return tokens[Math.min(window.calls[room], tokens.length) - 1];
		};
		track("stale", new client.RoomSocket({ class: "echo", room: "stale", minDelay: 2000, token: next("stale", ["stale-1", "good-2"]) }));
		track("bad", new client.RoomSocket({ class: "echo", room: "bad", minDelay: 50, token: next("bad", ["bad-1", "bad-2", "bad-3"]) }));
		track("fixed", new client.RoomSocket({ class: "echo", room: "fixed", minDelay: 50, token: "bad-fixed" }));
		let thrown = false;
		track("throws", new client.RoomSocket({ class: "echo", room: "throws", minDelay: 50, token: async () => {
			if (!thrown) { thrown = true; throw new Error("token endpoint down"); }
			return "good-after-error";
		} }));
	`)
	run(t, page, waitJS(`["stale", "throws"].every((room) => window.events.some((e) => e.room === room && e.type === "open")) &&
		["bad", "fixed"].every((room) => window.events.some((e) => e.room === room && e.type === "refused"))`))
	waitBackoffs(t, page, 5) // a retry would have shown
	events := value[[]tokenEvent](t, page, `window.events`)
	for _, tc := range []struct {
		room, events, tokens string
	}{
		{"stale", "close 1006|tokenexpired 401|reconnecting at once|open", "[stale-1 good-2]"},
		{"bad", "close 1006|tokenexpired 401|reconnecting at once|close 1006|refused 401", "[bad-1 bad-2]"},
		{"fixed", "close 1006|refused 401", "[bad-fixed]"},
		{"throws", "tokenerror|reconnecting|open", "[good-after-error]"},
	} {
		if got := strings.Join(eventsOf(events, tc.room), "|"); got != tc.events {
			t.Errorf("%s: events\n got %s\nwant %s", tc.room, got, tc.events)
		}
		if got := fmt.Sprint(stub.seen(tc.room)); got != tc.tokens {
			t.Errorf("%s: the server saw tokens %s, want %s", tc.room, got, tc.tokens)
		}
	}
	if calls := value[map[string]int](t, page, `window.calls`); calls["bad"] != 2 || calls["stale"] != 2 {
		t.Errorf("token function calls %v, want 2 for bad and stale", calls)
	}
}
