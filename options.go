package roomgate

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/roomgate/roomgate/rooms"
	"github.com/roomgate/roomgate/rooms/builtin"
	"github.com/roomgate/roomgate/web"
)

// An Option adds an application's part to a node: a room class, the
// built-in classes, an HTTP route. Main and New take the same options;
// what the flags set is a Config, not an Option.
type Option func(*options)

// options is what the Options of one Main or New call add up to.
type options struct {
	classes []func(*rooms.Runtime) // in the order given, so a clash panics on the second
	routes  []route
}

type route struct {
	pattern string
	handler http.Handler
}

// Class registers a room class under name: browsers reach its rooms at
// /ws/{name}/{room}, and newHandler makes one instance per room each time
// the room wakes. The name is DESIGN §1's class name, [a-z][a-z0-9-]{0,63}.
// An invalid name, a name registered twice (also against Builtins), or a
// handler method with a wrong signature panics when Main or New starts:
// these are mistakes in the program, not in its input.
func Class(name string, newHandler func() rooms.Handler) Option {
	if newHandler == nil {
		panic(fmt.Sprintf("roomgate: Class %q: nil newHandler", name))
	}
	return func(o *options) {
		o.classes = append(o.classes, func(rt *rooms.Runtime) { rt.Register(name, newHandler) })
	}
}

// Builtins registers Roomgate's built-in classes: echo, counter, chat and
// canvas (DESIGN §1). cmd/roomgate is Main(Builtins()). Leave it out to
// serve only your own classes; the pages for chat and canvas then find no
// class behind them.
func Builtins() Option {
	return func(o *options) { o.classes = append(o.classes, builtin.Register) }
}

// Handle serves pattern with h beside Roomgate's own routes, on the same
// listener. The pattern is a net/http ServeMux pattern ("GET /polls/{id}",
// "/hooks/"), and h may read r.PathValue.
//
// Roomgate's routes come first and cannot be taken: a pattern under /ws/,
// /v1, /healthz, /readyz, /metrics or the node-to-node link makes New fail.
// Your routes come before Roomgate's pages, so a pattern may replace one
// of them; "/" replaces them all (landing, chat, canvas, admin, client.js).
// Two patterns that clash make New fail, as http.ServeMux would panic.
// h runs on net/http's goroutines, outside any room: to change a room,
// call it (REST, or the rooms API from Go).
func Handle(pattern string, h http.Handler) Option {
	return func(o *options) { o.routes = append(o.routes, route{pattern, h}) }
}

// reserved are the paths the gateway routes itself, and the link between
// nodes; an application route there would never be reached, or worse,
// would take the link's place.
var reserved = []string{"/ws/", "/v1", "/healthz", "/readyz", "/metrics", rooms.LinkPath}

// handler serves what the gateway does not route itself: links from other
// nodes, the application's routes, then the web pages.
func (o *options) handler(links http.Handler) (h http.Handler, err error) {
	mux := http.NewServeMux()
	mux.Handle(rooms.LinkPath, links)
	defer func() {
		// ServeMux panics on a pattern it cannot parse or that clashes
		// with another; that is the application's mistake, told at start.
		if p := recover(); p != nil {
			h, err = nil, fmt.Errorf("roomgate: Handle: %v", p)
		}
	}()
	for _, r := range o.routes {
		if r.handler == nil {
			return nil, fmt.Errorf("roomgate: Handle %q: nil handler", r.pattern)
		}
		if p := routePath(r.pattern); p != "" {
			for _, res := range reserved {
				if p == res || strings.HasPrefix(p, strings.TrimSuffix(res, "/")+"/") {
					return nil, fmt.Errorf("roomgate: Handle %q: %s is Roomgate's own route", r.pattern, res)
				}
			}
		}
		mux.Handle(r.pattern, r.handler)
	}
	pagesUnder(mux)
	return mux, nil
}

// routePath is the path of a ServeMux pattern, "[METHOD ][HOST]/PATH".
func routePath(pattern string) string {
	if _, rest, ok := strings.Cut(pattern, " "); ok {
		pattern = strings.TrimLeft(rest, " \t")
	}
	if i := strings.IndexByte(pattern, '/'); i >= 0 {
		return pattern[i:]
	}
	return ""
}

// pagesUnder serves the web pages on every path mux leaves, unless an
// application pattern already matches every path ("/", "/{path...}"):
// ServeMux refuses a second such pattern, and then the application's
// one replaces the pages.
func pagesUnder(mux *http.ServeMux) {
	defer func() { _ = recover() }()
	mux.Handle("/", web.Handler())
}

// errNoClass is New's answer to a node with nothing to serve.
var errNoClass = errors.New("roomgate: no room class: pass roomgate.Builtins(), roomgate.Class(...) or both")
