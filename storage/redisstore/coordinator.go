package redisstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomgate/roomgate/storage"
)

func leaseValue(l storage.Lease) string { return strconv.FormatUint(l.Token, 10) + " " + l.Node }

func parseLease(v string) (storage.Lease, bool) {
	tok, node, ok := strings.Cut(v, " ")
	n, err := strconv.ParseUint(tok, 10, 64)
	return storage.Lease{Node: node, Token: n}, ok && err == nil
}

// Acquire implements storage.Coordinator.
func (s *Store) Acquire(ctx context.Context, r storage.Room, node string, ttl time.Duration) (storage.Lease, error) {
	if err := s.check(); err != nil {
		return storage.Lease{}, err
	}
	res, err := acquireScript.Run(ctx, s.c, []string{s.key(r, "lease"), s.key(r, "fence")}, node, ttl.Milliseconds()).Slice()
	if err != nil || len(res) != 2 {
		return storage.Lease{}, fmt.Errorf("redisstore: acquire %s: %w", r, err)
	}
	taken, _ := res[0].(int64)
	v, _ := res[1].(string)
	if taken == 1 {
		tok, _ := strconv.ParseUint(v, 10, 64)
		return storage.Lease{Node: node, Token: tok}, nil
	}
	l, ok := parseLease(v)
	if !ok || l.Node == "" {
		return storage.Lease{}, fmt.Errorf("redisstore: acquire %s: lease value %q is not \"token node\"", r, v)
	}
	return l, storage.ErrLeaseHeld
}

// Renew implements storage.Coordinator.
func (s *Store) Renew(ctx context.Context, node string, ttl time.Duration, rooms []storage.Room, tokens []uint64) ([]storage.LeaseState, error) {
	states := make([]storage.LeaseState, len(rooms)) // LeaseUnknown
	if err := s.check(); err != nil || len(rooms) == 0 {
		return states, err
	}
	cmds := s.evalAll(ctx, renewScript, len(rooms), func(i int) ([]string, []any) {
		return []string{s.key(rooms[i], "lease")}, []any{leaseValue(storage.Lease{Node: node, Token: tokens[i]}), ttl.Milliseconds()}
	})
	var first error
	for i := range rooms {
		switch n, err := cmds[i].Int(); {
		case err != nil:
			// Its shard did not answer; the rooms on the others are
			// answered all the same, so they keep running.
			first = cmp.Or(first, fmt.Errorf("redisstore: renew: %w", err))
		case n == 1:
			states[i] = storage.LeaseRenewed
		default:
			states[i] = storage.LeaseLost
		}
	}
	return states, first
}

// Release implements storage.Coordinator.
func (s *Store) Release(ctx context.Context, rooms []storage.Room, leases []storage.Lease) error {
	if err := s.check(); err != nil || len(rooms) == 0 {
		return err
	}
	cmds := s.evalAll(ctx, releaseScript, len(rooms), func(i int) ([]string, []any) {
		return []string{s.key(rooms[i], "lease")}, []any{leaseValue(leases[i])}
	})
	// One error says enough: a drain may release thousands of leases, and
	// when Redis is away every one fails the same way.
	var first error
	failed := 0
	for i, r := range rooms {
		if err := cmds[i].Err(); err != nil && !errors.Is(err, redis.Nil) {
			if failed++; first == nil {
				first = fmt.Errorf("redisstore: release %s: %w", r, err)
			}
		}
	}
	if failed > 1 {
		return fmt.Errorf("%w (and %d more leases not released)", first, failed-1)
	}
	return first
}

// evalAll runs script n times in one pipeline, the i-th time with args(i)
// as its keys and arguments; each command carries its own result.
func (s *Store) evalAll(ctx context.Context, script *redis.Script, n int, args func(i int) ([]string, []any)) []*redis.Cmd {
	pipe := s.c.Pipeline()
	cmds := make([]*redis.Cmd, n)
	for i := range n {
		keys, argv := args(i)
		cmds[i] = script.EvalSha(ctx, pipe, keys, argv...)
	}
	pipe.Exec(ctx)
	s.resend(ctx, script, cmds, args)
	return cmds
}

// Owners implements storage.Coordinator.
func (s *Store) Owners(ctx context.Context, rooms []storage.Room) ([]storage.Lease, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	out := make([]storage.Lease, len(rooms))
	if len(rooms) == 0 {
		return out, nil
	}
	// GETs in a pipeline, not one MGET: a room's lease lives on its own
	// shard in Redis Cluster.
	pipe := s.c.Pipeline()
	cmds := make([]*redis.StringCmd, len(rooms))
	for i, r := range rooms {
		cmds[i] = pipe.Get(ctx, s.key(r, "lease"))
	}
	pipe.Exec(ctx)
	var errs []error
	for i, r := range rooms {
		v, err := cmds[i].Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			errs = append(errs, fmt.Errorf("redisstore: owner of %s: %w", r, err))
		default:
			if l, ok := parseLease(v); ok && l.Node != "" {
				out[i] = l
			} else {
				errs = append(errs, fmt.Errorf("redisstore: owner of %s: lease value %q is not \"token node\"", r, v))
			}
		}
	}
	return out, errors.Join(errs...)
}

// Heartbeat implements storage.Coordinator. Expiry is kept by Redis's
// clock, so a node whose clock is off is not taken for dead (or alive).
func (s *Store) Heartbeat(ctx context.Context, n storage.NodeRecord, ttl time.Duration) error {
	if err := s.check(); err != nil {
		return err
	}
	n.Expires = time.Now().Add(ttl).UTC() // informative only
	b, _ := json.Marshal(n)
	return heartbeatScript.Run(ctx, s.c, s.nodesKeys(), n.ID, b, ttl.Milliseconds()).Err()
}

// Nodes implements storage.Coordinator. Expired heartbeats are left in
// the hashes (a node that comes back overwrites its own) and filtered out.
func (s *Store) Nodes(ctx context.Context) ([]storage.NodeRecord, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	res, err := nodesScript.Run(ctx, s.c, s.nodesKeys()).Slice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redisstore: nodes: %w", err)
	}
	var out []storage.NodeRecord
	for i := 0; i+1 < len(res); i += 2 {
		v, _ := res[i+1].(string)
		var n storage.NodeRecord
		if json.Unmarshal([]byte(v), &n) == nil {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Leave implements storage.Coordinator.
func (s *Store) Leave(ctx context.Context, id string) error {
	if err := s.check(); err != nil {
		return err
	}
	keys := s.nodesKeys()
	pipe := s.c.TxPipeline()
	pipe.HDel(ctx, keys[1], id)
	pipe.HDel(ctx, keys[0], id)
	_, err := pipe.Exec(ctx)
	return err
}
