package gateway

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/roomgate/roomgate/auth"
	"github.com/roomgate/roomgate/rooms"
)

// Who may open a socket. With Options.Auth set, every socket needs a token
// that covers its room. Without it the gateway is in dev mode: anyone may
// open any socket as anyone.

// Refusals of authentication and authorization. Token faults themselves
// are auth.ErrMissing, auth.ErrInvalid and auth.ErrExpired.
var (
	errTokenScope = errors.New("gateway: the token does not cover this room")
)

// setAuthorization keeps a handshake's Authorization header. A second one
// makes the token ambiguous, and the handshake is refused as invalid.
func (h *handshake) setAuthorization(v string) {
	if h.authorization != "" || h.authorizations > 0 {
		h.authorizations = 2
		return
	}
	h.authorization, h.authorizations = v, 1
}

// bearer returns the token of an "Authorization: Bearer <token>" header;
// "" for none, or for another scheme, which is not for us.
func bearer(header string) string {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// tokenInfo is connectInfo when a key is configured: the user is the
// token's sub and name, ?user= and ?name= are ignored and, like the token,
// left out of what the room sees, so no class mistakes them for the user.
func (s *Server) tokenInfo(h *handshake) (rooms.ConnectInfo, error) {
	q, err := url.ParseQuery(h.query)
	if err != nil {
		return rooms.ConnectInfo{}, fmt.Errorf("%w: %v", errBadQuery, err)
	}
	if h.authorizations > 1 || len(q["token"]) > 1 {
		return rooms.ConnectInfo{}, fmt.Errorf("%w: more than one token", auth.ErrInvalid)
	}
	tok := bearer(h.authorization)
	if tok == "" {
		tok = q.Get("token")
	}
	c, err := s.o.Auth.Verify(tok)
	if errors.Is(err, auth.ErrMissing) {
		return rooms.ConnectInfo{}, fmt.Errorf("%w: send one as Authorization: Bearer or ?token=", err)
	}
	if err != nil {
		return rooms.ConnectInfo{}, err
	}
	name := c.Name
	if name == "" && len(c.Subject) <= maxNameBytes {
		name = c.Subject
	}
	if !validUser(c.Subject, name) {
		return rooms.ConnectInfo{}, fmt.Errorf("%w: sub must be at most 128 bytes and name at most 64, printable UTF-8", auth.ErrInvalid)
	}
	if !c.Covers(h.class, h.room) {
		return rooms.ConnectInfo{}, fmt.Errorf("%w: %s/%s", errTokenScope, h.class, h.room)
	}
	h.expires = c.ExpiresAt.Add(s.o.Auth.Leeway()).UnixNano()
	q.Del("token")
	q.Del("user")
	q.Del("name")
	return rooms.ConnectInfo{
		User:       rooms.User{ID: c.Subject, Name: name},
		Query:      q.Encode(),
		RemoteAddr: h.remote,
		Claims:     c.Extra,
	}, nil
}

// expire closes sk with 4401 once its token has expired. The janitor asks
// for every socket on each sweep: a deadline in the socket costs 8 bytes,
// where a timer would cost a runtime timer and a closure per socket.
func (s *Server) expire(sk *socket, now int64) {
	if exp := sk.expires.Load(); exp != 0 && exp < now && sk.expires.CompareAndSwap(exp, 0) {
		code, reason := closeFor(auth.ErrExpired)
		sk.Close(code, reason)
	}
}

// janitorEvery is how often the janitor sweeps: a quarter of
// MessageTimeout, and with tokens at least every second, so a socket
// outlives its token by a second at most.
func (s *Server) janitorEvery() time.Duration {
	every := max(s.o.MessageTimeout/4, 10*time.Millisecond)
	if s.o.Auth != nil {
		every = min(every, time.Second)
	}
	return every
}
