package redisstore

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/roomgate/roomgate/storage"
)

// Options configure a Store.
type Options struct {
	// URL is redis://[user:pass@]host:port[/db]. Several comma-separated
	// addresses, or Cluster, connect to a Redis Cluster.
	URL     string
	Cluster bool
	// Prefix starts every key; default "rg:". Tests give each store its own.
	Prefix string
}

// Store is a storage.Store and storage.Coordinator on Redis. Commits of
// many rooms are pipelined: each flusher sends what has queued up in one
// round trip.
type Store struct {
	c      redis.UniversalClient
	prefix string

	queue  *storage.CommitQueue
	closed atomic.Bool
	wg     sync.WaitGroup
}

// flushers is how many pipelines may be in flight at once, and
// maxPipeline how many commits one carries.
const (
	flushers    = 4
	maxPipeline = 256
)

// Open connects to Redis and checks that it answers.
func Open(ctx context.Context, o Options) (*Store, error) {
	c, err := newClient(o)
	if err != nil {
		return nil, err
	}
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redisstore: %s: %w", Redact(o.URL), err)
	}
	if o.Prefix == "" {
		o.Prefix = "rg:"
	}
	s := &Store{c: c, prefix: o.Prefix, queue: storage.NewCommitQueue(4096)}
	for range flushers {
		s.wg.Go(func() { s.queue.Serve(maxPipeline, s.commitGroup) })
	}
	return s, nil
}

func newClient(o Options) (redis.UniversalClient, error) {
	urls := strings.Split(o.URL, ",")
	if len(urls) == 1 && !o.Cluster {
		opt, err := redis.ParseURL(strings.TrimSpace(o.URL))
		if err != nil {
			return nil, fmt.Errorf("redisstore: %w", err)
		}
		return redis.NewClient(opt), nil
	}
	co := &redis.ClusterOptions{}
	for _, u := range urls {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			u = "redis://" + u
		}
		opt, err := redis.ParseURL(u)
		if err != nil {
			return nil, fmt.Errorf("redisstore: %w", err)
		}
		co.Addrs = append(co.Addrs, opt.Addr)
		co.Username, co.Password, co.TLSConfig = opt.Username, opt.Password, opt.TLSConfig
	}
	return redis.NewClusterClient(co), nil
}

// Redact hides the passwords of a -redis value, for logs.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
				parts[i] = u.String()
			}
		}
	}
	return strings.Join(parts, ",")
}

// Client returns the underlying client, for tests and tools.
func (s *Store) Client() redis.UniversalClient { return s.c }

func (s *Store) key(r storage.Room, part string) string {
	return s.prefix + "{" + r.Class + "/" + r.Name + "}:" + part
}

func indexMember(r storage.Room) string { return r.Class + "\x00" + r.Name }

func parseIndexMember(m string) storage.Room {
	c, n, _ := strings.Cut(m, "\x00")
	return storage.Room{Class: c, Name: n}
}

func (s *Store) roomsKey() string  { return s.prefix + "rooms" }
func (s *Store) alarmsKey() string { return s.prefix + "alarms" }
func (s *Store) nodesKeys() []string {
	return []string{s.prefix + "{nodes}", s.prefix + "{nodes}:exp"} // one hash tag: one script on Redis Cluster
}

func (s *Store) check() error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	return nil
}

// Ping implements storage.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.c.Ping(ctx).Err()
}

// Close implements storage.Store: queued commits fail with ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.queue.Close()
	s.wg.Wait()
	s.queue.Fail() // queued as the store closed: never sent
	return s.c.Close()
}
