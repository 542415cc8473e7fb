package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/roomgate/roomgate/internal/testkit"
)

// The browser side of tokens, end to end: a real node started with
// -jwt-secret, real tokens, real Chromium. These need the server side of
// issue 14 (-jwt-secret, 4401 on expiry, admin tokens on /v1).

const testSecret = "browser-test-secret-0123456789abcdef"

// signToken mints an HS256 token as `roomgate token` would.
func signToken(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func userToken(t *testing.T, sub, name, rooms string, ttl time.Duration) string {
	t.Helper()
	return signToken(t, jwt.MapClaims{
		"sub": sub, "name": name, "rooms": strings.Split(rooms, ","),
		"iat": time.Now().Unix(), "exp": time.Now().Add(ttl).Unix(),
	})
}

// TestBrowserTokenRefreshAgainstNode: a page's async token function hands
// out a token that expires in 2 s, then long-lived ones. The node closes
// the socket with 4401 when the first expires; the function is called
// again, the client reconnects at once with the fresh token and keeps
// echoing.
func TestBrowserTokenRefreshAgainstNode(t *testing.T) {
	addr := startNode(t, "-jwt-secret", testSecret)
	short := userToken(t, "rita", "Rita", "echo/*", 2*time.Second)
	long := userToken(t, "rita", "Rita", "echo/*", time.Hour)
	page := tab(t, browser(t), "http://"+addr+"/")
	value[bool](t, page, fmt.Sprintf(`(() => {
		window.events = [];
		window.calls = 0;
		const tokens = [%q, %q];
		import("/client.js").then(({ RoomSocket }) => {
			let opens = 0;
			const s = new RoomSocket({ class: "echo", room: "renewed", minDelay: 5000, token: async () => {
				await new Promise((r) => setTimeout(r, 20)); // as a fetch to the app's token endpoint would
				return tokens[Math.min(window.calls++, 1)];
			} });
			s.addEventListener("open", () => s.send("hello " + ++opens));
			for (const type of ["open", "close", "reconnecting", "tokenexpired", "refused", "message"]) {
				s.addEventListener(type, (e) => {
					const d = e.detail ?? {};
					window.events.push({ room: "renewed", type, code: typeof d.code === "number" ? d.code : 0, delay: d.delay ?? -1, status: d.status ?? 0, data: typeof d.data === "string" ? d.data : "" });
				});
			}
		});
		return true;
	})()`, short, long))
	// The expiry is checked by the node's sweep, with its clock leeway:
	// allow well past the token's 2 s.
	ctx, cancel := context.WithTimeout(page, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, waitJS(`window.events.some((e) => e.data === "hello 2")`)); err != nil {
		t.Fatalf("no echo after the token expired: %v; events %v", err, value[[]tokenEvent](t, page, `window.events`))
	}
	if calls := value[int](t, page, `window.calls`); calls != 2 {
		t.Errorf("the token function was called %d times, want 2", calls)
	}
	want := "open|message hello 1|close 4401|tokenexpired 4401|reconnecting at once|open|message hello 2"
	if got := strings.Join(eventsOf(value[[]tokenEvent](t, page, `window.events`), "renewed"), "|"); got != want {
		t.Errorf("events\n got %s\nwant %s", got, want)
	}
}

// TestBrowserChatWithTokenAgainstNode: the chat page opened with ?room=
// and ?token= joins at once, and the node names the user after the token.
func TestBrowserChatWithTokenAgainstNode(t *testing.T) {
	addr := startNode(t, "-jwt-secret", testSecret)
	tok := userToken(t, "u-tina", "Tina", "chat/*", time.Hour)
	page := tab(t, browser(t), "http://"+addr+"/chat/?room=authed&token="+tok)
	run(t, page, waitJS(`document.querySelector('[data-testid=members]').innerText.includes('Tina (you)')`))
	run(t, page, say("signed in"), waitJS(`document.querySelector('[data-testid=messages]').innerText.includes('Tina: signed in')`))
}

// TestBrowserAdminWithTokenAgainstNode: on a node with a key the admin
// page gets nothing without a token; with an admin token it lists the
// rooms and its kick (a DELETE with the bearer token) closes a socket.
func TestBrowserAdminWithTokenAgainstNode(t *testing.T) {
	addr := startNode(t, "-jwt-secret", testSecret)
	watched := testkit.Dial(t, "ws://"+addr+"/ws/echo/watched?token="+userToken(t, "erin", "Erin", "echo/*", time.Hour))
	admin := tab(t, browser(t), "http://"+addr+"/admin/")
	run(t, admin, waitJS(`!document.getElementById('error').hidden`))
	if rows := value[int](t, admin, `document.querySelectorAll('[data-testid=room-row]').length`); rows != 0 {
		t.Fatalf("the admin page lists %d rooms without a token", rows)
	}
	adminToken := signToken(t, jwt.MapClaims{"sub": "ops", "admin": true, "exp": time.Now().Add(time.Hour).Unix()})
	run(t, admin,
		chromedp.SendKeys(chromedp.CSS(`#token`), adminToken),
		chromedp.Click(chromedp.CSS(`#auth button`)),
		waitJS(`!!document.querySelector('[data-testid=room-row][data-room="echo/watched"]')`),
		chromedp.Click(chromedp.CSS(`[data-testid=room-row][data-room="echo/watched"] [data-testid=open-room]`)),
		waitJS(`document.querySelectorAll('[data-testid=connections] tbody tr').length === 1`),
		chromedp.Click(chromedp.CSS(`[data-testid=connections] [data-testid=kick]`)),
	)
	testkit.ExpectClose(t, watched, 4403)
}
