package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/internal/testkit"
)

// The pages, end to end, in a real headless Chromium against a real node.

// browser starts Chromium with a fresh profile, and extra flags. Tests
// that need it fail when it is not installed (./scripts/test installs it);
// they never skip.
func browser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("chromium is not installed (apt-get install chromium, or run ./scripts/test, which does)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 900),
	}
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	return bctx
}

// tab opens a new tab of the browser at url; its actions time out so a
// broken page fails the test instead of hanging it.
func tab(t *testing.T, b context.Context, url string) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return ctx
}

// run runs steps in a tab with a deadline.
func run(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// value evaluates a JavaScript expression in a tab.
func value[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitJS waits until the JavaScript expression is true in the tab.
func waitJS(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond))
}

// waitBackoffs is a negative check's window: it waits until a twin of
// the sockets under test, a RoomSocket with minDelay 50 ms whose token
// source always fails, has backed off n times (25 ms × (2ⁿ − 1) at
// least). A retry of a socket under test, with minDelay 50 ms too, would
// have shown by then. The window is counted in the client's own delays:
// a browser slow to run timers stretches it, where a sleep would not.
func waitBackoffs(t *testing.T, page context.Context, n int) {
	t.Helper()
	value[bool](t, page, `(() => {
		window.twinAsked = 0;
		import("/client.js").then(({ RoomSocket }) => {
			window.twin = new RoomSocket({ class: "echo", room: "twin", minDelay: 50, token: async () => {
				window.twinAsked++;
				throw new Error("no token, on purpose");
			} });
		});
		return true;
	})()`)
	run(t, page, waitJS(fmt.Sprintf(`window.twinAsked > %d`, n))) // the first ask is at once
	value[bool](t, page, `(window.twin.close(), true)`)
}

const chatSeqs = `[...document.querySelectorAll('[data-testid=message-item]')].map((e) => Number(e.dataset.seq))`

func say(text string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.SendKeys(chromedp.CSS(`[data-testid=message]`), text),
		chromedp.Click(chromedp.CSS(`[data-testid=send]`)),
	)
}

func TestBrowserChatTwoTabs(t *testing.T) {
	addr := startNode(t)
	b := browser(t)
	alice := tab(t, b, "http://"+addr+"/chat/?room=e2e&name=alice")
	bob := tab(t, b, "http://"+addr+"/chat/?room=e2e&name=bob")
	run(t, alice, waitJS(`document.querySelector('[data-testid=members]').innerText.includes('bob')`))
	run(t, alice, say("hello from alice"))
	run(t, bob, waitJS(`document.querySelector('[data-testid=messages]').innerText.includes('alice: hello from alice')`))
	run(t, bob, say("hi alice"))
	run(t, alice, waitJS(`document.querySelector('[data-testid=messages]').innerText.includes('bob: hi alice')`))
	if seqs := value[[]int](t, alice, chatSeqs); fmt.Sprint(seqs) != "[1 2]" {
		t.Fatalf("alice's messages have seqs %v, want [1 2]", seqs)
	}
}

// TestBrowserChatSurvivesRestart: the server drains and restarts while a
// tab is open, and messages are sent before the tab is back; the tab shows
// every message once, in order.
func TestBrowserChatSurvivesRestart(t *testing.T) {
	addr := testkit.FreeAddr(t)
	data := t.TempDir()
	node := start(t, addr, nil, "-addr", addr, "-data", data)
	b := browser(t)
	page := tab(t, b, "http://"+addr+"/chat/?room=restart&name=carol")
	run(t, page, waitJS(`document.querySelectorAll('[data-testid=members] li').length === 1`))
	run(t, page, say("one"), waitJS(chatSeqs+`.length === 1`), say("two"), waitJS(chatSeqs+`.length === 2`))

	node.Process.Signal(syscall.SIGTERM)
	node.Wait()
	start(t, addr, nil, "-addr", addr, "-data", data)
	// Another client talks before the tab has reconnected: the tab gets
	// these from the history of its resume (?since=2).
	other := dialChat(t, addr, "restart", "dave")
	other.next(t, "welcome", 5*time.Second)
	other.say("three")
	other.say("four")
	run(t, page, waitJS(`document.getElementById('banner').hidden`)) // reconnected
	other.say("five")
	run(t, page, waitJS(chatSeqs+`.length >= 5`))
	run(t, page, chromedp.Sleep(300*time.Millisecond)) // a duplicate would show by now
	if seqs := value[[]int](t, page, chatSeqs); fmt.Sprint(seqs) != "[1 2 3 4 5]" {
		t.Fatalf("after the restart the tab shows seqs %v, want [1 2 3 4 5]: no gap, no duplicate", seqs)
	}
}

