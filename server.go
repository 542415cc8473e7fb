package roomgate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/roomgate/roomgate/auth"
	"github.com/roomgate/roomgate/gateway"
	"github.com/roomgate/roomgate/rooms"
	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/filestore"
	"github.com/roomgate/roomgate/storage/redisstore"
)

// Server is one Roomgate node: the gateway, the rooms runtime and the
// store behind them, wired as the serve command wires them. New builds it,
// Run serves until its context ends; Addr, Runtime and ReloadTLS may be
// called from any goroutine.
type Server struct {
	c        Config
	log      *slog.Logger
	store    storage.Store
	rt       *rooms.Runtime
	gw       *gateway.Server
	verifier *auth.Verifier // nil: dev mode
	cert     *certificate   // nil: plain HTTP
	used     atomic.Bool    // Run or Close was called: the one that was owns the release
}

// New checks c, opens the store (the directory c.Data, or Redis when
// c.Redis is set) and builds a node serving the classes and routes opts
// give. It starts nothing; Run does. Start c from DefaultConfig. An error
// names the flag of the field at fault, as the serve command reports it.
//
// New panics on a mistake in the program rather than in its input: a
// class name that is invalid or registered twice, a handler method with a
// wrong signature (see Class).
func New(c Config, opts ...Option) (_ *Server, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if len(o.classes) == 0 {
		return nil, errNoClass
	}
	limits, err := c.limits()
	if err != nil {
		return nil, err
	}
	log := c.Logger
	if log == nil {
		var level slog.Level
		if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
			return nil, fmt.Errorf("-log-level: %w", err)
		}
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	verifier, err := c.verifier(log)
	if err != nil {
		return nil, err
	}
	var cert *certificate
	if c.TLSCert != "" || c.TLSKey != "" {
		if c.Redis != "" {
			// Links between nodes dial plain HTTP at -advertise, which a TLS
			// listener would refuse.
			return nil, errors.New("-tls-cert cannot be combined with -redis yet: terminate TLS at the cluster's load balancer")
		}
		if cert, err = loadCertificate(c.TLSCert, c.TLSKey); err != nil {
			return nil, err
		}
	}
	if c.Advertise == "" {
		addr := c.Addr
		if c.Listener != nil {
			addr = c.Listener.Addr().String()
		}
		c.Advertise = advertised(addr)
	}
	if c.NodeID == "" {
		c.NodeID, _ = os.Hostname()
		if c.Redis != "" {
			c.NodeID = c.Advertise // unique in the cluster, even with several nodes on one host
		}
	}

	var store storage.Store
	var coord storage.Coordinator
	if c.Redis != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rs, err := redisstore.Open(ctx, redisstore.Options{URL: c.Redis, Cluster: c.RedisCluster})
		cancel()
		if err != nil {
			return nil, err
		}
		store, coord = rs, rs
	} else {
		file, err := filestore.Open(c.Data)
		if err != nil {
			return nil, err
		}
		store = file
	}
	built := false
	defer func() {
		if !built { // an error, or a class's panic
			store.Close()
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rt, err := rooms.New(rooms.Options{
		Store:          store,
		Metrics:        reg,
		Logger:         log,
		NodeID:         c.NodeID,
		Address:        c.Advertise,
		HibernateAfter: c.HibernateAfter,
		MaxActiveRooms: c.MaxActiveRooms,
		MaxRoomBytes:   c.MaxRoomBytes,
		Coordinator:    coord,
		LeaseTTL:       c.LeaseTTL,
		ClusterSecret:  c.ClusterSecret,
		MaxSockets:     c.MaxSocketsPerRoom,
	})
	if err != nil {
		return nil, err
	}
	for _, register := range o.classes {
		register(rt)
	}
	pages, err := o.handler(rt.LinkHandler())
	if err != nil {
		return nil, err
	}
	ready := rt.Ready
	if verifier != nil {
		ready = func(ctx context.Context) error {
			if err := verifier.Ready(); err != nil {
				return err
			}
			return rt.Ready(ctx)
		}
	}
	var tlsConfig *tls.Config
	if cert != nil {
		tlsConfig = cert.config()
	}
	gw, err := gateway.New(gateway.Options{
		Addr:            c.Addr,
		Listener:        c.Listener,
		TLS:             tlsConfig,
		Router:          rt,
		Admin:           rt,
		Ready:           ready,
		Auth:            verifier,
		Metrics:         reg,
		Logger:          log,
		Handler:         pages,
		AllowedOrigins:  c.AllowedOrigins,
		MaxMessageBytes: c.MaxMessageBytes,
		Limits:          limits,
	})
	if err != nil {
		return nil, err
	}
	built = true
	return &Server{c: c, log: log, store: store, rt: rt, gw: gw, verifier: verifier, cert: cert}, nil
}

// Run serves until ctx ends, then drains as SIGTERM does (DESIGN §2): the
// gateway stops accepting and closes its sockets with 1012, the rooms
// commit what they hold and release their leases, and the store closes.
// It returns once every goroutine it started has exited. Call it once;
// the Server cannot run again.
func (s *Server) Run(ctx context.Context) error {
	if !s.used.CompareAndSwap(false, true) {
		return errors.New("roomgate: Server.Run after Run or Close")
	}
	var wg sync.WaitGroup
	wg.Go(s.logStart)
	// The gateway drains first, so the rooms hear their sockets close; then
	// the rooms commit what they hold; then the store closes.
	roomsCtx, stopRooms := context.WithCancel(context.Background())
	roomsDone := make(chan error, 1)
	wg.Go(func() { roomsDone <- s.rt.Run(roomsCtx) })
	if s.verifier != nil {
		// The verifier fetches JWKS keys until the gateway has stopped.
		wg.Go(func() { s.verifier.Run(roomsCtx) })
	}
	err := s.gw.Run(ctx)
	stopRooms()
	wg.Wait()
	if rerr := <-roomsDone; err == nil {
		err = rerr
	}
	if cerr := s.store.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close releases a Server that will not run: its store and its Listener.
// After Run it does nothing, since Run releases them itself.
func (s *Server) Close() error {
	if !s.used.CompareAndSwap(false, true) {
		return nil
	}
	if s.c.Listener != nil {
		s.c.Listener.Close()
	}
	return s.store.Close()
}

// Addr returns the address the node listens on, once Run has bound it
// (it waits until then, so call it only with Run called or about to be);
// nil when Run failed to listen.
func (s *Server) Addr() net.Addr {
	return s.gw.Addr()
}

// Runtime returns the node's rooms runtime, for Go code in the same
// process that talks to rooms directly rather than over REST. It is the
// runtime the gateway routes to; it runs while Run does.
func (s *Server) Runtime() *rooms.Runtime {
	return s.rt
}

// ReloadTLS reads Config.TLSCert and TLSKey again: new handshakes get the
// new pair, connections already made keep theirs. On failure the pair in
// use stays. Main calls it on SIGHUP.
func (s *Server) ReloadTLS() error {
	if s.cert == nil {
		return errors.New("roomgate: ReloadTLS: no -tls-cert configured")
	}
	return s.cert.reload()
}

// logStart says, once the listener is bound, where and how the node runs.
func (s *Server) logStart() {
	addr := s.gw.Addr()
	if addr == nil {
		return // Run failed to listen, and returns why
	}
	c := s.c
	mode := []any{"data", c.Data}
	if c.Redis != "" {
		mode = []any{"redis", redisstore.Redact(c.Redis), "node", c.NodeID, "advertise", c.Advertise, "lease_ttl", c.LeaseTTL}
		if c.ClusterSecret == "" {
			s.log.Warn("no -cluster-secret: node-to-node links are taken from any registered node's address; set a secret unless the network is private")
		}
	}
	if s.cert != nil {
		mode = append(mode, s.cert.logAttrs()...)
	}
	s.log.Info("roomgate listening", append([]any{"addr", addr.String(), "tls", s.cert != nil, "version", buildVersion(), "classes", s.rt.Classes()}, mode...)...)
	if s.verifier == nil {
		s.log.Warn(devModeWarning)
	}
}

// advertised derives the address other nodes dial from the listen
// address: a missing or wildcard host becomes this host's name.
func advertised(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host, _ = os.Hostname()
	}
	return net.JoinHostPort(host, port)
}
