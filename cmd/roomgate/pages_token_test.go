package main

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gobwas/ws"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/web"
)

// The pages' side of tokens, checked in Chromium against a Go server that
// serves the real pages and records what reaches it: these tests are about
// what the pages send, whatever a node then makes of it.

// recorder serves the embedded pages and records every socket's query and
// every /v1 request's method, path and headers.
type recorder struct {
	mu      sync.Mutex
	sockets []url.Values
	calls   []apiCall
}

type apiCall struct {
	method, path        string
	auth, ctype, cookie string
}

func startRecorder(t *testing.T) (*httptest.Server, *recorder) {
	t.Helper()
	rec := &recorder{}
	mux := http.NewServeMux()
	mux.Handle("/", web.Handler())
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/ws/{class}/{room}", rec.socket)
	mux.HandleFunc("/v1/", rec.api)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, rec
}

// socket records the query and holds the socket open until the client
// leaves; the pages need nothing from it to connect.
func (rec *recorder) socket(w http.ResponseWriter, r *http.Request) {
	c, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	defer c.Close()
	rec.mu.Lock()
	rec.sockets = append(rec.sockets, r.URL.Query())
	rec.mu.Unlock()
	for {
		if _, err := ws.ReadFrame(c); err != nil {
			return
		}
	}
}

// api answers the admin page's calls with one node, one room and one
// connection.
func (rec *recorder) api(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	rec.calls = append(rec.calls, apiCall{
		method: r.Method, path: r.URL.Path,
		auth: r.Header.Get("Authorization"), ctype: r.Header.Get("Content-Type"), cookie: r.Header.Get("Cookie"),
	})
	rec.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/v1/nodes":
		fmt.Fprintf(w, `{"nodes":[{"id":"n1","address":"%s","sockets":1,"active_rooms":1,"started_at":"2025-01-01T00:00:00Z"}]}`, r.Host)
	case r.URL.Path == "/v1/rooms":
		w.Write([]byte(`{"rooms":[{"class":"chat","room":"watched","state":"active","owner":"n1","connections":1,"storage_keys":0}],"next_cursor":""}`))
	case strings.HasSuffix(r.URL.Path, "/connections"):
		w.Write([]byte(`{"connections":[{"id":"0000000000000001","user":{"id":"u1","name":"erin"},"tags":[],"edge":"n1","connected_at":"2025-01-01T00:00:00Z"}]}`))
	case strings.HasSuffix(r.URL.Path, "/storage"):
		w.Write([]byte(`{"items":[]}`))
	default:
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":{"code":"not_found","message":"no such route"}}`))
	}
}

func (rec *recorder) socketQueries() []url.Values {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.sockets)
}

func (rec *recorder) apiCalls() []apiCall {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.calls)
}

// fakeToken is shaped like a JWT whose claims name the user; nothing here
// checks its signature.
func fakeToken(name string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(`{"sub":"u-`+name+`","name":"`+name+`"}`)) + ".c2ln"
}

// TestBrowserPagesPassTheToken: chat and canvas opened with ?token= pass it
// to their socket as ?token= (with ?room= and ?name= kept), take it out of
// the address bar, and still have it after a reload. A page opened with
// ?room= and a token joins at once, named after the token.
func TestBrowserPagesPassTheToken(t *testing.T) {
	srv, rec := startRecorder(t)
	b := browser(t)
	tok := fakeToken("tina")
	for i, tc := range []struct{ path, ready string }{
		{"/chat/?room=tagged&name=tina&token=" + tok, `!document.getElementById('chat').hidden`},
		{"/canvas/?room=tagged&name=tina&token=" + tok, `!document.getElementById('stage').hidden`},
		{"/chat/?room=claimed&token=" + tok, `!document.getElementById('chat').hidden`}, // no ?name=: the token's
	} {
		page := tab(t, b, srv.URL+tc.path)
		run(t, page, waitJS(tc.ready))
		testkit.WaitFor(t, 10*time.Second, "the page's socket", func() bool { return len(rec.socketQueries()) == i+1 })
		q := rec.socketQueries()[i]
		if q.Get("token") != tok || q.Get("name") != "tina" || q.Get("user") == "" {
			t.Errorf("%s: the socket's query is %v; want the token, name=tina and the tab's user", tc.path, q)
		}
		if href := value[string](t, page, `location.href`); strings.Contains(href, "token") || !strings.Contains(href, "room=") {
			t.Errorf("%s: the address bar shows %s; want ?room= and ?name= and no token", tc.path, href)
		}
	}
	// A reload still has the token: it is the tab's, in sessionStorage.
	page := tab(t, b, srv.URL+"/chat/?room=reload&name=tina&token="+tok)
	run(t, page, waitJS(`!document.getElementById('chat').hidden`), chromedp.Reload(), waitJS(`!document.getElementById('chat').hidden`))
	testkit.WaitFor(t, 10*time.Second, "the reloaded page's socket", func() bool { return len(rec.socketQueries()) == 5 })
	if q := rec.socketQueries()[4]; q.Get("token") != tok {
		t.Errorf("after a reload the socket's query is %v; want the token", q)
	}
	if stored := value[string](t, page, `localStorage.getItem("roomgate.token") ?? ""`); stored != "" {
		t.Errorf("the token is in localStorage: %q; it belongs to the tab (sessionStorage)", stored)
	}
}
