package rooms

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"time"
	"unicode"
)

// Handler is a room class's code. The runtime makes one Handler per room
// instance with the class's constructor and calls it from the room's one
// goroutine, one event at a time, so a Handler needs no locks. Its fields
// are the room's in-memory state: they are lost when the instance is
// rebuilt (after a failure, an eviction or a restart), while what it puts
// in Storage stays.
type Handler interface {
	// OnMessage handles one client message. f.Data is valid until OnMessage
	// returns (see Frame). An error fails the event and closes c with 1011,
	// except a *CloseError: the event commits, then c is closed with its code.
	OnMessage(ctx context.Context, r *Room, c *Conn, f Frame) error
}

// A Handler may also implement any of the following.

// StartHandler runs before the first event after every instantiation, like
// Durable Objects' blockConcurrencyWhile in the constructor: load state here.
type StartHandler interface {
	OnStart(ctx context.Context, r *Room) error
}

// ConnectHandler accepts or refuses a new socket. An error refuses it: the
// socket is closed with 4403 (or the error's own code, see CloseError) and
// the room hears nothing more of it. Tags can only be set here.
type ConnectHandler interface {
	OnConnect(ctx context.Context, r *Room, c *Conn) error
}

// CloseHandler learns that a socket is gone, and how (see CloseInfo). c is
// no longer in r.Conns.
type CloseHandler interface {
	OnClose(ctx context.Context, r *Room, c *Conn, info CloseInfo) error
}

// AlarmHandler runs when the room's alarm is due. An error retries it with
// exponential backoff (from 2 s, 6 tries in all); a.Retry counts the retries.
type AlarmHandler interface {
	OnAlarm(ctx context.Context, r *Room, a AlarmInfo) error
}

// RequestHandler serves HTTP requests sent to the room through
// /v1/rooms/{class}/{room}/request/{path}, like Durable Objects' fetch.
// req.URL.Path is "/" + path. The response is held, like a socket send,
// until the event's writes are committed.
type RequestHandler interface {
	OnRequest(ctx context.Context, r *Room, w http.ResponseWriter, req *http.Request) error
}

// CloseInfo describes how a socket ended, like the browser's CloseEvent
// and the arguments of Durable Objects' webSocketClose. It is a struct so
// that fields can be added without breaking every class.
type CloseInfo struct {
	// Code is the close frame's code: the client's (1005 when its frame
	// had none), or the one sent to it by the room (Conn.Close, a
	// CloseError), a kick (4403), or the runtime and the edge (1008 slow
	// consumer, 1011 failed event, 1012 drain). 1006 when there was none.
	Code   int
	Reason string
	// Clean is true when the socket ended with a close frame, the client's
	// or one sent to it; false, with Code 1006, when the connection
	// dropped or the node that held it was lost.
	Clean bool
}

// AlarmInfo describes an alarm run.
type AlarmInfo struct {
	Scheduled time.Time // when the alarm was set to fire
	Retry     int       // 0 on the first try
	// Name and Payload are a schedule's (Room.Schedule); Name is "" for
	// the room's one alarm.
	Name    string
	Payload []byte
}

// CloseError closes a socket with a code of the class's choosing, e.g.
// &CloseError{Code: 4000, Reason: "bad input"}; errors.As finds it when
// wrapped. Returned from OnConnect it refuses the socket with that code.
// Returned from OnMessage it is a deliberate close, not a failure: the
// event's writes and sends commit as usual, then only the message's
// socket is closed (after what it was sent), and the instance keeps its
// fields. From any other handler it fails the event like any error. A code
// that may not appear on the wire is sent as 1011 (see Socket.Close).
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string { return "rooms: close " + e.Reason }

// class is a registered class.
type class struct {
	name    string
	new     func() Handler
	methods map[string]bool // the names its RPCHandler declares
}

// handlerMethods maps each handler method's name to its interface and
// its signature as it reads in Go (written out, not looked up: see
// checkHandler).
var handlerMethods = map[string]struct {
	typ       reflect.Type
	signature string
}{
	"OnMessage": {reflect.TypeFor[Handler](), "(context.Context, *rooms.Room, *rooms.Conn, rooms.Frame) error"},
	"OnStart":   {reflect.TypeFor[StartHandler](), "(context.Context, *rooms.Room) error"},
	"OnConnect": {reflect.TypeFor[ConnectHandler](), "(context.Context, *rooms.Room, *rooms.Conn) error"},
	"OnClose":   {reflect.TypeFor[CloseHandler](), "(context.Context, *rooms.Room, *rooms.Conn, rooms.CloseInfo) error"},
	"OnAlarm":   {reflect.TypeFor[AlarmHandler](), "(context.Context, *rooms.Room, rooms.AlarmInfo) error"},
	"OnRequest": {reflect.TypeFor[RequestHandler](), "(context.Context, *rooms.Room, http.ResponseWriter, *http.Request) error"},
	"Methods":   {reflect.TypeFor[RPCHandler](), "() []rooms.RPCMethod"},
}

