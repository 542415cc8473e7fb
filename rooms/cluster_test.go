package rooms

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/storage/redisstore"
	"github.com/roomgate/roomgate/storage/redisstore/redistest"
)

// clusterNode is an in-process cluster node: a Runtime on Redis whose
// links are served on a port of its own. (The gateway is not needed to
// exercise what rooms do between nodes.)
func clusterNode(t *testing.T, redisURL, id string, register func(*Runtime)) *Runtime {
	t.Helper()
	rs, err := redisstore.Open(context.Background(), redisstore.Options{URL: redisURL})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := New(Options{Store: rs, Coordinator: rs, Metrics: prometheus.NewRegistry(), NodeID: id, Address: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	register(rt)
	mux := http.NewServeMux()
	mux.Handle(LinkPath, rt.LinkHandler())
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		rs.Close()
	})
	return rt
}

// responder answers requests with what they asked for, from whichever node
// runs the room.
type responder struct{ node string }

func (r *responder) OnMessage(context.Context, *Room, *Conn, Frame) error { return nil }

func (r *responder) OnRequest(ctx context.Context, room *Room, w http.ResponseWriter, req *http.Request) error {
	body, _ := io.ReadAll(req.Body)
	w.Header().Set("X-Answered-By", r.node)
	w.WriteHeader(http.StatusTeapot)
	io.WriteString(w, req.Method+" "+req.URL.Path+" "+string(body))
	return nil
}

func TestRequestForwardedToTheOwner(t *testing.T) {
	redis := redistest.Start(t)
	nodes := map[string]*Runtime{}
	for _, id := range []string{"a", "b"} {
		nodes[id] = clusterNode(t, redis.URL(), id, func(rt *Runtime) {
			rt.Register("responder", func() Handler { return &responder{node: id} })
		})
	}
	room := Addr{Class: "responder", Room: "r"}
	ask := func(rt *Runtime, body string) *httptest.ResponseRecorder {
		t.Helper()
		w := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/thing", strings.NewReader(body))
		if err := rt.Request(context.Background(), room, w, req); err != nil {
			t.Fatal(err)
		}
		return w
	}
	ask(nodes["a"], "first") // places the room on a
	w := ask(nodes["b"], "second")
	if w.Code != http.StatusTeapot || w.Header().Get("X-Answered-By") != "a" || w.Body.String() != "POST /thing second" {
		t.Fatalf("through b: %d %v %q; want 418 from a with the request echoed", w.Code, w.Header(), w.Body.String())
	}
	info, err := nodes["b"].Room(context.Background(), room)
	if err != nil || info.Owner != "a" || info.State != "active" {
		t.Fatalf("b describes the room as %+v, %v", info, err)
	}
}
