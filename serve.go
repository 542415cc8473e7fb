package roomgate

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/roomgate/roomgate/gateway"
	"github.com/roomgate/roomgate/rooms"
	"github.com/roomgate/roomgate/rooms/builtin"
	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/filestore"
	"github.com/roomgate/roomgate/storage/redisstore"
	"github.com/roomgate/roomgate/web"
)

// shutdownLimit is how long SIGTERM may take in all before the process exits anyway.
const shutdownLimit = 10 * time.Second

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", ":8080", "listen address for HTTP, WebSocket and REST")
	data := fs.String("data", "./data", "embedded store directory")
	maxMessage := fs.Int("max-message-bytes", 1<<20, "larger messages close the socket with 1009")
	origins := fs.String("allowed-origins", "", "comma-separated Origin allowlist for browsers (empty: any)")
	hibernateAfter := fs.Duration("hibernate-after", 10*time.Second, "idle time after which a room leaves memory (its sockets stay open)")
	maxActive := fs.Int("max-active-rooms", 0, "rooms in memory past which the least recently used idle ones hibernate (0: no cap)")
	nodeID := fs.String("node-id", "", "this node's id (default: the host name; in cluster mode the -advertise address)")
	redisURL := fs.String("redis", "", "redis://host:port[/db]: cluster mode on Redis; several comma-separated addresses use Redis Cluster")
	redisCluster := fs.Bool("redis-cluster", false, "the -redis address is a Redis Cluster node")
	advertise := fs.String("advertise", "", "this node's host:port as other nodes reach it (default: derived from -addr)")
	leaseTTL := fs.Duration("lease-ttl", 5*time.Second, "room lease time-to-live in cluster mode")
	clusterSecret := fs.String("cluster-secret", "", "when set, node-to-node links must present it")
	maxRoomBytes := fs.Int64("max-room-bytes", 128<<20, "a room's stored keys and values; a write past it fails with ErrLimit (chat answers storage_full)")
	roomCreates := fs.Float64("room-creates-per-ip", 0, "new rooms one client IP may create per second (burst 2x); past it the handshake gets 429 (0: no cap)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	authOpts := addAuthFlags(fs)
	tlsCert := fs.String("tls-cert", "", "PEM certificate (chain): serve HTTPS and WSS on -addr; reloaded on SIGHUP")
	tlsKey := fs.String("tls-key", "", "PEM private key of -tls-cert")
	limitFlags := addLimitFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	limits, err := limitFlags.gateway()
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	verifier, err := authOpts.verifier(log)
	if err != nil {
		return err
	}
	var cert *certificate
	if *tlsCert != "" || *tlsKey != "" {
		if *redisURL != "" {
			// Links between nodes dial plain HTTP at -advertise, which a TLS
			// listener would refuse.
			return errors.New("-tls-cert cannot be combined with -redis yet: terminate TLS at the cluster's load balancer")
		}
		if cert, err = loadCertificate(*tlsCert, *tlsKey); err != nil {
			return err
		}
	}
	if *advertise == "" {
		*advertise = advertised(*addr)
	}
	if *nodeID == "" {
		*nodeID, _ = os.Hostname()
		if *redisURL != "" {
			*nodeID = *advertise // unique in the cluster, even with several nodes on one host
		}
	}

	var store storage.Store
	var coord storage.Coordinator
	if *redisURL != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rs, err := redisstore.Open(ctx, redisstore.Options{URL: *redisURL, Cluster: *redisCluster})
		cancel()
		if err != nil {
			return err
		}
		store, coord = rs, rs
	} else {
		file, err := filestore.Open(*data)
		if err != nil {
			return err
		}
		store = file
	}
	defer store.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rt, err := rooms.New(rooms.Options{
		Store:            store,
		Metrics:          reg,
		Logger:           log,
		NodeID:           *nodeID,
		Address:          *advertise,
		HibernateAfter:   *hibernateAfter,
		MaxActiveRooms:   *maxActive,
		MaxRoomBytes:     *maxRoomBytes,
		RoomCreatesPerIP: *roomCreates,
		Coordinator:      coord,
		LeaseTTL:         *leaseTTL,
		ClusterSecret:    *clusterSecret,
		MaxSockets:       *limitFlags.maxSocketsPerRoom,
	})
	if err != nil {
		return err
	}
	builtin.Register(rt)
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
	srv, err := gateway.New(gateway.Options{
		Addr:            *addr,
		TLS:             tlsConfig,
		Router:          rt,
		Admin:           rt,
		Ready:           ready,
		Auth:            verifier,
		Metrics:         reg,
		Logger:          log,
		Handler:         pages(rt.LinkHandler(), web.Handler()),
		AllowedOrigins:  splitList(*origins),
		MaxMessageBytes: *maxMessage,
		Limits:          limits,
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cert != nil {
		cert.reloadOnHUP(ctx, log) // before the node is ready: a SIGHUP from then on reloads
	}
	go func() {
		<-ctx.Done()
		time.Sleep(shutdownLimit)
		log.Error("shutdown took too long; exiting")
		os.Exit(1)
	}()
	go func() {
		mode := []any{"data", *data}
		if *redisURL != "" {
			mode = []any{"redis", redisstore.Redact(*redisURL), "node", *nodeID, "advertise", *advertise, "lease_ttl", *leaseTTL}
			if *clusterSecret == "" {
				log.Warn("no -cluster-secret: node-to-node links are taken from any registered node's address; set a secret unless the network is private")
			}
		}
		if cert != nil {
			mode = append(mode, cert.logAttrs()...)
		}
		log.Info("roomgate listening", append([]any{"addr", srv.Addr().String(), "tls", cert != nil, "version", buildVersion(), "classes", rt.Classes()}, mode...)...)
		if verifier == nil {
			log.Warn(devModeWarning)
		}
	}()
	// The gateway drains first, so the rooms hear their sockets close; then
	// the rooms commit what they hold; then the store closes (deferred).
	roomsCtx, stopRooms := context.WithCancel(context.Background())
	roomsDone := make(chan error, 1)
	go func() { roomsDone <- rt.Run(roomsCtx) }()
	// The verifier fetches JWKS keys until the gateway has stopped.
	authDone := make(chan struct{})
	go func() {
		defer close(authDone)
		if verifier != nil {
			verifier.Run(roomsCtx)
		}
	}()
	err = srv.Run(ctx)
	stopRooms()
	<-authDone
	if rerr := <-roomsDone; err == nil {
		err = rerr
	}
	return err
}

// pages serves what the gateway does not route itself: links from other
// nodes, and the web pages.
func pages(links, web http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(rooms.LinkPath, links)
	mux.Handle("/", web)
	return mux
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
