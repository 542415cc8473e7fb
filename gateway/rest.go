package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/roomgate/roomgate/rooms"
)

// Errors of the REST API itself.
var (
	errForbidden   = errors.New("gateway: the admin API needs an admin token, or a loopback client in dev mode")
	errNotFound    = errors.New("gateway: no such route")
	errMethod      = errors.New("gateway: method not allowed on this route")
	errBodyTooBig  = errors.New("gateway: request body too big")
	errBadLimit    = errors.New("gateway: limit must be a number from 1 to 1000")
	errBadSocketID = errors.New("gateway: socket id is not valid")
)

// rest mounts the REST API of DESIGN §1 under /v1. Every call is an
// admin call (adminOnly) but RPC, which a token scoped to the room may
// make too (rpcAccess); a route added outside the admin groups below
// answers anyone, so add it inside one.
func (s *Server) rest(r chi.Router) {
	r.Route("/v1", func(r chi.Router) {
		r.Use(s.limitREST)
		// Nothing but an admin learns which routes exist.
		r.NotFound(s.adminOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.fail(w, errNotFound) })).ServeHTTP)
		r.MethodNotAllowed(s.adminOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.fail(w, errMethod) })).ServeHTTP)
		r.Group(func(r chi.Router) {
			r.Use(s.adminOnly)
			r.Get("/classes", func(w http.ResponseWriter, r *http.Request) {
				s.writeJSON(w, http.StatusOK, map[string]any{"classes": s.o.Admin.Classes()})
			})
			r.Get("/nodes", func(w http.ResponseWriter, r *http.Request) {
				nodes, err := s.o.Admin.Nodes(r.Context())
				s.reply(w, map[string]any{"nodes": nodes}, err)
			})
			r.Get("/rooms", s.listRooms)
		})
		r.Route("/rooms/{class}/{room}", func(r chi.Router) {
			// The scope is checked before the names, so a token learns
			// nothing of rooms it does not cover.
			r.With(s.rpcAccess, s.roomAddr).Post("/rpc/{method}", s.callRoom)
			r.Group(func(r chi.Router) {
				r.Use(s.adminOnly, s.roomAddr)
				r.Get("/", func(w http.ResponseWriter, r *http.Request) {
					info, err := s.o.Admin.Room(r.Context(), addrOf(r))
					s.reply(w, info, err)
				})
				r.Delete("/", func(w http.ResponseWriter, r *http.Request) {
					s.replyEmpty(w, s.o.Admin.DeleteRoom(r.Context(), addrOf(r)))
				})
				r.Get("/connections", func(w http.ResponseWriter, r *http.Request) {
					conns, err := s.o.Admin.Connections(r.Context(), addrOf(r))
					s.reply(w, map[string]any{"connections": conns}, err)
				})
				r.Delete("/connections/{id}", func(w http.ResponseWriter, r *http.Request) {
					id, err := rooms.ParseSocketID(chi.URLParam(r, "id"))
					if err != nil {
						s.replyEmpty(w, errBadSocketID)
						return
					}
					s.replyEmpty(w, s.o.Admin.Kick(r.Context(), addrOf(r), id))
				})
				r.Post("/broadcast", s.broadcast)
				r.Get("/storage", s.readStorage)
				r.HandleFunc("/request", s.forward)
				r.HandleFunc("/request/*", s.forward)
			})
		})
	})
}

