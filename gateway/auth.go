package gateway

import (
	"errors"
	"fmt"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/roomgate/roomgate/auth"
	"github.com/roomgate/roomgate/rooms"
)

// Who may open a socket and call the admin API. With Options.Auth set,
// every socket needs a token that covers its room and every admin call a
// token with admin: true. Without it the gateway is in dev mode: anyone
// may open any socket as anyone, and the admin API answers only requests
// that come from this machine and that no web page could have sent.

// Refusals of authentication and authorization. Token faults themselves
// are auth.ErrMissing, auth.ErrInvalid and auth.ErrExpired.
var (
	errTokenScope = errors.New("gateway: the token does not cover this room")
	errNotAdmin   = errors.New("gateway: the admin API needs a token with admin: true")
	errAdminHost  = errors.New("gateway: in dev mode the admin API answers only a Host of localhost, 127.0.0.1 or [::1]")
	errCrossSite  = errors.New("gateway: in dev mode the admin API refuses what a web page could send from another site")
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
	h.expires = expiryNanos(c.ExpiresAt.Add(s.o.Auth.Leeway()))
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

// expiryNanos is when a socket's token expires, in Unix nanoseconds, or 0
// (never) for a time past 2262, where they end: UnixNano would wrap a
// token meant never to expire (exp 9999999999) around to the past.
func expiryNanos(t time.Time) int64 {
	if t.After(time.Unix(0, math.MaxInt64)) {
		return 0
	}
	return t.UnixNano()
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
	every := max(min(s.o.MessageTimeout, s.o.WriteTimeout)/4, 10*time.Millisecond)
	if s.o.Auth != nil {
		every = min(every, time.Second)
	}
	return every
}

// admitAdmin decides whether r may call the admin API.
func (s *Server) admitAdmin(r *http.Request) error {
	if s.o.Auth == nil {
		return s.devAdmin(r)
	}
	c, err := s.restToken(r)
	if err != nil {
		return err
	}
	if !c.Admin {
		return errNotAdmin
	}
	return nil
}

// restToken verifies the token of a REST call. Only the header: a token
// in the URL of a REST call would end up in proxies' access logs, and a
// cookie-less header is what keeps other sites' pages from making the
// call.
func (s *Server) restToken(r *http.Request) (auth.Claims, error) {
	if len(r.Header.Values("Authorization")) > 1 {
		return auth.Claims{}, fmt.Errorf("%w: more than one Authorization header", auth.ErrInvalid)
	}
	c, err := s.o.Auth.Verify(bearer(r.Header.Get("Authorization")))
	if errors.Is(err, auth.ErrMissing) {
		return auth.Claims{}, fmt.Errorf("%w: the REST API needs Authorization: Bearer and an admin token (for RPC, one that covers the room)", err)
	}
	return c, err
}

// proxyHeaders betray a request relayed by a proxy: from this machine's
// address, but on behalf of someone else.
var proxyHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-Ip", "Via"}

// devAdmin admits an admin request in dev mode only if it comes from this
// machine, addressed to it by a local name (a DNS-rebound name is not),
// and could not have been sent by a page of another site: browsers send
// such a request cross-site without asking (no CORS preflight) only as a
// GET, or as a POST with a form or text/plain body.
func (s *Server) devAdmin(r *http.Request) error {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return errForbidden
	}
	for _, h := range proxyHeaders {
		if _, ok := r.Header[h]; ok {
			return fmt.Errorf("%w (the request came through a proxy: %s)", errForbidden, h)
		}
	}
	if !localHost(r.Host) {
		return errAdminHost
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return fmt.Errorf("%w: Sec-Fetch-Site is %s", errCrossSite, site)
	}
	if origin, ok := r.Header["Origin"]; ok && (len(origin) != 1 || !s.sameOrigin(origin[0], r)) {
		return fmt.Errorf("%w: Origin is not this server", errCrossSite)
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" && r.Method == http.MethodPost || simpleContentType(ct) {
		return fmt.Errorf("%w: give a Content-Type such as application/json or application/octet-stream", errCrossSite)
	}
	return nil
}

// localHost reports whether a Host header names this machine by a
// loopback name, any port.
func localHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
	}
	switch strings.ToLower(host) {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}

// sameOrigin reports whether origin is the node's own. The scheme comes
// from the server's configuration: with TLS, net/http serves the plain end
// of the socket pair (tls.go), so r.TLS is always nil.
func (s *Server) sameOrigin(origin string, r *http.Request) bool {
	scheme := "http://"
	if s.o.TLS != nil {
		scheme = "https://"
	}
	return strings.EqualFold(origin, scheme+r.Host)
}

// simpleContentType reports whether a browser may send a body of this type
// to another site without a preflight (the Fetch standard's CORS-safelisted
// types). One that does not parse counts as simple: a browser's parser may
// read it otherwise.
func simpleContentType(ct string) bool {
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return true
	}
	switch mt {
	case "text/plain", "application/x-www-form-urlencoded", "multipart/form-data":
		return true
	}
	return false
}
