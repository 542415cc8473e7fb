package gateway

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/roomgate/roomgate/auth"
	"github.com/roomgate/roomgate/rooms"
)

// Options configure a Server. A zero field means its default.
type Options struct {
	Addr                 string                          // listen address; default ":8080". Ignored when Listener is set
	Listener             net.Listener                    // an already open listener, e.g. tests' 127.0.0.1:0
	TLS                  *tls.Config                     // when set, every connection is TLS: HTTPS and WSS on the one listener (see tls.go); default plain
	Router               rooms.Router                    // required
	Metrics              *prometheus.Registry            // required: collectors register here and /metrics serves it
	Logger               *slog.Logger                    // default: discards
	Admin                rooms.Admin                     // serves the REST API under /v1; default none
	Handler              http.Handler                    // serves paths the gateway does not own (pages); default 404
	Ready                func(ctx context.Context) error // extra readiness check for /readyz, e.g. storage; default none
	AllowedOrigins       []string                        // browser Origins allowed to connect; default any
	MaxMessageBytes      int                             // larger messages close with 1009; default 1 MiB
	MaxQueueBytes        int                             // a socket's unsent bytes, every frame counted, before it closes with 1008; a larger frame closes it with 1009; default MaxMessageBytes plus a frame header, at least 1 MiB
	WriteTimeout         time.Duration                   // how long queued output may wait without the client reading a byte before the socket closes with 1008; default 10s
	HandshakeTimeout     time.Duration                   // to finish the HTTP upgrade; default 10s
	CloseTimeout         time.Duration                   // to finish a close handshake before the TCP close; default 3s
	MessageTimeout       time.Duration                   // to receive the rest of a message once its first byte came; default 30s
	DrainTimeout         time.Duration                   // for sockets to close on shutdown; default 5s
	MaxPendingHandshakes int                             // connections still in their handshake; more are dropped; default 8192
	Workers              int                             // epoll instances, each served by one goroutine; default 2 × GOMAXPROCS
	Auth                 *auth.Verifier                  // checks tokens; nil: dev mode (anyone, ?user=; admin API from this machine only)
	Limits                                               // per client, per socket and per process (limits.go)
}