// checkHandler refuses, at Register, a handler method the runtime would
// never call, because it finds handlers by type assertion: a method named
// like a handler whose signature differs from its interface's (OnClose
// before it took a CloseInfo), or a pointer method of a class whose
// constructor returns a value. Either compiles and is silently ignored.
//
// Each name is looked up as a constant on purpose: a method lookup by a
// computed name or by index makes the linker keep every exported method
// of every type, which made the binary 40% larger. CheckClass, which
// tests call, also finds misspelt names.
func checkHandler(h Handler) error {
	t := reflect.TypeOf(h)
	if t == nil {
		return fmt.Errorf("the constructor returned nil")
	}
	ptr := t
	if t.Kind() != reflect.Pointer {
		ptr = reflect.PointerTo(t)
	}
	for _, c := range [...]struct {
		name           string
		onPtr, onValue lookup
	}{
		{"OnMessage", look(ptr.MethodByName("OnMessage")), look(t.MethodByName("OnMessage"))},
		{"OnStart", look(ptr.MethodByName("OnStart")), look(t.MethodByName("OnStart"))},
		{"OnConnect", look(ptr.MethodByName("OnConnect")), look(t.MethodByName("OnConnect"))},
		{"OnClose", look(ptr.MethodByName("OnClose")), look(t.MethodByName("OnClose"))},
		{"OnAlarm", look(ptr.MethodByName("OnAlarm")), look(t.MethodByName("OnAlarm"))},
		{"OnRequest", look(ptr.MethodByName("OnRequest")), look(t.MethodByName("OnRequest"))},
		{"Methods", look(ptr.MethodByName("Methods")), look(t.MethodByName("Methods"))},
	} {
		iface := handlerMethods[c.name]
		switch {
		case c.onPtr.ok && !c.onValue.ok:
			return pointerMethodError(c.name, t, ptr)
		case c.onValue.ok && !t.Implements(iface.typ):
			// The method's type includes its receiver: drop it.
			got := c.onPtr.m.Type
			in := make([]reflect.Type, 0, got.NumIn()-1)
			for k := 1; k < got.NumIn(); k++ {
				in = append(in, got.In(k))
			}
			out := make([]reflect.Type, 0, got.NumOut())
			for k := range got.NumOut() {
				out = append(out, got.Out(k))
			}
			sig := strings.TrimPrefix(reflect.FuncOf(in, out, got.IsVariadic()).String(), "func")
			return fmt.Errorf("%s has %s%s, which does not match %s's %s%s, so the runtime would never call it",
				t, c.name, sig, iface.typ, c.name, iface.signature)
		}
	}
	return nil
}

// lookup is one result of reflect.Type.MethodByName.
type lookup struct {
	m  reflect.Method
	ok bool
}

func look(m reflect.Method, ok bool) lookup { return lookup{m, ok} }

// CheckClass reports every On… method of the Handler newHandler returns
// that the runtime would never call: what Register refuses, and also a
// misspelt name (OnClsoe) or one that matches no handler (OnTick). Call it
// from a class's tests, not from a program: it scans the type's methods
// by index, which makes the linker keep every exported method of every
// type in the binary.
func CheckClass(newHandler func() Handler) error {
	h := newHandler()
	if err := checkHandler(h); err != nil {
		return err
	}
	t := reflect.TypeOf(h)
	ptr := t
	if t.Kind() != reflect.Pointer {
		ptr = reflect.PointerTo(t)
	}
	for i := range ptr.NumMethod() {
		name := ptr.Method(i).Name
		if len(name) <= 2 || !strings.HasPrefix(name, "On") || !unicode.IsUpper(rune(name[2])) {
			continue
		}
		if _, ok := t.MethodByName(name); !ok {
			return pointerMethodError(name, t, ptr)
		}
		if _, ok := handlerMethods[name]; !ok {
			hint := "the handler methods are OnStart, OnConnect, OnMessage, OnClose, OnAlarm and OnRequest"
			if want, d := closestHandlerMethod(name); d <= 3 {
				hint = fmt.Sprintf("did you mean %s's %s?", handlerMethods[want].typ, want)
			}
			return fmt.Errorf("%s has %s, which matches no handler interface, so the runtime would never call it (%s)", t, name, hint)
		}
	}
	return nil
}

func pointerMethodError(name string, t, ptr reflect.Type) error {
	return fmt.Errorf("%s has a pointer receiver and the constructor returns a %s, so the runtime would never call it; return a %s", name, t, ptr)
}

// closestHandlerMethod returns the handler method whose name is nearest to
// name, and its edit distance; ties go to the first in alphabetical order.
func closestHandlerMethod(name string) (best string, dist int) {
	for m := range handlerMethods {
		if !strings.HasPrefix(m, "On") {
			continue // Methods is no On… handler
		}
		d := editDistance(name, m)
		if best == "" || d < dist || d == dist && m < best {
			best, dist = m, d
		}
	}
	return best, dist
}

// editDistance is the Levenshtein distance between a and b, by byte.
func editDistance(a, b string) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
