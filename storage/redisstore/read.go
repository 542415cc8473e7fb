package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomgate/roomgate/storage"
)

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