func (o *Options) init() error {
	if o.Router == nil {
		return errors.New("gateway: Options.Router is required")
	}
	if o.Metrics == nil {
		return errors.New("gateway: Options.Metrics is required")
	}
	if o.Addr == "" {
		o.Addr = ":8080"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Handler == nil {
		o.Handler = http.NotFoundHandler()
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = 1 << 20
	}
	if o.MaxQueueBytes == 0 {
		// A room can always echo the largest message it accepts.
		o.MaxQueueBytes = max(1<<20, o.MaxMessageBytes+maxServerHeader)
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.CloseTimeout == 0 {
		o.CloseTimeout = 3 * time.Second
	}
	if o.MessageTimeout == 0 {
		o.MessageTimeout = 30 * time.Second
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 5 * time.Second
	}
	if o.MaxPendingHandshakes == 0 {
		o.MaxPendingHandshakes = 8192
	}
	if o.Workers == 0 {
		o.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	if err := o.Limits.init(); err != nil {
		return err
	}
	switch {
	case o.MaxMessageBytes < 125:
		return fmt.Errorf("gateway: MaxMessageBytes %d is below the 125 bytes of a control frame", o.MaxMessageBytes)
	case o.MaxQueueBytes < 0, o.WriteTimeout < 0, o.HandshakeTimeout < 0, o.CloseTimeout < 0, o.MessageTimeout < 0, o.DrainTimeout < 0,
		o.MaxPendingHandshakes < 0, o.Workers < 0:
		return errors.New("gateway: negative option")
	}
	return nil
}

// Server is the edge: it accepts connections, upgrades WebSockets, reads and
// writes their frames, and serves the HTTP routes around them. Create it
// with New, serve with Run; Addr is safe to call from any goroutine.
type Server struct {
	o       Options
	router  rooms.Router
	log     *slog.Logger
	m       *metrics
	origins map[string]bool

	fds     *fdTable
	pollers []*poller
	limits  *limiter

	classNames sync.Map // class name → its one shared copy
	nextID     atomic.Uint64
	openCount  atomic.Int64 // sockets opened and not yet reported Closed
	pending    atomic.Int64 // connections in their handshake
	draining   atomic.Bool
	swept      atomic.Bool   // drain has asked every socket to close
	allDone    chan struct{} // closed once swept and no socket is left
	doneOnce   sync.Once

	httpConns   *connQueue
	httpServing sync.WaitGroup        // net/http's connection goroutines, from StateNew to StateClosed or StateHijacked
	hsMu        sync.Mutex            // guards hsConns and hsWait.Add against drain
	hsConns     map[net.Conn]struct{} // connections in their handshake, closed on shutdown
	hsWait      sync.WaitGroup        // handshakes on either path, until their socket is open
	closeTimers sync.WaitGroup        // sockets' close timers, until stopped or their callback returned
	ln          net.Listener
	bound       chan struct{} // closed once ln is set
}

// New checks o and builds a Server. It starts nothing; Run does.
func New(o Options) (*Server, error) {
	if err := o.init(); err != nil {
		return nil, err
	}
	m, err := newMetrics(o.Metrics)
	if err != nil {
		return nil, fmt.Errorf("gateway: register metrics: %w", err)
	}
	fds, err := newFDTable()
	if err != nil {
		return nil, err
	}
	limits, err := newLimiter(&o)
	if err != nil {
		return nil, err
	}
	s := &Server{
		o:       o,
		router:  o.Router,
		log:     o.Logger,
		m:       m,
		fds:     fds,
		limits:  limits,
		hsConns: make(map[net.Conn]struct{}),
		bound:   make(chan struct{}),
		allDone: make(chan struct{}),
	}
	if len(o.AllowedOrigins) > 0 {
		s.origins = make(map[string]bool)
		for _, org := range o.AllowedOrigins {
			s.origins[strings.ToLower(strings.TrimSpace(org))] = true
		}
	}
	// Socket ids start at a random point so two nodes' ids practically never meet.
	var seed [8]byte
	rand.Read(seed[:])
	s.nextID.Store(binary.LittleEndian.Uint64(seed[:]))
	o.Router.Attach(s)
	return s, nil
}

// Socket implements rooms.Sockets: the open socket with id, found through
// the descriptor its id carries.
func (s *Server) Socket(id rooms.SocketID) rooms.Socket {
	if sk := s.fds.byID(id); sk != nil {
		return sk
	}
	return nil // not a nil *socket inside the interface
}

// Addr returns the listening address once Run has bound it, waiting until
// then; nil when Run failed to listen.
func (s *Server) Addr() net.Addr {
	<-s.bound
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Run serves until ctx is cancelled, then drains: it stops accepting, closes
// every socket with 1012, waits up to DrainTimeout for their close
// handshakes, and returns once every goroutine it started has exited.
func (s *Server) Run(ctx context.Context) error {
	ln := s.o.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.o.Addr); err != nil {
			close(s.bound)
			return fmt.Errorf("gateway: listen: %w", err)
		}
	}
	if s.o.TLS != nil {
		tl := newTLSListener(ln, s.o.TLS, &s.o)
		defer tl.shutdown() // last: after every socket ended, the pumps pass on their close
		ln = tl
	}
	s.ln = ln
	close(s.bound)
	for range s.o.Workers {
		p, err := newPoller()
		if err != nil {
			s.closePollers()
			ln.Close()
			return err
		}
		s.pollers = append(s.pollers, p)
	}
	defer s.closePollers()
	s.httpConns = newConnQueue(ln.Addr())
	marks := &httpConnMarks{count: func() { s.m.badInput.WithLabelValues("handshake").Inc() }}
	hs := &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: s.o.HandshakeTimeout,
		MaxHeaderBytes:    maxHandshakeBytes,
		IdleTimeout:       s.o.HTTPIdleTimeout,
		ConnState:         func(c net.Conn, st http.ConnState) { marks.connState(c, st); s.trackHTTPConn(st) },
		ConnContext:       marks.connContext,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.watchDescriptors(hs)

	// Workers outlive ctx: they deliver the Closed reports drain waits for.
	// Their own context ends only when drain gives up on the stragglers.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var workers sync.WaitGroup
	for _, p := range s.pollers {
		workers.Go(func() { s.work(workCtx, p) })
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.accept(gctx, ln) })
	g.Go(func() error { s.janitor(gctx); return nil })
	g.Go(func() error {
		if err := hs.Serve(s.httpConns); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.drain(hs, ln, cancelWork)
		return nil
	})
	err := g.Wait()
	// drain closed net/http's connections, but a handler still running
	// keeps its goroutine; its request's context ended with ctx.
	s.httpServing.Wait()
	// Every socket has ended, so its timer is stopped, unless its callback
	// is still returning, or the socket opened after drain swept the table
	// (a handshake that outlasted DrainTimeout) and is still closing. No new
	// timer can start: every socket left is closing already. The pollers
	// keep running meanwhile, so the timer's socket is reported Closed.
	s.closeTimers.Wait()
	for _, p := range s.pollers {
		p.stop()
	}
	workers.Wait()
	return err
}

// accept takes connections until the listener closes. Each gets its own
// goroutine for the handshake only.
func (s *Server) accept(ctx context.Context, ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.draining.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of descriptors or a transient kernel error: back off as
			// net/http does, and keep serving the sockets already open.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if s.pending.Add(1) > s.pendingCap() {
			s.pending.Add(-1)
			s.m.badInput.WithLabelValues("handshake_flood").Inc()
			c.Close()
			continue
		}
		if !s.startPending(c) {
			s.pending.Add(-1)
			c.Close()
			continue
		}
		if !s.handshakeStarted(c) {
			s.pending.Add(-1)
			s.donePending(c)
			c.Close()
			return nil
		}
		go s.serveConn(ctx, c)
	}
}

