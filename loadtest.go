package roomgate

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/roomgate/roomgate/loadtest"
)

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