// adminOnly admits admin tokens, or in dev mode local requests that no web
// page could have sent (admitAdmin).
func (s *Server) adminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.admitAdmin(r); err != nil {
			s.refuseREST(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuseREST answers a REST call that may not be made; a 401 says how to
// authenticate.
func (s *Server) refuseREST(w http.ResponseWriter, err error) {
	if _, status, _, _ := publicError(err); status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="roomgate"`)
	}
	s.fail(w, err)
}

type addrKey struct{}

// roomAddr checks the names in the path: 400 bad_name, 404 unknown_class.
func (s *Server) roomAddr(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := rooms.Addr{Class: chi.URLParam(r, "class"), Room: chi.URLParam(r, "room")}
		if !validName(a.Class, a.Room) {
			s.fail(w, errBadName)
			return
		}
		if !s.router.HasClass(a.Class) {
			s.fail(w, errUnknownClass)
			return
		}
		next.ServeHTTP(w, r.WithContext(contextWith(r, addrKey{}, a)))
	})
}

func addrOf(r *http.Request) rooms.Addr { return r.Context().Value(addrKey{}).(rooms.Addr) }

func (s *Server) listRooms(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := queryLimit(q.Get("limit"), 100)
	if err != nil {
		s.fail(w, err)
		return
	}
	class := q.Get("class")
	if class != "" && !rooms.ValidClass(class) {
		s.fail(w, errBadName)
		return
	}
	list, next, err := s.o.Admin.Rooms(r.Context(), class, q.Get("prefix"), q.Get("cursor"), limit)
	s.reply(w, map[string]any{"rooms": list, "next_cursor": next}, err)
}

func queryLimit(v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, errBadLimit
	}
	return n, nil
}

// readBody reads at most MaxMessageBytes of the body; more is errBodyTooBig.
func (s *Server) readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, int64(s.o.MaxMessageBytes)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", rooms.ErrBadRequest, err)
	}
	if len(b) > s.o.MaxMessageBytes {
		return nil, errBodyTooBig
	}
	return b, nil
}

// broadcast sends the body to the room's sockets, or those tagged ?tag=: as
// a binary message when the body is application/octet-stream or not UTF-8,
// else as text.
func (s *Server) broadcast(w http.ResponseWriter, r *http.Request) {
	body, err := s.readBody(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	f := rooms.Frame{Op: rooms.Text, Data: body}
	if r.Header.Get("Content-Type") == "application/octet-stream" || !utf8.Valid(body) {
		f.Op = rooms.Binary
	}
	s.replyEmpty(w, s.o.Admin.Broadcast(r.Context(), addrOf(r), r.URL.Query().Get("tag"), f))
}

// storageItem shows a value as text when it is UTF-8, else as base64.
type storageItem struct {
	Key         string  `json:"key"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 []byte  `json:"value_base64,omitempty"`
}

func (s *Server) readStorage(w http.ResponseWriter, r *http.Request) {
	limit, err := queryLimit(r.URL.Query().Get("limit"), 100)
	if err != nil {
		s.fail(w, err)
		return
	}
	kvs, err := s.o.Admin.Storage(r.Context(), addrOf(r), r.URL.Query().Get("prefix"), limit)
	items := make([]storageItem, 0, len(kvs))
	for _, kv := range kvs {
		it := storageItem{Key: kv.Key}
		if utf8.Valid(kv.Value) {
			v := string(kv.Value)
			it.Value = &v
		} else {
			it.ValueBase64 = kv.Value
		}
		items = append(items, it)
	}
	s.reply(w, map[string]any{"items": items}, err)
}

// forward hands the request to the room's OnRequest, with the path after
// /request as its URL path. The body is read first, so the room never
// waits on the network.
func (s *Server) forward(w http.ResponseWriter, r *http.Request) {
	body, err := s.readBody(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	req := r.Clone(r.Context())
	req.URL.Path = "/" + chi.URLParam(r, "*")
	req.URL.RawPath = ""
	req.RequestURI = req.URL.RequestURI()
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	if err := s.o.Admin.Request(r.Context(), addrOf(r), w, req); err != nil {
		s.fail(w, err)
	}
}

// fail answers a REST request with err. Every REST error goes through here,
// so a handler cannot forget to count the client's mistakes in
// roomgate_bad_input_total (DESIGN §3.6); publicErrors decides which are.
func (s *Server) fail(w http.ResponseWriter, err error) {
	s.countRefusal(err)
	WriteError(w, err)
}

func (s *Server) reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		s.fail(w, err)
		return
	}
	s.writeJSON(w, http.StatusOK, v)
}

func (s *Server) replyEmpty(w http.ResponseWriter, err error) {
	if err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func contextWith(r *http.Request, k, v any) context.Context {
	return context.WithValue(r.Context(), k, v)
}