// handshakeStarted registers a handshake with drain, or reports false when
// drain has begun. c is nil for the chi path, whose connection net/http owns.
func (s *Server) handshakeStarted(c net.Conn) bool {
	s.hsMu.Lock()
	defer s.hsMu.Unlock()
	if s.draining.Load() {
		return false
	}
	if c != nil {
		s.hsConns[c] = struct{}{}
	}
	s.hsWait.Add(1)
	return true
}

func (s *Server) handshakeDone(c net.Conn) {
	if c != nil {
		s.hsMu.Lock()
		delete(s.hsConns, c)
		s.hsMu.Unlock()
		s.pending.Add(-1)
		s.donePending(c)
	}
	s.hsWait.Done()
}

// drain stops intake and closes every socket with 1012, giving clients
// DrainTimeout to answer the close frame. Then it cuts the rest, cancels
// room calls still running, and waits a last moment for their reports.
// It returns once every handshake has finished and the goroutines it
// started have exited.
func (s *Server) drain(hs *http.Server, ln net.Listener, cancelWork func()) {
	deadline := time.Now().Add(s.o.DrainTimeout)
	s.hsMu.Lock()
	s.draining.Store(true)
	for c := range s.hsConns {
		c.Close()
	}
	s.hsMu.Unlock()
	ln.Close()
	// Shutdown closes net/http's idle connections now and its busy ones as
	// they finish, while the sockets drain below.
	shutdownCtx, cancelShutdown := context.WithDeadline(context.Background(), deadline)
	shutdownDone := make(chan struct{})
	go func() {
		defer close(shutdownDone)
		hs.Shutdown(shutdownCtx)
	}()
	handshakes := doneChan(&s.hsWait)
	select {
	case <-handshakes:
	case <-time.After(time.Until(deadline)):
		s.log.Warn("drain: handshakes still running at the deadline")
	}

	s.swept.Store(true)
	s.fds.each(func(sk *socket) { sk.Close(closeDraining, "node draining, reconnect") })
	if s.openCount.Load() == 0 {
		s.signalAllDone()
	}
	select {
	case <-s.allDone:
	case <-time.After(time.Until(deadline)):
		s.log.Warn("drain deadline passed; cutting remaining sockets", "sockets", s.openCount.Load())
		cancelWork()
		s.fds.each(func(sk *socket) { sk.terminate(closeDraining, "node draining, reconnect") })
		select {
		case <-s.allDone:
		case <-time.After(time.Second):
			s.log.Error("drain: sockets not reported closed", "sockets", s.openCount.Load())
		}
	}
	hs.Close()
	cancelShutdown() // Shutdown may still be polling for connections Close just cut
	<-shutdownDone
	<-handshakes // their connections were closed above; none can open a socket after this
}

