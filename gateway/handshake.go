package gateway

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/roomgate/roomgate/rooms"
)

// A connection's first bytes decide who serves it. "GET /ws/" goes to
// gobwas/ws's zero-copy Upgrader, which parses the request in a pooled buffer
// and allocates nothing for headers it does not need. Everything else goes
// to net/http and the chi routes. chi also routes /ws/{class}/{room}, for the
// rare client that upgrades on a connection it already used for HTTP.
const wsPrefix = "GET /ws/"

var peekReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16) }}

// handshake collects what admission needs from either upgrade path.
type handshake struct {
	class, room string
	query       string
	origin      string
	remote      string
	pathOK      bool
	origins     int               // Origin headers seen: a second one is refused
	xff         string            // X-Forwarded-For values, kept only when a proxy is trusted
	ip          netip.Addr        // the client, set by admit (clientip.go)
	slot        *ipEntry          // a socket reserved for the client, until its socket adopts it (limits.go)
	info        rooms.ConnectInfo // set by admit

	authorization  string // the Authorization header, kept only when a key is configured
	authorizations uint8  // how many Authorization headers came
	expires        int64  // when the token expires, leeway included, Unix nanoseconds; set by admit
}

// parseWSPath splits a request target "/ws/{class}/{room}?query". It checks
// the shape only; rooms.ValidClass and rooms.ValidRoom check the names.
func parseWSPath(target string) (class, room, query string, ok bool) {
	path, query, _ := strings.Cut(target, "?")
	rest, ok := strings.CutPrefix(path, "/ws/")
	if !ok {
		return "", "", "", false
	}
	class, room, ok = strings.Cut(rest, "/")
	return class, room, query, ok
}

// maxHandshakeBytes bounds a request's line and headers on both paths:
// gobwas/ws reads a line as long as the client sends it, so without a bound
// one slow client could grow the heap by megabytes before its deadline.
const maxHandshakeBytes = 16 << 10

// serveConn runs on its own goroutine from accept until the connection is
// upgraded, refused or handed to net/http. Its deadline bounds a slow or
// silent client; handshakes run side by side, so one never delays another.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer s.handshakeDone(c)
	c.SetDeadline(time.Now().Add(s.o.HandshakeTimeout))
	br := peekReaders.Get().(*bufio.Reader)
	br.Reset(c)
	head, err := br.Peek(len(wsPrefix))
	if err != nil {
		// Silent, too slow, or gone before sending eight bytes: no request
		// line is that short, so nobody is waiting for an answer.
		s.countHandshakeError(err)
		c.Close()
		br.Reset(nil)
		peekReaders.Put(br)
		return
	}
	if string(head) != wsPrefix {
		// Not ours: net/http reads the peeked bytes first, then the rest.
		c.SetDeadline(time.Time{})
		if !s.httpConns.deliver(&peekedConn{Conn: c, r: br}) {
			c.Close()
		}
		return
	}

	st := upgrades.Get().(*upgrade)
	defer st.release()
	st.s, st.h.remote, st.gate.w = s, c.RemoteAddr().String(), c
	st.limited = io.LimitedReader{R: br, N: maxHandshakeBytes}
	_, err = st.u.Upgrade(&st.rw)
	br.Reset(nil)
	peekReaders.Put(br)
	h := &st.h
	switch {
	case err == nil:
		c.SetDeadline(time.Time{})
		s.open(ctx, c, h)
	case st.refusal != nil:
		s.abandon(h) // before the answer: a client retrying at once finds its socket given back
		s.refuse(c, st.refusal)
	case st.limited.N <= 0:
		// The request line and headers ran past maxHandshakeBytes.
		s.refuseLingering(c, errHeaderTooLarge)
	case st.gate.status != 0:
		// gobwas/ws found the request itself wrong. Admission still comes
		// first, so the answer is the same as on the chi path.
		if h.pathOK {
			if refusal := s.admit(h); refusal != nil {
				s.refuse(c, refusal)
				return
			}
		}
		s.refuse(c, &handshakeError{status: st.gate.status, err: err})
	default:
		s.countHandshakeError(err) // it never finished its request: nobody to answer
		c.Close()
	}
}

