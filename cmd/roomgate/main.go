// Command roomgate runs the Roomgate gateway. It only wires packages
// together: flags and environment in, servers out.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/roomgate/roomgate/gateway"
	"github.com/roomgate/roomgate/rooms"
	"github.com/roomgate/roomgate/web"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "version":
		fmt.Println("roomgate", buildVersion())
	default:
		fmt.Fprintf(os.Stderr, "roomgate: unknown command %q\nusage: roomgate [serve|version] [flags]\n", cmd)
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
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := os.MkdirAll(*data, 0o755); err != nil {
		return fmt.Errorf("-data: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rt := rooms.New()
	rt.Register("echo", rooms.Echo{})
	srv, err := gateway.New(gateway.Options{
		Addr:            *addr,
		Router:          rt,
		Metrics:         reg,
		Logger:          log,
		Handler:         web.Handler(),
		AllowedOrigins:  splitList(*origins),
		MaxMessageBytes: *maxMessage,
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		time.Sleep(shutdownLimit)
		log.Error("shutdown took too long; exiting")
		os.Exit(1)
	}()
	go func() {
		log.Info("roomgate listening", "addr", srv.Addr().String(), "version", buildVersion(), "classes", rt.Classes())
	}()
	return srv.Run(ctx)
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
