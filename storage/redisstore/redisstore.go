// Package redisstore is the cluster-mode storage.Store and
// storage.Coordinator, on Redis (a single server or a Redis Cluster)
// through go-redis.
//
// Layout: every key of a room carries the hash tag {class/room}, so a
// room lives on one shard and one Lua script can check its fencing token
// and apply its batch atomically:
//
//	rg:{c/r}:kv     hash   key → value
//	rg:{c/r}:keys   zset   the keys, all score 0: ZRANGE BYLEX lists them in byte order
//	rg:{c/r}:mem    hash   socket id → membership record
//	rg:{c/r}:meta   hash   bytes, alarm (unix ns)
//	rg:{c/r}:fence  string the highest fencing token seen
//	rg:{c/r}:lease  string "token node", with the lease's TTL
//	rg:rooms        zset   "class\0room" of rooms that may have data (a superset, pruned on commit)
//	rg:alarms       zset   "class\0room" scored by alarm time in ms (never later than the room's alarm)
//	rg:{nodes}      hash   node id → JSON heartbeat (and rg:{nodes}:exp, id → expiry by Redis's clock)
//
// The two indexes live on their own shards, so they cannot change in the
// room's script; they are kept as supersets that the readers check against
// the room's own keys, which are the truth.
package redisstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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

// Get implements storage.Store.
func (s *Store) Get(ctx context.Context, r storage.Room, keys ...string) ([][]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	out := make([][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	vals, err := s.c.HMGet(ctx, s.key(r, "kv"), keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: get: %w", err)
	}
	for i, v := range vals {
		if str, ok := v.(string); ok {
			out[i] = []byte(str)
		}
	}
	return out, nil
}

// List implements storage.Store.
func (s *Store) List(ctx context.Context, r storage.Room, o storage.ListOptions) ([]storage.KV, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	lo, hi := lexRange(o)
	limit := o.Limit
	if limit <= 0 {
		limit = -1
	}
	rev := "0"
	if o.Reverse {
		rev = "1"
	}
	res, err := listScript.Run(ctx, s.c, []string{s.key(r, "kv"), s.key(r, "keys")}, lo, hi, limit, rev).Slice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redisstore: list: %w", err)
	}
	out := make([]storage.KV, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		k, _ := res[i].(string)
		v, ok := res[i+1].(string)
		if !ok {
			continue // deleted between the two reads of the script: cannot happen, scripts are atomic
		}
		out = append(out, storage.KV{Key: k, Value: []byte(v)})
	}
	return out, nil
}

// lexRange turns list options into ZRANGE BYLEX bounds: the greater of
// Start and Prefix below, the lesser of End and the first key past the
// prefix above.
func lexRange(o storage.ListOptions) (lo, hi string) {
	lo = "-"
	if low := max(o.Start, o.Prefix); low != "" {
		lo = "[" + low
	}
	hi = "+"
	upper := ""
	if o.Prefix != "" {
		upper = storage.PrefixEnd(o.Prefix)
	}
	switch {
	case o.End != "" && (upper == "" || o.End < upper):
		hi = "(" + o.End
	case upper != "":
		hi = "(" + upper
	}
	return lo, hi
}

// Commit implements storage.Store. The batch joins the next pipeline.
func (s *Store) Commit(ctx context.Context, r storage.Room, b *storage.Batch, done func(error)) {
	// Once queued, the batch may be applied at any moment: only the
	// flusher's answer tells whether it was. So ctx is not watched after
	// that, but for a batch whose ctx ended before it was sent (skipped by
	// the flusher, not applied); the flusher's own timeout bounds the rest.
	s.queue.Put(&storage.Pending{Ctx: ctx, Room: r, Batch: b, Done: done})
}

// commitGroup sends the group's scripts in one pipeline, then the index
// updates that must follow a successful script.
func (s *Store) commitGroup(group []*storage.Pending) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmds := make([]*redis.Cmd, len(group))
	befores := make([]*redis.IntCmd, len(group))
	pipe := s.c.Pipeline()
	for i, p := range group {
		if err := p.Ctx.Err(); err != nil {
			p.Done(err) // never sent: its caller gave up, and it is not applied
			group[i] = nil
			continue
		}
		befores[i] = s.before(ctx, pipe, p)
		cmds[i] = commitScript.EvalSha(ctx, pipe, s.commitKeys(p.Room), commitArgs(p.Batch)...)
	}
	if pipe.Len() == 0 {
		return
	}
	pipe.Exec(ctx) // each command carries its own error
	s.resend(ctx, commitScript, cmds, func(i int) ([]string, []any) {
		return s.commitKeys(group[i].Room), commitArgs(group[i].Batch)
	})
	var tidy []indexOp
	applied := make([]bool, len(group))
	for i, p := range group {
		if p == nil {
			continue
		}
		res, err := cmds[i].Int()
		switch {
		case err != nil:
			p.Done(fmt.Errorf("redisstore: commit %s: %w", p.Room, err))
		case res < 0:
			p.Done(storage.ErrFenced)
		default:
			applied[i] = true
			if befores[i] != nil && befores[i].Err() != nil && res != 1 {
				// The room index missed it (its shard was unreachable):
				// write it again, or the room would not be listed.
				tidy = append(tidy, indexOp{key: s.roomsKey(), member: indexMember(p.Room), add: true})
			}
			tidy = s.after(tidy, p, res == 1)
		}
	}
	// The index updates after a script are idempotent; a few tries keep an
	// alarm from going unindexed (it would never fire) over a blip.
	for try := 0; len(tidy) > 0 && try < 3; try++ {
		if try > 0 {
			time.Sleep(50 * time.Millisecond << try)
		}
		pipe := s.c.Pipeline()
		res := make([]redis.Cmder, len(tidy))
		for i, op := range tidy {
			if op.add {
				res[i] = pipe.ZAdd(ctx, op.key, redis.Z{Score: op.score, Member: op.member})
			} else {
				res[i] = pipe.ZRem(ctx, op.key, op.member)
			}
		}
		pipe.Exec(ctx)
		failed := tidy[:0]
		for i, op := range tidy {
			if res[i].Err() != nil {
				failed = append(failed, op)
			}
		}
		tidy = failed
	}
	for i, p := range group {
		if applied[i] {
			p.Done(nil)
		}
	}
}