// upgrade is the zero-copy path's per-handshake state. It is pooled with its
// Upgrader, whose callbacks are bound to it once, so a handshake allocates
// only what the socket keeps: at 20,000 connects a second the garbage of
// closures and wrappers is what sets the server's memory, not the sockets.
type upgrade struct {
	s       *Server
	h       handshake
	refusal error
	gate    gateWriter
	limited io.LimitedReader
	rw      struct {
		io.Reader
		io.Writer
	}
	u ws.Upgrader
}

var upgrades = sync.Pool{New: func() any {
	st := new(upgrade)
	st.rw.Reader, st.rw.Writer = &st.limited, &st.gate
	st.u = ws.Upgrader{OnRequest: st.onRequest, OnHeader: st.onHeader, OnBeforeUpgrade: st.onBeforeUpgrade}
	return st
}}

func (st *upgrade) onRequest(uri []byte) error {
	st.h.class, st.h.room, st.h.query, st.h.pathOK = parseWSPath(string(uri))
	return nil
}

func (st *upgrade) onHeader(key, value []byte) error {
	switch string(key) {
	case "Origin":
		st.h.origin = string(value)
		st.h.origins++
	case "Authorization":
		if st.s.o.Auth != nil { // dev mode has no use for it: no copy
			st.h.setAuthorization(string(value))
		}
	case "X-Forwarded-For":
		if len(st.s.o.TrustedProxies) > 0 {
			st.h.xff = appendList(st.h.xff, value)
		}
	}
	return nil
}

func (st *upgrade) onBeforeUpgrade() (ws.HandshakeHeader, error) {
	st.refusal = st.s.admit(&st.h)
	return nil, st.refusal
}

// release returns st to the pool once the socket took what it keeps.
func (st *upgrade) release() {
	st.s.abandon(&st.h)
	st.s, st.h, st.refusal, st.gate, st.limited = nil, handshake{}, nil, gateWriter{}, io.LimitedReader{}
	upgrades.Put(st)
}

// gateWriter lets the Upgrader's 101 through and swallows any other answer,
// keeping its status: gobwas/ws writes refusals as text/plain, and the
// gateway answers every refusal with the contract's JSON error instead.
type gateWriter struct {
	w      io.Writer
	status int
}

func (g *gateWriter) Write(p []byte) (int, error) {
	// The Upgrader flushes its whole response in one Write: "HTTP/1.1 NNN ...".
	if len(p) >= 12 && string(p[9:12]) != "101" {
		g.status, _ = strconv.Atoi(string(p[9:12]))
		return len(p), nil
	}
	return g.w.Write(p)
}

// handshakeError is a request that is not a valid WebSocket upgrade; status
// is what gobwas/ws chose (400, or 426 for an unsupported version).
type handshakeError struct {
	status int
	err    error
}

func (e *handshakeError) Error() string {
	return "gateway: not a valid WebSocket upgrade: " + e.err.Error()
}
func (e *handshakeError) Unwrap() error { return errBadHandshake }

// refuse answers a refused handshake with its status and a JSON error, then
// closes. The Upgrader stops at the first header it refuses (a browser's
// plain GET: Connection: keep-alive), so a long request may leave bytes
// unread, and the close then resets the connection. A Linux client still
// reads the answer first (TestRefusalsAgreeOnBothPaths, and a 64 KiB
// cookie tried by hand); a client that drops its input on a reset sees a
// failed request, which client.js treats as no answer and reconnects.
func (s *Server) refuse(c net.Conn, err error) {
	s.writeRefusal(c, err)
	c.Close()
}

// refuseLingering refuses a request that was cut off before its end: it
// answers, sends FIN, and reads what the client is still sending for a
// moment before closing. Closing with unread input would send a reset,
// and a client that gets it before our answer sees a dropped connection
// instead of the status (a 431 for headers over the limit).
func (s *Server) refuseLingering(c net.Conn, err error) {
	s.writeRefusal(c, err)
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
		c.SetReadDeadline(time.Now().Add(lingerTime))
		io.Copy(io.Discard, io.LimitReader(c, lingerBytes))
	}
	c.Close()
}

