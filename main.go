// Package roomgate runs the Roomgate gateway. It only wires packages
// together: flags and environment in, servers out.
package roomgate

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/roomgate/roomgate/gateway"
	"github.com/roomgate/roomgate/loadtest"
	"github.com/roomgate/roomgate/rooms"
	"github.com/roomgate/roomgate/rooms/builtin"
	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/filestore"
	"github.com/roomgate/roomgate/storage/redisstore"
	"github.com/roomgate/roomgate/web"
)

// version is set at build time with
// -ldflags "-X github.com/roomgate/roomgate.version=v1.2.3".
var version = ""

// Main is the roomgate command: it parses os.Args and exits.
func Main() {
	loadtest.ServeWorker() // a worker process of a distributed load run exits here
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "loadtest":
		err = runLoadtest(args)
	case "token":
		err = runToken(args)
	case "version":
		fmt.Println("roomgate", buildVersion())
	default:
		fmt.Fprintf(os.Stderr, "roomgate: unknown command %q\nusage: roomgate [serve|token|loadtest|version] [flags]\n", cmd)
		os.Exit(2)
	}
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "roomgate:", err)
		}
		os.Exit(1)
	}
}

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

func runLoadtest(args []string) error {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	var o loadtest.Options
	fs.StringVar(&o.Scenario, "scenario", "echo", "idle, echo, broadcast, chat, churn or wake")
	fs.StringVar(&o.Target, "target", "http://127.0.0.1:8080", "base URL of the gateway to load")
	fs.StringVar(&o.MetricsURL, "metrics", "", "the target's metrics URL (default: target + /metrics)")
	fs.StringVar(&o.Class, "class", "", "room class to connect to (default: echo; counter for broadcast; chat for chat)")
	fs.IntVar(&o.Sockets, "sockets", 1000, "sockets to open, over all workers")
	fs.IntVar(&o.Rooms, "rooms", 0, "rooms the sockets spread over (default: one per socket; chat: 50 members a room)")
	fs.Float64Var(&o.Rate, "rate", 1000, "messages sent per second, all sockets together (churn: sockets replaced per second)")
	fs.IntVar(&o.Size, "size", 32, "echo: payload bytes")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&o.Warmup, "warmup", 2*time.Second, "echo, broadcast, chat: sending before measuring")
	fs.DurationVar(&o.Settle, "settle", 0, "idle: wait before reading server memory (default 5s); wake: longest wait for the rooms to hibernate (default 30s)")
	fs.DurationVar(&o.Ramp, "ramp", 0, "spread connects over this long")
	fs.IntVar(&o.ConnectConcurrency, "connect-concurrency", 64, "dials in flight")
	fs.Int64Var(&o.Seed, "seed", 1, "chat: seed of the random choice of senders")
	fs.StringVar(&o.JWTSecret, "jwt-secret", "", "mint an HS256 token per socket with this secret")
	fs.IntVar(&o.Workers, "workers", 1, "processes to spread the sockets over (one holds ~19,000)")
	fs.IntVar(&o.SourceIPs, "source-ips", 0, "loopback targets: bind worker i's sockets to 127.0.0.(2+i mod N) when ephemeral ports run short")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if term, err := os.Stderr.Stat(); err == nil && term.Mode()&os.ModeCharDevice != 0 {
		o.Progress = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := loadtest.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return r.WriteText(os.Stdout)
}

// parseFlags applies flag > environment > default: a flag not given on the
// command line takes ROOMGATE_<NAME> from the environment when it is set.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "ROOMGATE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && !given[f.Name] && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
		}
	})
	return err
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
