package builtin_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/rooms"
	"github.com/roomgate/roomgate/rooms/builtin"
	"github.com/roomgate/roomgate/storage/filestore"
)

// probeSocket records what a room sends it. The runtime's contract with a
// socket is this interface; the gateway's tests drive the real one.
type probeSocket struct {
	id     rooms.SocketID
	frames chan string
	mu     sync.Mutex
	closed int
}

var nextID atomic.Uint64

func (s *probeSocket) ID() rooms.SocketID                  { return s.id }
func (s *probeSocket) SetAutoResponse(*rooms.AutoResponse) {}
func (s *probeSocket) LastAutoResponse() time.Time         { return time.Time{} }
func (s *probeSocket) Send(f rooms.Frame) error {
	select {
	case s.frames <- string(f.Data):
	default: // a flood of replies is not what this test looks at
	}
	return nil
}
func (s *probeSocket) Close(code int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed == 0 {
		s.closed = code
	}
	select {
	case s.frames <- "":
	default:
	}
}

// probes make each class answer the sender for sure: bad input it refuses.
var probes = map[string]string{
	"chat":    `{"type":"say"}`,
	"canvas":  `{"type":"paint"}`,
	"counter": `probe`,
	"echo":    `probe`,
}

// FuzzBuiltinClasses sends arbitrary messages to every built-in class. No
// input may fail the room (which would close the socket with 1011): bad
// input gets an error message and the socket stays open.
func FuzzBuiltinClasses(f *testing.F) {
	for _, seed := range []string{
		`{"type":"say","text":"hi"}`, `{"type":"say","text":1}`, `{"type":"say","text":""}`,
		`{"type":"paint","x":1,"y":2,"color":"#a0b0c0"}`, `{"type":"paint","x":1e309,"y":0,"color":"#000000"}`,
		`{"type":"paint","x":-0.0,"y":63,"color":"#FFFFFF"}`, `{"type":"cursor","x":1.5,"y":64}`,
		`inc`, `{`, `null`, `[]`, `"say"`, "\xff\xfe", `{"type":null}`, `{"type":"say","text":"\u0000"}`,
		`{"type":"history","before":2}`, `{"type":"history","before":9223372036854775807,"after":9223372036854775806}`,
		`{"type":"history","before":1.5}`, `{"type":"history","before":3,"after":-1}`, `{"type":"history","before":"1"}`,
	} {
		for class := range uint8(4) {
			f.Add(class, []byte(seed), false)
		}
	}
	rt := fuzzRuntime(f)
	ctx := context.Background()

	classes := []string{"chat", "canvas", "counter", "echo"}
	f.Fuzz(func(t *testing.T, class uint8, data []byte, binary bool) {
		name := classes[class%4]
		a := rooms.Addr{Class: name, Room: "fuzz"}
		s := &probeSocket{id: rooms.SocketID(nextID.Add(1)), frames: make(chan string, 64)}
		if err := rt.Connect(ctx, a, s, rooms.ConnectInfo{User: rooms.User{ID: "fuzzer", Name: "F"}}); err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer rt.Closed(a, s, 1000, "")
		op := rooms.Text
		if binary {
			op = rooms.Binary
		}
		probe := probes[name]
		for _, m := range []rooms.Frame{{Op: op, Data: data}, {Op: rooms.Text, Data: []byte(probe)}} {
			if err := rt.Message(ctx, a, s, m); err != nil {
				t.Fatalf("message: %v", err)
			}
		}
		deadline := time.After(5 * time.Second)
		for {
			select {
			case got := <-s.frames:
				s.mu.Lock()
				code := s.closed
				s.mu.Unlock()
				if code != 0 {
					t.Fatalf("%s closed the socket with %d on %q", name, code, data)
				}
				if got == probe || (name != "echo" && strings.Contains(got, `"type":"error"`) && lastIsProbe(name, got)) {
					return
				}
			case <-deadline:
				t.Fatalf("%s never answered the probe after %q", name, data)
			}
		}
	})
}