// janitor closes sockets that began a message and did not finish it within
// MessageTimeout, and those whose queued output waited WriteTimeout without
// their client reading a byte (slow consumers). One sweep over the table
// every quarter timeout costs less than a timer per socket: clients that
// write a frame's header and payload apart would otherwise arm one on
// nearly every message, and a broadcast one on every socket it queues for.
func (s *Server) janitor(ctx context.Context) {
	t := time.NewTicker(s.janitorEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cutoff := now.Add(-s.o.MessageTimeout).UnixNano()
			stalled := now.Add(-s.o.WriteTimeout).UnixNano()
			s.fds.each(func(sk *socket) {
				if since := sk.partial.Load(); since != 0 && since < cutoff && sk.partial.CompareAndSwap(since, 0) {
					s.m.badInput.WithLabelValues("incomplete").Inc()
					sk.Close(closePolicy, "message not completed in time")
				}
				s.expire(sk, now.UnixNano())
				sk.closeIfStalled(stalled)
			})
		}
	}
}

// doneChan returns a channel closed once wg's count reaches zero. The
// goroutine that closes it lives until then, so a caller that stops
// waiting early still receives from the channel before it returns.
func doneChan(wg *sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		wg.Wait()
	}()
	return done
}

// trackHTTPConn counts the goroutine net/http starts for each connection,
// so Run can wait for it: hs.Close closes connections but does not wait
// for their handlers. Every connection net/http serves reports StateNew
// before Serve can return, and ends in StateClosed or, on the chi upgrade
// path, StateHijacked, where hsWait takes over.
func (s *Server) trackHTTPConn(st http.ConnState) {
	switch st {
	case http.StateNew:
		s.httpServing.Add(1)
	case http.StateClosed, http.StateHijacked:
		s.httpServing.Done()
	}
}

func (s *Server) signalAllDone() { s.doneOnce.Do(func() { close(s.allDone) }) }

func (s *Server) socketOpened() {
	s.openCount.Add(1)
	s.m.socketsOpen.Inc()
	s.m.opened.Inc()
}

func (s *Server) socketFinished(code int) {
	s.m.socketsOpen.Dec()
	s.m.closed.WithLabelValues(codeLabel(code)).Inc()
	if s.openCount.Add(-1) == 0 && s.swept.Load() {
		s.signalAllDone()
	}
}

func (s *Server) closePollers() {
	for _, p := range s.pollers {
		p.close()
	}
}

// A task asks a worker to take a socket's reader role: to read it, or to
// report that it ended.
type task struct{ s *socket }

// worker holds scratch state reused across sockets, so a read turn
// allocates nothing when a socket's input ends on a frame boundary.
type worker struct {
	in    inbound
	sink  sink
	tasks []task
}

// work serves ready sockets of p until p is stopped.
func (s *Server) work(ctx context.Context, p *poller) {
	w := new(worker)
	for {
		events, err := p.wait()
		if err != nil {
			s.log.Error("epoll_wait", "err", err)
			return
		}
		for _, ev := range events {
			switch fd := int(ev.Fd); fd {
			case p.wake:
				return
			case p.bell:
				w.tasks = p.take(w.tasks)
				for _, t := range w.tasks {
					t.s.readTurn(ctx, w)
				}
				clear(w.tasks)
			default:
				s.ready(ctx, w, fd, ev.Events)
			}
		}
	}
}