func TestBrowserCanvasPaintReachesTheOtherTab(t *testing.T) {
	addr := startNode(t)
	b := browser(t)
	painter := tab(t, b, "http://"+addr+"/canvas/?room=art&name=painter")
	viewer := tab(t, b, "http://"+addr+"/canvas/?room=art&name=viewer")
	run(t, painter, waitJS(`document.querySelector('[data-testid=players]').innerText.includes('viewer')`))
	// Click the middle of cell (10, 20) of the 64×64 board.
	box := value[[]float64](t, painter, `(() => { const r = document.querySelector('[data-testid=board]').getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()`)
	x, y := box[0]+(10.5/64)*box[2], box[1]+(20.5/64)*box[3]
	run(t, painter, chromedp.MouseClickXY(x, y))
	pixel := `(() => { const d = document.querySelector('[data-testid=board]').getContext('2d').getImageData(10, 20, 1, 1).data; return d[0] === 0x43 && d[1] === 0x63 && d[2] === 0xd8; })()`
	run(t, viewer, waitJS(pixel))
	// The painter's pointer shows on the viewer's board, with its name.
	run(t, painter, waitJS(fmt.Sprintf(`(document.querySelector('[data-testid=board]').dispatchEvent(new PointerEvent('pointermove', {clientX: %f, clientY: %f, bubbles: true})), true)`, x+20, y+20)))
	run(t, viewer, waitJS(`[...document.querySelectorAll('[data-testid=cursor]')].some((c) => c.innerText.includes('painter'))`))
	// The board is persisted: a newcomer sees the paint too.
	late := tab(t, b, "http://"+addr+"/canvas/?room=art&name=late")
	run(t, late, waitJS(pixel))
}

func TestBrowserAdminListsRoomsAndKicks(t *testing.T) {
	addr := startNode(t)
	b := browser(t)
	chat := tab(t, b, "http://"+addr+"/chat/?room=watched&name=erin")
	run(t, chat, waitJS(`document.querySelectorAll('[data-testid=members] li').length === 1`))
	admin := tab(t, b, "http://"+addr+"/admin/")
	run(t, admin,
		waitJS(`document.querySelector('[data-testid=nodes]').innerText.includes('`+addr+`') || document.querySelectorAll('[data-testid=nodes] tbody tr').length === 1`),
		waitJS(`!!document.querySelector('[data-testid=room-row][data-room="chat/watched"]')`),
		chromedp.Click(chromedp.CSS(`[data-testid=room-row][data-room="chat/watched"] [data-testid=open-room]`)),
		waitJS(`document.querySelectorAll('[data-testid=connections] tbody tr').length === 1`),
		chromedp.Click(chromedp.CSS(`[data-testid=connections] [data-testid=kick]`)),
	)
	run(t, chat, waitJS(`document.getElementById('banner').innerText.includes('removed')`))
}