// FuzzChatResume connects to a chat room with ?since= set to anything and
// asks for a history page with any bounds: every socket gets its welcome
// and an answer, and none is closed.
func FuzzChatResume(f *testing.F) {
	for _, seed := range []struct {
		since         string
		before, after int64
	}{
		{"0", 3, 0}, {"2", 5, 1}, {"9223372036854775807", 9223372036854775807, 9223372036854775806},
		{"-1", 1, -1}, {"banana", 0, 0}, {"99999999999999999999", -9223372036854775808, 0}, {"+1", 2, 1}, {"", 1, 0},
	} {
		f.Add(seed.since, seed.before, seed.after)
	}
	rt := fuzzRuntime(f)
	ctx := context.Background()
	a := rooms.Addr{Class: "chat", Room: "resume"}
	// A few messages to page through.
	s := &probeSocket{id: rooms.SocketID(nextID.Add(1)), frames: make(chan string, 64)}
	if err := rt.Connect(ctx, a, s, rooms.ConnectInfo{User: rooms.User{ID: "w", Name: "W"}}); err != nil {
		f.Fatal(err)
	}
	for range 5 {
		if err := rt.Message(ctx, a, s, rooms.Frame{Op: rooms.Text, Data: []byte(`{"type":"say","text":"hello"}`)}); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, since string, before, after int64) {
		s := &probeSocket{id: rooms.SocketID(nextID.Add(1)), frames: make(chan string, 64)}
		q := url.Values{"since": {since}}
		if err := rt.Connect(ctx, a, s, rooms.ConnectInfo{User: rooms.User{ID: "fuzzer", Name: "F"}, Query: q.Encode()}); err != nil {
			t.Fatalf("connect with since=%q: %v", since, err)
		}
		defer rt.Closed(a, s, 1000, "")
		req := fmt.Sprintf(`{"type":"history","before":%d,"after":%d}`, before, after)
		if err := rt.Message(ctx, a, s, rooms.Frame{Op: rooms.Text, Data: []byte(req)}); err != nil {
			t.Fatalf("message: %v", err)
		}
		welcomed := false
		deadline := time.After(5 * time.Second)
		for {
			select {
			case got := <-s.frames:
				s.mu.Lock()
				code := s.closed
				s.mu.Unlock()
				if code != 0 {
					t.Fatalf("since=%q, %s: closed with %d", since, req, code)
				}
				switch {
				case strings.Contains(got, `"type":"welcome"`):
					welcomed = true
				case strings.HasPrefix(got, `{"type":"history"`) || strings.Contains(got, `"code":"bad_history"`):
					if !welcomed {
						t.Fatalf("since=%q: an answer before the welcome", since)
					}
					return
				}
			case <-deadline:
				t.Fatalf("since=%q, %s: no answer", since, req)
			}
		}
	})
}

// fuzzRuntime runs a runtime with the built-in classes on a store in a
// temporary directory for as long as the fuzz target runs.
func fuzzRuntime(f *testing.F) *rooms.Runtime {
	dir, err := os.MkdirTemp("", "fuzz-builtin")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	store, err := filestore.Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	rt, err := rooms.New(rooms.Options{Store: store, Metrics: prometheus.NewRegistry(), HibernateAfter: time.Hour}) // no socket table: nothing may hibernate
	if err != nil {
		f.Fatal(err)
	}
	builtin.Register(rt)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()
	f.Cleanup(func() { cancel(); <-done })
	return rt
}

// lastIsProbe recognises the error each class gives the probe.
func lastIsProbe(class, msg string) bool {
	switch class {
	case "chat":
		return strings.Contains(msg, `"code":"empty_text"`)
	case "canvas":
		return strings.Contains(msg, `"code":"bad_position"`)
	case "counter":
		return strings.Contains(msg, `"code":"bad_command"`)
	}
	return false
}

// Every built-in's On… methods are ones the runtime calls: none is
// misspelt or off its interface's signature.
func TestBuiltinsHaveOnlyRealHandlers(t *testing.T) {
	for name, newHandler := range map[string]func() rooms.Handler{
		"echo":    func() rooms.Handler { return builtin.Echo{} },
		"counter": func() rooms.Handler { return new(builtin.Counter) },
		"chat":    func() rooms.Handler { return new(builtin.Chat) },
		"canvas":  func() rooms.Handler { return new(builtin.Canvas) },
	} {
		if err := rooms.CheckClass(newHandler); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
