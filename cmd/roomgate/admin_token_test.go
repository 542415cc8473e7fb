package main

import (
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/roomgate/roomgate/internal/testkit"
)

// TestBrowserAdminSendsBearer: the admin page sends its token as a bearer
// token on every /v1 call once it is given (none before, as in dev mode),
// keeps it in sessionStorage only and never in its URL, and sends no
// cookie. Its calls that change state carry a JSON content type, so none
// is a request a page on another site could send without a preflight.
func TestBrowserAdminSendsBearer(t *testing.T) {
	srv, rec := startRecorder(t)
	b := browser(t)
	page := tab(t, b, srv.URL+"/")
	// A cookie for the origin, to see that the page does not send it.
	run(t, page, waitJS(`(document.cookie = "session=s3cret; path=/", true)`), chromedp.Navigate(srv.URL+"/admin/"))
	run(t, page, waitJS(`!!document.querySelector('[data-testid=room-row][data-room="chat/watched"]')`))
	before := len(rec.apiCalls())
	const tok = "admin-token-123"
	run(t, page,
		chromedp.SendKeys(chromedp.CSS(`#token`), tok),
		chromedp.Click(chromedp.CSS(`#auth button`)),
		chromedp.Click(chromedp.CSS(`[data-testid=room-row][data-room="chat/watched"] [data-testid=open-room]`)),
		waitJS(`document.querySelectorAll('[data-testid=connections] tbody tr').length === 1`),
		chromedp.Click(chromedp.CSS(`[data-testid=connections] [data-testid=kick]`)),
	)
	testkit.WaitFor(t, 10*time.Second, "the kick", func() bool {
		return slices.ContainsFunc(rec.apiCalls(), func(c apiCall) bool { return c.method == "DELETE" })
	})
	value[bool](t, page, `(window.confirm = () => true, true)`) // the delete button asks first
	run(t, page, chromedp.Click(chromedp.CSS(`[data-testid=delete-room]`)))
	testkit.WaitFor(t, 10*time.Second, "the delete", func() bool {
		return slices.ContainsFunc(rec.apiCalls(), func(c apiCall) bool { return c.method == "DELETE" && c.path == "/v1/rooms/chat/watched" })
	})
	// After a reload the page still has the token, from sessionStorage.
	reloaded := len(rec.apiCalls())
	run(t, page, chromedp.Reload(), waitJS(`!!document.querySelector('[data-testid=room-row]')`))
	testkit.WaitFor(t, 10*time.Second, "a call after the reload", func() bool { return len(rec.apiCalls()) > reloaded })

	calls := rec.apiCalls()
	for i, c := range calls {
		if c.cookie != "" {
			t.Errorf("%s %s sent cookies %q", c.method, c.path, c.cookie)
		}
		if i < before && c.auth != "" {
			t.Errorf("%s %s sent %q before a token was given", c.method, c.path, c.auth)
		}
		if i >= before && c.auth != "Bearer "+tok {
			t.Errorf("%s %s sent Authorization %q, want the bearer token", c.method, c.path, c.auth)
		}
		if c.method != "GET" && c.ctype != "application/json" && c.ctype != "application/octet-stream" {
			t.Errorf("%s %s has Content-Type %q: a cross-site page could send it without a preflight", c.method, c.path, c.ctype)
		}
	}
	if n := len(calls) - before; n < 5 {
		t.Errorf("only %d calls after the token was given", n)
	}
	if got := value[string](t, page, `sessionStorage.getItem("roomgate.admin") ?? ""`); got != tok {
		t.Errorf("sessionStorage holds %q, want the token", got)
	}
	if leaked := value[bool](t, page, `Object.keys(localStorage).some((k) => localStorage.getItem(k).includes("`+tok+`")) || location.href.includes("`+tok+`")`); leaked {
		t.Error("the admin token is in localStorage or in the page's URL")
	}
}