// TestPageScreenshots writes a PNG of each page into the directory named
// by ROOMGATE_SCREENSHOTS (docs/screenshots in the repository); without
// it, it only checks that every page renders.
func TestPageScreenshots(t *testing.T) {
	dir := os.Getenv("ROOMGATE_SCREENSHOTS")
	addr := startNode(t)
	b := browser(t)
	// Some life in the rooms first.
	friend := dialChat(t, addr, "lobby", "grace")
	friend.next(t, "welcome", 5*time.Second)
	friend.say("Welcome to the lobby!")
	painter := dialJSON(t, addr, "/ws/canvas/lobby?user=grace&name=grace")
	painter.next(t, "state", 5*time.Second)
	for i := range 24 {
		wsutil.WriteClientText(painter.c, []byte(fmt.Sprintf(`{"type":"paint","x":%d,"y":%d,"color":"#e6194b"}`, 20+i, 32+(i%6)-3)))
	}
	wsutil.WriteClientText(painter.c, []byte(`{"type":"cursor","x":40.5,"y":20.5}`))
	pages := []struct{ name, url, ready string }{
		{"landing", "/", `!!document.querySelector('h1')`},
		{"chat", "/chat/?room=lobby&name=heidi", `document.querySelectorAll('[data-testid=message-item]').length >= 1`},
		{"canvas", "/canvas/?room=lobby&name=heidi", `document.querySelector('[data-testid=players]').innerText.includes('grace')`},
		{"admin", "/admin/", `document.querySelectorAll('[data-testid=room-row]').length >= 2 && document.getElementById('c-rate').textContent !== '–'`},
	}
	for _, p := range pages {
		page := tab(t, b, "http://"+addr+p.url)
		run(t, page, waitJS(p.ready), chromedp.Sleep(300*time.Millisecond))
		png, err := chromedp.Run(page, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if dir != "" {
			if err := os.WriteFile(filepath.Join(dir, p.name+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestBrowserPagesFitAPhone loads every page at a phone's width: nothing is
// wider than the screen, and every form control has a label.
func TestBrowserPagesFitAPhone(t *testing.T) {
	addr := startNode(t)
	b := browser(t)
	for _, path := range []string{"/", "/chat/?room=phone&name=pat", "/canvas/?room=phone&name=pat", "/admin/"} {
		page := tab(t, b, "about:blank")
		run(t, page, chromedp.EmulateViewport(375, 740, chromedp.EmulateScale(2)), chromedp.Navigate("http://"+addr+path),
			waitJS(`document.readyState === 'complete'`), chromedp.Sleep(200*time.Millisecond))
		if over := value[float64](t, page, `document.documentElement.scrollWidth - window.innerWidth`); over > 0 {
			t.Errorf("%s is %v px wider than a 375 px phone screen", path, over)
		}
		unlabeled := value[[]string](t, page, `[...document.querySelectorAll('input, select, textarea')].filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map((e) => e.id || e.outerHTML)`)
		if len(unlabeled) > 0 {
			t.Errorf("%s has controls without a label: %v", path, unlabeled)
		}
	}
}

// A name the server would refuse (over 64 bytes of UTF-8, though under the
// field's 64 characters) is reported on the form; the page does not open a
// socket that could only ever reconnect.
func TestBrowserNameTooLongIsReported(t *testing.T) {
	addr := startNode(t)
	b := browser(t)
	long := strings.Repeat("🙂", 17) // 68 bytes, 34 UTF-16 units
	refused := tab(t, b, "http://"+addr+"/chat/?room=names&name="+url.QueryEscape(long))
	run(t, refused, waitJS(`document.getElementById('name').validity.customError`))
	joined := tab(t, b, "http://"+addr+"/chat/?room=names&name=short")
	run(t, joined, waitJS(`document.querySelector('[data-testid=members]').innerText.includes('short')`))
	if !value[bool](t, refused, `document.getElementById('chat').hidden`) {
		t.Fatal("the page joined the room with a name the server refuses")
	}
}

// A handshake the server refuses reaches a browser only as 1006; the
// client asks why over plain HTTP, reports the refusal and stops, where it
// used to reconnect forever in silence.
func TestBrowserRefusedHandshakeIsReported(t *testing.T) {
	addr := startNode(t)
	page := tab(t, browser(t), "http://"+addr+"/")
	value[bool](t, page, `(() => {
		window.events = [];
		import("/client.js").then(({ RoomSocket }) => {
			for (const [cls, room] of [["nope", "x"], ["echo", "bad name"], ["echo", "fine"]]) {
				const s = new RoomSocket({ class: cls, room, minDelay: 50 });
				for (const type of ["open", "close", "reconnecting", "refused"]) {
					s.addEventListener(type, (e) => window.events.push({ room: cls + "/" + room, type, refusal: type === "refused" ? e.detail : null }));
				}
			}
		});
		return true;
	})()`)
	run(t, page, waitJS(`window.events.filter((e) => e.type === "refused").length === 2 && window.events.some((e) => e.type === "open")`))
	waitBackoffs(t, page, 5) // a retry would have shown
	type event struct {
		Room, Type string
		Refusal    struct {
			Status  int
			Code    string
			Message string
		}
	}
	events := value[[]event](t, page, `window.events`)
	got := map[string][]string{}
	for _, e := range events {
		got[e.Room] = append(got[e.Room], e.Type)
		if e.Type == "refused" {
			want := map[string]string{"nope/x": "404 unknown_class", "echo/bad name": "400 bad_name"}[e.Room]
			if have := fmt.Sprintf("%d %s", e.Refusal.Status, e.Refusal.Code); have != want || e.Refusal.Message == "" {
				t.Errorf("%s refused with %s %q; want %s and a message", e.Room, have, e.Refusal.Message, want)
			}
		}
	}
	for room, want := range map[string]string{"nope/x": "close refused", "echo/bad name": "close refused", "echo/fine": "open"} {
		if have := strings.Join(got[room], " "); have != want {
			t.Errorf("%s: events %q; want %q", room, have, want)
		}
	}
}

// When the probe finds nothing to report, the client reconnects as before.
func TestBrowserUnexplainedHandshakeFailureReconnects(t *testing.T) {
	// The node refuses this page's Origin, which the probe cannot see: a
	// same-origin GET carries none, so it is admitted (bad_handshake).
	addr := startNode(t, "-allowed-origins", "http://elsewhere.example")
	page := tab(t, browser(t), "http://"+addr+"/")
	value[bool](t, page, `(() => {
		window.events = [];
		import("/client.js").then(({ RoomSocket }) => {
			const s = new RoomSocket({ class: "echo", room: "retried", minDelay: 50 });
			for (const type of ["open", "close", "reconnecting", "refused"]) {
				s.addEventListener(type, () => window.events.push(type));
			}
		});
		return true;
	})()`)
	run(t, page, waitJS(`window.events.filter((e) => e === "reconnecting").length >= 2`))
	if events := value[[]string](t, page, `window.events`); slices.Contains(events, "refused") || slices.Contains(events, "open") {
		t.Fatalf("events %q: want close and reconnecting only", events)
	}
}