// before puts the room in both indexes ahead of its script, so that each
// index stays a superset of the truth whatever fails later: the room is
// listed, and an alarm is indexed no later than it is due (LT only lowers
// an existing score).
func (s *Store) before(ctx context.Context, pipe redis.Pipeliner, p *storage.Pending) (index *redis.IntCmd) {
	m := indexMember(p.Room)
	if len(p.Batch.Puts) > 0 || len(p.Batch.Members) > 0 || p.Batch.Alarm != nil && !p.Batch.Alarm.At.IsZero() {
		index = pipe.ZAdd(ctx, s.roomsKey(), redis.Z{Member: m})
	}
	if a := p.Batch.Alarm; a != nil && !a.At.IsZero() {
		pipe.ZAddLT(ctx, s.alarmsKey(), redis.Z{Score: float64(a.At.UnixMilli()), Member: m})
	}
	return index
}

// after makes the indexes exact once the room's script succeeded.
func (s *Store) after(ops []indexOp, p *storage.Pending, empty bool) []indexOp {
	m := indexMember(p.Room)
	if a := p.Batch.Alarm; a != nil {
		ops = append(ops, indexOp{key: s.alarmsKey(), member: m, add: !a.At.IsZero(), score: float64(a.At.UnixMilli())})
	}
	if empty {
		ops = append(ops, indexOp{key: s.roomsKey(), member: m})
	}
	return ops
}

// indexOp is one write to the room or alarm index: ZADD (add) or ZREM.
type indexOp struct {
	key, member string
	add         bool
	score       float64
}

func (s *Store) commitKeys(r storage.Room) []string {
	return []string{s.key(r, "kv"), s.key(r, "keys"), s.key(r, "mem"), s.key(r, "meta"), s.key(r, "fence")}
}

