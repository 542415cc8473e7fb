package roomgate

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// shutdownLimit is how long SIGTERM may take in all before the process exits anyway.
const shutdownLimit = 10 * time.Second

// serve is the serve command: the command line and the environment fill
// a DefaultConfig, and the node runs until SIGINT or SIGTERM.
func serve(args []string, opts []Option) error {
	c := DefaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.bindFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	srv, err := New(c, opts...)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if srv.cert != nil {
		srv.cert.reloadOnHUP(ctx, srv.log) // before the node is ready: a SIGHUP from then on reloads
	}
	go func() {
		<-ctx.Done()
		time.Sleep(shutdownLimit)
		srv.log.Error("shutdown took too long; exiting")
		os.Exit(1)
	}()
	return srv.Run(ctx)
}