// The most refuseLingering reads after its answer, in time and bytes.
const (
	lingerTime  = time.Second
	lingerBytes = 256 << 10
)

// writeRefusal counts err and writes it as refuse does, leaving c open.
func (s *Server) writeRefusal(c net.Conn, err error) {
	s.countRefusal(err)
	_, status, _, _ := publicError(err)
	var herr *handshakeError
	if errors.As(err, &herr) {
		status = herr.status
	}
	code, _, _, _ := publicError(err)
	body := errorBody(code, err)
	var retry string
	if v := retryAfter(err); v != "" {
		retry = "Retry-After: " + v + "\r\n"
	}
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), retry, body)
}

func (s *Server) countRefusal(err error) {
	if _, _, _, kind := publicError(err); kind != "" {
		s.m.badInput.WithLabelValues(kind).Inc()
	}
	s.limits.countLimit(err)
}

// errorBody renders {"error":{"code":...,"message":...}}.
func errorBody(code string, err error) []byte {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Code = code
	body.Error.Message = withoutPackage(err.Error())
	b, _ := json.Marshal(body)
	return b
}

// withoutPackage drops the "pkg: " that starts a Go error's text: the
// message is for the client, to whom the package means nothing.
func withoutPackage(msg string) string {
	pkg, rest, ok := strings.Cut(msg, ": ")
	if !ok || pkg == "" || strings.Trim(pkg, "abcdefghijklmnopqrstuvwxyz") != "" {
		return msg
	}
	return rest
}

// WriteError writes err as the contract's JSON error with its status.
func WriteError(w http.ResponseWriter, err error) {
	_, status, _, _ := publicError(err)
	writeErrorStatus(w, status, err)
}

func writeErrorStatus(w http.ResponseWriter, status int, err error) {
	code, _, _, _ := publicError(err)
	w.Header().Set("Content-Type", "application/json")
	if v := retryAfter(err); v != "" {
		w.Header().Set("Retry-After", v)
	}
	w.WriteHeader(status)
	w.Write(errorBody(code, err))
}

func (s *Server) countHandshakeError(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		s.m.badInput.WithLabelValues("handshake_timeout").Inc()
		return
	}
	s.m.badInput.WithLabelValues("handshake").Inc()
}

// admit decides before the upgrade whether a socket may open, in the order
// of DESIGN §1: 503 draining, 400 bad name, 403 origin, 404 class, 400 bad
// query. On success h.info says who the client is.
func (s *Server) admit(h *handshake) error {
	if s.draining.Load() {
		return errDraining
	}
	if err := s.admitLimits(h); err != nil {
		return err
	}
	if !h.pathOK || !validName(h.class, h.room) {
		return errBadName
	}
	if h.origins > 1 {
		return errDuplicateOrigin
	}
	if len(s.origins) > 0 && h.origin != "" && !s.origins[strings.ToLower(h.origin)] {
		return errOrigin
	}
	if !s.router.HasClass(h.class) {
		return errUnknownClass
	}
	var info rooms.ConnectInfo
	var err error
	if s.o.Auth != nil {
		info, err = s.tokenInfo(h)
	} else {
		info, err = connectInfo(h)
	}
	if err != nil {
		return err
	}
	if err := s.reserveSocket(h); err != nil {
		return err
	}
	if h.ip.IsValid() && h.ip != peerIP(h.remote) {
		// Behind a trusted proxy the room, and its limits, see the client
		// it forwarded for, not the proxy; its port is unknown.
		info.RemoteAddr = netip.AddrPortFrom(h.ip, 0).String()
	}
	h.info = info
	return s.admitRoom(h)
}