func commitArgs(b *storage.Batch) []any {
	args := make([]any, 0, 6+2*len(b.Puts)+len(b.Deletes)+2*len(b.Members))
	deleteAll := "0"
	if b.DeleteAll {
		deleteAll = "1"
	}
	args = append(args, strconv.FormatUint(b.Token, 10), deleteAll, len(b.Puts))
	for _, kv := range b.Puts {
		args = append(args, kv.Key, kv.Value)
	}
	args = append(args, len(b.Deletes))
	for _, k := range b.Deletes {
		args = append(args, k)
	}
	args = append(args, len(b.Members))
	for _, m := range b.Members {
		rec := "-"
		if m.Data != nil {
			rec = "+" + string(m.Data)
		}
		args = append(args, strconv.FormatUint(m.ID, 10), rec)
	}
	switch {
	case b.Alarm == nil:
		args = append(args, "")
	case b.Alarm.At.IsZero():
		args = append(args, "-")
	default:
		args = append(args, strconv.FormatInt(b.Alarm.At.UnixNano(), 10))
	}
	return args
}

// Members implements storage.Store.
func (s *Store) Members(ctx context.Context, r storage.Room) ([]storage.Member, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	all, err := s.c.HGetAll(ctx, s.key(r, "mem")).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: members: %w", err)
	}
	out := make([]storage.Member, 0, len(all))
	for id, data := range all {
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			continue // not written by this package
		}
		out = append(out, storage.Member{ID: n, Data: []byte(data)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Stat implements storage.Store.
func (s *Store) Stat(ctx context.Context, r storage.Room) (storage.Stat, bool, error) {
	if err := s.check(); err != nil {
		return storage.Stat{}, false, err
	}
	cmd := s.statCmd(ctx, s.c, r)
	return statOf(r, cmd)
}

func (s *Store) statCmd(ctx context.Context, c redis.Scripter, r storage.Room) *redis.Cmd {
	// EVAL, not EVALSHA: in a pipeline a missing script cannot be retried,
	// and this one is short.
	return statScript.Eval(ctx, c, []string{s.key(r, "keys"), s.key(r, "mem"), s.key(r, "meta")})
}

func statOf(r storage.Room, cmd *redis.Cmd) (storage.Stat, bool, error) {
	res, err := cmd.Slice()
	if err != nil || len(res) != 4 {
		return storage.Stat{}, false, fmt.Errorf("redisstore: stat %s: %w", r, err)
	}
	st := storage.Stat{Room: r}
	keys, _ := res[0].(int64)
	members, _ := res[3].(int64)
	st.Keys, st.Members = int(keys), int(members)
	bytes, _ := res[1].(string)
	st.Bytes, _ = strconv.ParseInt(bytes, 10, 64)
	if alarm, _ := res[2].(string); alarm != "" {
		ns, _ := strconv.ParseInt(alarm, 10, 64)
		st.Alarm = time.Unix(0, ns)
	}
	return st, st.Keys > 0 || st.Members > 0 || !st.Alarm.IsZero(), nil
}

// Rooms implements storage.Store. The index may name rooms that no longer
// have data; those are skipped, and pages are filled from further on.
func (s *Store) Rooms(ctx context.Context, class, prefix string, after storage.Room, limit int) ([]storage.Stat, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	lo, hi := "-", "+"
	if class != "" {
		lo = "[" + class + "\x00" + prefix
		hi = "(" + class + "\x01"
		if prefix != "" {
			if end := storage.PrefixEnd(prefix); end != "" {
				hi = "(" + class + "\x00" + end
			}
		}
	}
	if after != (storage.Room{}) {
		if m := indexMember(after); lo == "-" || m >= lo[1:] {
			lo = "(" + m
		}
	}
	var out []storage.Stat
	for {
		want := int64(500)
		if limit > 0 {
			want = int64(limit - len(out))
		}
		names, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.roomsKey(), Start: lo, Stop: hi, ByLex: true, Count: want}).Result()
		if err != nil {
			return nil, fmt.Errorf("redisstore: rooms: %w", err)
		}
		if len(names) == 0 {
			return out, nil
		}
		pipe := s.c.Pipeline()
		cmds := make([]*redis.Cmd, 0, len(names))
		rooms := make([]storage.Room, 0, len(names))
		for _, n := range names {
			r := parseIndexMember(n)
			if !strings.HasPrefix(r.Name, prefix) {
				continue
			}
			rooms = append(rooms, r)
			cmds = append(cmds, s.statCmd(ctx, pipe, r))
		}
		if len(cmds) > 0 {
			pipe.Exec(ctx)
		}
		for i, r := range rooms {
			st, ok, err := statOf(r, cmds[i])
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, st)
			}
		}
		if limit > 0 && len(out) >= limit || int64(len(names)) < want {
			return out, nil
		}
		lo = "(" + names[len(names)-1]
	}
}

