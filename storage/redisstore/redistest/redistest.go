// Package redistest starts real redis-server processes on free loopback
// ports for tests: a single server, or a Redis Cluster of several masters.
// A test that needs Redis fails when redis-server is not installed; it is
// never skipped (./scripts/test installs it). Open opens a store on one.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/storage/redisstore"
)

// Server is one redis-server process.
type Server struct {
	Addr string
	args []string
	cmd  *exec.Cmd
	tb   testing.TB
}

// Start runs a redis-server on a free port until the test ends. extra are
// more config directives, as "--name value" pairs.
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server is not installed (apt-get install redis-server, or run ./scripts/test, which does): %v", err)
	}
	port := testkit.FreePort(tb)
	dir := tb.TempDir()
	// everysec by default, as most deployments run; benchmarks measure
	// "always" (an fsync per write) with ROOMGATE_REDIS_APPENDFSYNC=always.
	fsync := "everysec"
	if v := os.Getenv("ROOMGATE_REDIS_APPENDFSYNC"); v != "" {
		fsync = v
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), tb: tb,
		args: append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", "yes", "--appendfsync", fsync, "--protected-mode", "no"}, extra...)}
	s.start(bin)
	tb.Cleanup(s.Stop)
	return s
}

func (s *Server) start(bin string) {
	s.tb.Helper()
	s.cmd = exec.Command(bin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = nil, nil
	if err := s.cmd.Start(); err != nil {
		s.tb.Fatalf("start redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	testkit.Eventually(s.tb, 10*time.Second, func() error {
		if err := c.Ping(context.Background()).Err(); err != nil {
			return fmt.Errorf("redis-server on %s does not answer: %w", s.Addr, err)
		}
		return nil
	})
}

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr }

// Stop shuts the server down cleanly (SIGTERM: it writes what it holds);
// its data stays in its directory for Restart.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
		s.cmd = nil
	}
}

// Restart starts the server again on the same port with the same data.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	bin, _ := exec.LookPath("redis-server")
	s.start(bin)
}

// StartCluster runs a Redis Cluster of n masters and no replicas, and
// returns their addresses once every slot is served.
func StartCluster(tb testing.TB, n int) []string {
	tb.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		tb.Fatalf("redis-cli is not installed (apt-get install redis-server): %v", err)
	}
	var addrs []string
	for range n {
		// The cluster bus port is chosen free too: by default it is the port
		// plus 10000, which may be any socket's ephemeral port, and a
		// redis-server that cannot bind it exits at start.
		s := Start(tb, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
			"--cluster-port", strconv.Itoa(testkit.FreePort(tb)))
		addrs = append(addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	// Every node must say so: one that has not yet heard of the others'
	// slots refuses their keys, and a client may ask any of them.
	testkit.Eventually(tb, 20*time.Second, func() error {
		for _, addr := range addrs {
			c := redis.NewClient(&redis.Options{Addr: addr})
			info, err := c.ClusterInfo(context.Background()).Result()
			c.Close()
			if err == nil && !containsLine(info, "cluster_state:ok") {
				err = fmt.Errorf("redis cluster not ok on %s: %s", addr, info)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	return addrs
}

func containsLine(s, line string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

// Open opens a store with o on a server Start started, closed when the
// test ends.
func Open(tb testing.TB, o redisstore.Options) *redisstore.Store {
	tb.Helper()
	s, err := redisstore.Open(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}