// connectInfo derives who the client is. Without an auth key configured the
// gateway runs in dev mode: ?user= and ?name= say who, or a random guest.
func connectInfo(h *handshake) (rooms.ConnectInfo, error) {
	q, err := url.ParseQuery(h.query)
	if err != nil {
		return rooms.ConnectInfo{}, fmt.Errorf("%w: %v", errBadQuery, err)
	}
	user, name := q.Get("user"), q.Get("name")
	if !validUser(user, name) {
		return rooms.ConnectInfo{}, fmt.Errorf("%w: user must be at most 128 bytes and name at most 64, printable UTF-8", errBadQuery)
	}
	if user == "" {
		user = randomID("u-", 8)
	}
	if name == "" {
		name = randomID("guest-", 2)
	}
	q.Del("token")
	return rooms.ConnectInfo{
		User:       rooms.User{ID: user, Name: name},
		Query:      q.Encode(),
		RemoteAddr: h.remote,
	}, nil
}

// Limits on a user's id and name, from a token or ?user= and ?name=.
const (
	maxUserBytes = 128
	maxNameBytes = 64
)

func validUser(user, name string) bool {
	return len(user) <= maxUserBytes && len(name) <= maxNameBytes && utf8.ValidString(user) && utf8.ValidString(name) &&
		!strings.ContainsFunc(name, isControl) && !strings.ContainsFunc(user, isControl)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// randomID is prefix and n random bytes in hex, made with one allocation:
// an idle socket keeps it for as long as it is open.
func randomID(prefix string, n int) string {
	const digits = "0123456789abcdef"
	var raw [16]byte
	rand.Read(raw[:n])
	var sb strings.Builder
	sb.Grow(len(prefix) + 2*n)
	sb.WriteString(prefix)
	for _, c := range raw[:n] {
		sb.WriteByte(digits[c>>4])
		sb.WriteByte(digits[c&0xf])
	}
	return sb.String()
}

// upgradeHTTP is chi's /ws/{class}/{room}: the same admission on an
// http.Request, for upgrades that arrive on a connection net/http serves.
func (s *Server) upgradeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.handshakeStarted(nil) {
		WriteError(w, errDraining)
		return
	}
	defer s.handshakeDone(nil)
	h := handshake{
		class:   chi.URLParam(r, "class"),
		room:    chi.URLParam(r, "room"),
		query:   r.URL.RawQuery,
		origin:  r.Header.Get("Origin"),
		origins: len(r.Header.Values("Origin")),
		remote:  r.RemoteAddr,
		pathOK:  true,
	}
	if s.o.Auth != nil {
		for _, v := range r.Header.Values("Authorization") {
			h.setAuthorization(v)
		}
	}
	if len(s.o.TrustedProxies) > 0 {
		h.xff = strings.Join(r.Header.Values("X-Forwarded-For"), ",")
	}
	defer s.abandon(&h)
	if err := s.admit(&h); err != nil {
		s.abandon(&h) // before the answer: a client retrying at once finds its socket given back
		s.countRefusal(err)
		WriteError(w, err)
		return
	}
	gw := &gateResponse{ResponseWriter: w}
	c, rw, _, err := ws.UpgradeHTTP(r, gw)
	if err != nil {
		if gw.conn == nil {
			WriteError(w, err)
			return
		}
		s.refuse(gw.conn, &handshakeError{status: cmp.Or(gw.gate.status, http.StatusBadRequest), err: err})
		return
	}
	// A client that did not wait for the 101 may have frames in net/http's
	// buffer already; they become the socket's first input.
	var early []byte
	if n := rw.Reader.Buffered(); n > 0 {
		early, _ = rw.Reader.Peek(n)
	}
	if pc, ok := c.(*peekedConn); ok {
		c = pc.Conn // every peeked byte was consumed by the request
	}
	s.open(r.Context(), c, &h, early...)
}

// gateResponse puts a gateWriter on the chi path: ws.UpgradeHTTP hijacks
// the connection first and writes its answer, 101 or text/plain refusal, to
// the hijacked writer, which is the gate.
type gateResponse struct {
	http.ResponseWriter
	conn net.Conn
	gate *gateWriter
}

func (g *gateResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(g.ResponseWriter).Hijack()
	if err != nil {
		return c, rw, err
	}
	g.conn, g.gate = c, &gateWriter{w: c}
	rw.Writer = bufio.NewWriterSize(g.gate, 1024) // the response goes out in one Flush
	return c, rw, nil
}