// DueAlarms implements storage.Store. Each indexed alarm is checked against
// its room's own: an entry that is stale (the commit that would have fixed
// it did not finish) is corrected instead of returned.
func (s *Store) DueAlarms(ctx context.Context, now time.Time, limit int) ([]storage.Due, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	zs, err := s.c.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: s.alarmsKey(), Start: "-inf",
		Stop: strconv.FormatInt(now.UnixMilli(), 10), ByScore: true, Count: int64(limit)}).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: due alarms: %w", err)
	}
	exact, err := s.exactAlarms(ctx, zs)
	if err != nil {
		return nil, err
	}
	var out []storage.Due
	for i, z := range zs {
		if !exact[i].IsZero() && !exact[i].After(now) {
			out = append(out, storage.Due{Room: parseIndexMember(z.Member.(string)), At: exact[i]})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, nil
}

// exactAlarms reads the rooms' own alarm times for index entries, fixing
// entries that disagree with them; a zero time marks a room with no alarm.
func (s *Store) exactAlarms(ctx context.Context, zs []redis.Z) ([]time.Time, error) {
	out := make([]time.Time, len(zs))
	if len(zs) == 0 {
		return out, nil
	}
	pipe := s.c.Pipeline()
	cmds := make([]*redis.StringCmd, len(zs))
	for i, z := range zs {
		cmds[i] = pipe.HGet(ctx, s.key(parseIndexMember(z.Member.(string)), "meta"), "alarm")
	}
	pipe.Exec(ctx)
	for i, z := range zs {
		v, err := cmds[i].Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("redisstore: alarm: %w", err)
		}
		fix := "" // the room has no alarm: drop the entry
		if v != "" {
			ns, _ := strconv.ParseInt(v, 10, 64)
			out[i] = time.Unix(0, ns)
			ms := out[i].UnixMilli()
			if float64(ms) == z.Score {
				continue
			}
			fix = strconv.FormatInt(ms, 10)
		}
		fixAlarmScript.Run(ctx, s.c, []string{s.alarmsKey()}, z.Member, z.Score, fix) // best effort
	}
	return out, nil
}

// NextAlarm implements storage.Store.
func (s *Store) NextAlarm(ctx context.Context) (time.Time, bool, error) {
	if err := s.check(); err != nil {
		return time.Time{}, false, err
	}
	for range 8 { // each pass fixes a stale head, if any
		zs, err := s.c.ZRangeWithScores(ctx, s.alarmsKey(), 0, 0).Result()
		if err != nil {
			return time.Time{}, false, fmt.Errorf("redisstore: next alarm: %w", err)
		}
		if len(zs) == 0 {
			return time.Time{}, false, nil
		}
		exact, err := s.exactAlarms(ctx, zs)
		if err != nil {
			return time.Time{}, false, err
		}
		if !exact[0].IsZero() && float64(exact[0].UnixMilli()) == zs[0].Score {
			return exact[0], true, nil
		}
	}
	return time.Time{}, false, errors.New("redisstore: next alarm: index keeps changing")
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

// Coordinator.

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

// resend runs again, in one pipeline, the commands of cmds that Redis
// refused with NOSCRIPT, once the script is loaded: Redis forgets its
// scripts when it restarts, and one round trip per command would undo the
// pipeline. args(i) rebuilds the i-th command's keys and arguments; nil
// commands (never sent) are left alone.
func (s *Store) resend(ctx context.Context, script *redis.Script, cmds []*redis.Cmd, args func(i int) ([]string, []any)) {
	var again []int
	for i, c := range cmds {
		if c != nil && c.Err() != nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) == 0 || script.Load(ctx, s.c).Err() != nil {
		return // a failed load leaves them their NOSCRIPT error
	}
	pipe := s.c.Pipeline()
	for _, i := range again {
		keys, argv := args(i)
		cmds[i] = script.EvalSha(ctx, pipe, keys, argv...)
	}
	pipe.Exec(ctx)
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
