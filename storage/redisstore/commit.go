package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomgate/roomgate/storage"
)

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
		reply, err := cmds[i].Int64Slice() // {-1 fenced, 1 empty, 0 not; the room's bytes}
		switch {
		case err == nil && len(reply) != 2:
			p.Done(fmt.Errorf("redisstore: commit %s: the script answered %v", p.Room, reply))
		case err != nil:
			p.Done(fmt.Errorf("redisstore: commit %s: %w", p.Room, err))
		case reply[0] < 0:
			p.Done(storage.ErrFenced)
		default:
			p.Batch.Bytes = reply[1]
			applied[i] = true
			if befores[i] != nil && befores[i].Err() != nil && reply[0] != 1 {
				// The room index missed it (its shard was unreachable):
				// write it again, or the room would not be listed.
				tidy = append(tidy, indexOp{key: s.roomsKey(), member: indexMember(p.Room), add: true})
			}
			tidy = s.after(tidy, p, reply[0] == 1)
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