// open turns an upgraded connection into a socket: it takes the descriptor,
// introduces the socket to its room, and only then lets epoll report input,
// so Connect always comes before the first Message.
func (s *Server) open(ctx context.Context, c net.Conn, h *handshake, early ...byte) {
	fd, err := detach(c)
	if err != nil {
		s.log.Warn("detach socket", "err", err)
		return
	}
	// The names are substrings of the request target, token and all; copy
	// them so an idle socket does not keep the whole target alive.
	addr := rooms.Addr{Class: s.internClass(h.class), Room: strings.Clone(h.room)}
	sk := &socket{id: socketID(s.nextID.Add(1), fd), fd: fd, srv: s, addr: addr}
	sk.expires.Store(h.expires)
	sk.reads.Store(1) // this goroutine holds the reader role until its read turn below
	if len(early) > 0 {
		sk.in = &inbound{buf: append(getReadBuffer(), early...)}
	}
	if err := s.fds.put(fd, sk); err != nil {
		s.log.Warn("register socket", "err", err)
		unix.Close(fd)
		return
	}
	sk.quota = s.quotaFor(h) // from here on, finish gives back what it holds
	s.socketOpened()
	// Drain waits for handshakes (up to its deadline) and then closes every
	// socket with 1012, so a Connect under way finishes rather than failing
	// on the cancelled ctx.
	if err := s.router.Connect(context.WithoutCancel(ctx), sk.addr, sk, h.info); err != nil {
		sk.refused = true // the room never accepted it, so it hears no Closed
		s.countRefusal(err)
		code, reason := closeFor(err)
		sk.Close(code, reason)
	}
	// Connect may have ended the socket (a failed write, its close timer);
	// the reference keeps the number from being reused under the add.
	if sk.acquire() {
		if err := s.pollerOf(sk).add(fd); err != nil {
			s.log.Warn("poll socket", "err", err)
			sk.terminate(closeInternal, "poll failed")
		}
		sk.release()
	}
	if s.draining.Load() {
		// Drain gave up waiting for this handshake and swept without it.
		sk.Close(closeDraining, "node draining, reconnect")
	}
	// Read what arrived meanwhile; the turn hands the reader role on.
	w := handshakeWorkers.Get().(*worker)
	sk.readTurn(ctx, w)
	handshakeWorkers.Put(w)
}

// handshakeWorkers lend scratch state to the first read turn, which runs on
// the handshake goroutine.
var handshakeWorkers = sync.Pool{New: func() any { return new(worker) }}

// detach takes the descriptor away from Go's network poller: a duplicate
// stays open for the gateway and the net.Conn is closed. An idle WebSocket
// then costs no netFD, no runtime pollDesc and no deadline timers, only the
// socket struct and our epoll registration (DESIGN §3.4). The duplicate
// shares the original's O_NONBLOCK, and TCP keepalive set by the listener
// still finds dead peers.
func detach(c net.Conn) (int, error) {
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("gateway: %T has no descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(f uintptr) {
		fd, dupErr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, fmt.Errorf("gateway: dup socket: %w", dupErr)
	}
	return fd, nil
}

// peekedConn replays the bytes peeked while deciding who serves a
// connection, then reads the connection itself.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connQueue is the net.Listener net/http serves: it yields connections the
// gateway's own accept loop decided are plain HTTP.
type connQueue struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{conns: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

func (q *connQueue) deliver(c net.Conn) bool {
	select {
	case q.conns <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

func validName(class, room string) bool { return rooms.ValidClass(class) && rooms.ValidRoom(room) }

// internClass returns one shared copy of a class name. Only registered
// classes get this far, so the set stays as small as the registry.
func (s *Server) internClass(class string) string {
	if v, ok := s.classNames.Load(class); ok {
		return v.(string)
	}
	v, _ := s.classNames.LoadOrStore(strings.Clone(class), strings.Clone(class))
	return v.(string)
}
