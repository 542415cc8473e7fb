package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomgate/roomgate/storage"
)

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