// ready serves one socket's readiness on the worker the kernel woke.
func (s *Server) ready(ctx context.Context, w *worker, fd int, events uint32) {
	sk := s.fds.get(fd)
	if sk == nil {
		return
	}
	if events&unix.EPOLLOUT != 0 && sk.stalled.Load() != 0 {
		sk.wmu.Lock()
		sk.flushLocked()
		sk.wmu.Unlock()
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && sk.reads.Add(1) == 1 {
		sk.readTurn(ctx, w)
	}
}

func (s *Server) pollerOf(sk *socket) *poller { return s.pollers[sk.fd%len(s.pollers)] }

// kickReader makes sure a reader will look at sk. It never blocks: it may
// run on a room's goroutine, which a worker may be waiting on.
func (s *Server) kickReader(sk *socket) {
	if sk.reads.Add(1) == 1 {
		s.pollerOf(sk).push(task{sk})
	}
}

// httpConnMarks counts plain-HTTP connections that closed without a single
// request reaching a handler: garbage that net/http answered with 400, or a
// client too slow for ReadHeaderTimeout. net/http has no hook for either, so
// each connection carries a mark that the router sets.
type httpConnMarks struct {
	marks sync.Map // net.Conn → *atomic.Bool (served)
	count func()
}

type servedKey struct{}

func (h *httpConnMarks) connContext(ctx context.Context, c net.Conn) context.Context {
	served := new(atomic.Bool)
	h.marks.Store(c, served)
	return context.WithValue(ctx, servedKey{}, served)
}

func (h *httpConnMarks) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateHijacked:
		h.marks.Delete(c)
	case http.StateClosed:
		if v, ok := h.marks.LoadAndDelete(c); ok && !v.(*atomic.Bool).Load() {
			h.count()
		}
	}
}

func markServed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if served, ok := r.Context().Value(servedKey{}).(*atomic.Bool); ok {
			served.Store(true)
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(markServed)
	r.Use(s.shedLoad)
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	r.Get("/readyz", s.readyz)
	r.Handle("/metrics", promhttp.HandlerFor(s.o.Metrics, promhttp.HandlerOpts{Registry: s.o.Metrics}))
	r.Get("/ws/{class}/{room}", s.upgradeHTTP)
	if s.o.Admin != nil {
		s.rest(r)
	}
	r.NotFound(s.o.Handler.ServeHTTP)
	r.MethodNotAllowed(s.o.Handler.ServeHTTP)
	return r
}

// admitRoom asks a Router that admits sockets itself (rooms.Admitter)
// whether the room takes the socket, and, with RoomCreatesPerIP set,
// whether the socket would create the room, which costs the client a
// token from its room-creation bucket (20,000 rooms in 7 s from one
// client filled a node's storage before).
func (s *Server) admitRoom(h *handshake) error {
	ad, ok := s.router.(rooms.Admitter)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.o.HandshakeTimeout)
	defer cancel()
	creates, err := ad.Admit(ctx, rooms.Addr{Class: h.class, Room: h.room}, s.o.RoomCreatesPerIP > 0)
	if err != nil || !creates {
		return err
	}
	if ok, wait := s.limits.ips.allow(ipKey(h.ip), createBucket, s.o.RoomCreatesPerIP); !ok {
		return &limitError{err: errTooManyRooms, kind: "room_creation", retry: wait}
	}
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	err := error(nil)
	if s.draining.Load() {
		err = errDraining
	} else if s.o.Ready != nil {
		err = s.o.Ready(r.Context())
	}
	if err != nil {
		WriteError(w, fmt.Errorf("%w: %w", errDraining, err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"status":"ready"}` + "\n"))
}
