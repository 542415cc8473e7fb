// Package filestore is the embedded storage.Store: one file under the data
// directory, on go.etcd.io/bbolt, for a single node without Redis.
//
// bbolt gives ordered byte-keyed buckets with ACID transactions, and a
// commit is durable (fsync) when it returns. Commits are grouped: while one
// transaction is being written and synced, every commit that arrives waits,
// and the next transaction applies all of them, so one fsync serves as many
// events as the load brings and an idle store adds no delay.
//
// Layout: bucket "data" holds one nested bucket per room with its keys;
// "meta" holds each room's key count, bytes, alarm and member count (present while it has
// any), which is the room index; "alarms" orders alarms by time; "members"
// holds one nested bucket per room with its sockets' records, keyed by id;
// "fence" keeps each room's highest fencing token.
package filestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/roomgate/roomgate/storage"
)

var (
	bucketData    = []byte("data")
	bucketMeta    = []byte("meta")
	bucketAlarms  = []byte("alarms")
	bucketFence   = []byte("fence")
	bucketMembers = []byte("members")
)

// maxGroup bounds how many commits share one transaction.
const maxGroup = 1024

// Store is the embedded storage.Store.
type Store struct {
	db      *bolt.DB
	commits *storage.CommitQueue
	done    chan struct{} // closed when the committer returns
	once    sync.Once
}

// Open opens or creates the store in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("filestore: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "roomgate.db"), 0o600, &bolt.Options{
		Timeout:        2 * time.Second, // another process holds the file: say so instead of hanging
		NoFreelistSync: true,            // rebuilt at open; saves a write per commit
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			err = fmt.Errorf("%s is locked by another process", dir)
		}
		return nil, fmt.Errorf("filestore: open: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketData, bucketMeta, bucketAlarms, bucketFence, bucketMembers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("filestore: init: %w", err)
	}
	s := &Store{db: db, commits: storage.NewCommitQueue(maxGroup), done: make(chan struct{})}
	go s.committer()
	return s, nil
}

// Close waits for the transaction in progress, fails the commits still
// queued with ErrClosed, and closes the file.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.commits.Close()
		<-s.done
		s.commits.Fail()
		err = s.db.Close()
	})
	return err
}

// Commit implements storage.Store.
func (s *Store) Commit(ctx context.Context, r storage.Room, b *storage.Batch, done func(error)) {
	s.commits.Put(&storage.Pending{Ctx: ctx, Room: r, Batch: b, Done: done})
}

// committer applies queued commits, as many per transaction as are waiting.
func (s *Store) committer() {
	defer close(s.done)
	group := make([]*storage.Pending, 0, maxGroup)
	for {
		group, ok := s.commits.Take(group[:0], maxGroup)
		if !ok {
			return
		}
		s.applyGroup(group)
		clear(group)
	}
}

// applyGroup commits the group in one transaction. If that fails, each
// commit is tried alone, so one bad batch (a stale token) fails only itself.
func (s *Store) applyGroup(group []*storage.Pending) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, c := range group {
			if err := apply(tx, c.Room, c.Batch); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || len(group) == 1 {
		for _, c := range group {
			c.Done(wrap(err))
		}
		return
	}
	for _, c := range group {
		c.Done(wrap(s.db.Update(func(tx *bolt.Tx) error { return apply(tx, c.Room, c.Batch) })))
	}
}

func wrap(err error) error {
	switch {
	case err == nil, errors.Is(err, storage.ErrFenced):
		return err
	case errors.Is(err, bolt.ErrDatabaseNotOpen):
		return storage.ErrClosed
	}
	return fmt.Errorf("filestore: commit: %w", err)
}

// roomKey orders rooms by class, then name: NUL sorts before every byte a
// name may hold.
func roomKey(r storage.Room) []byte { return []byte(r.Class + "\x00" + r.Name) }

func parseRoomKey(k []byte) storage.Room {
	class, name, _ := bytes.Cut(k, []byte{0})
	return storage.Room{Class: string(class), Name: string(name)}
}

// meta is a room's index entry.
type meta struct {
	keys    uint64
	bytes   uint64
	alarm   int64 // Unix nanoseconds; 0: none
	members uint64
}

// readMeta reads both layouts: files written before membership was
// persisted hold 24 bytes.
func readMeta(v []byte) meta {
	if len(v) != 24 && len(v) != 32 {
		return meta{}
	}
	m := meta{
		keys:  binary.BigEndian.Uint64(v),
		bytes: binary.BigEndian.Uint64(v[8:]),
		alarm: int64(binary.BigEndian.Uint64(v[16:])),
	}
	if len(v) == 32 {
		m.members = binary.BigEndian.Uint64(v[24:])
	}
	return m
}

func (m meta) encode() []byte {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b, m.keys)
	binary.BigEndian.PutUint64(b[8:], m.bytes)
	binary.BigEndian.PutUint64(b[16:], uint64(m.alarm))
	binary.BigEndian.PutUint64(b[24:], m.members)
	return b
}

func memberKey(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

// applyMembers writes b's membership records and returns the new count.
func applyMembers(tx *bolt.Tx, rk []byte, ms []storage.Member, count uint64) (uint64, error) {
	if len(ms) == 0 {
		return count, nil
	}
	all := tx.Bucket(bucketMembers)
	mb, err := all.CreateBucketIfNotExists(rk)
	if err != nil {
		return count, err
	}
	for _, m := range ms {
		k := memberKey(m.ID)
		had := mb.Get(k) != nil
		switch {
		case m.Data == nil && had:
			count--
			err = mb.Delete(k)
		case m.Data != nil:
			if !had {
				count++
			}
			err = mb.Put(k, m.Data)
		}
		if err != nil {
			return count, err
		}
	}
	if count == 0 {
		return 0, all.DeleteBucket(rk)
	}
	return count, nil
}

func alarmKey(at int64, rk []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(at)), rk...)
}

func apply(tx *bolt.Tx, r storage.Room, b *storage.Batch) error {
	rk := roomKey(r)
	if b.Token != 0 {
		fence := tx.Bucket(bucketFence)
		if v := fence.Get(rk); len(v) == 8 && binary.BigEndian.Uint64(v) > b.Token {
			return storage.ErrFenced
		}
		if err := fence.Put(rk, binary.BigEndian.AppendUint64(nil, b.Token)); err != nil {
			return err
		}
	}
	data, metas := tx.Bucket(bucketData), tx.Bucket(bucketMeta)
	m := readMeta(metas.Get(rk))
	rb := data.Bucket(rk)
	if b.DeleteAll && rb != nil {
		if err := data.DeleteBucket(rk); err != nil {
			return err
		}
		rb, m.keys, m.bytes = nil, 0, 0
	}
	for _, k := range b.Deletes {
		if rb == nil {
			break
		}
		if old := rb.Get([]byte(k)); old != nil {
			m.keys--
			m.bytes -= uint64(len(k) + len(old))
			if err := rb.Delete([]byte(k)); err != nil {
				return err
			}
		}
	}
	if len(b.Puts) > 0 && rb == nil {
		var err error
		if rb, err = data.CreateBucket(rk); err != nil {
			return err
		}
	}
	for _, kv := range b.Puts {
		if old := rb.Get([]byte(kv.Key)); old != nil {
			m.bytes -= uint64(len(kv.Key) + len(old))
		} else {
			m.keys++
		}
		m.bytes += uint64(len(kv.Key) + len(kv.Value))
		if err := rb.Put([]byte(kv.Key), kv.Value); err != nil {
			return err
		}
	}
	if b.Alarm != nil {
		alarms := tx.Bucket(bucketAlarms)
		if m.alarm != 0 {
			if err := alarms.Delete(alarmKey(m.alarm, rk)); err != nil {
				return err
			}
		}
		m.alarm = 0
		if !b.Alarm.At.IsZero() {
			m.alarm = max(b.Alarm.At.UnixNano(), 1)
			if err := alarms.Put(alarmKey(m.alarm, rk), nil); err != nil {
				return err
			}
		}
	}
	if m.keys == 0 && rb != nil {
		if err := data.DeleteBucket(rk); err != nil {
			return err
		}
	}
	var err error
	if m.members, err = applyMembers(tx, rk, b.Members, m.members); err != nil {
		return err
	}
	if m.keys == 0 && m.alarm == 0 && m.members == 0 {
		return metas.Delete(rk)
	}
	return metas.Put(rk, m.encode())
}

// Get implements storage.Store.
func (s *Store) Get(ctx context.Context, r storage.Room, keys ...string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	err := s.view(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketData).Bucket(roomKey(r))
		if rb == nil {
			return nil
		}
		for i, k := range keys {
			if v := rb.Get([]byte(k)); v != nil {
				out[i] = bytes.Clone(v)
			}
		}
		return nil
	})
	return out, err
}

// List implements storage.Store.
func (s *Store) List(ctx context.Context, r storage.Room, o storage.ListOptions) ([]storage.KV, error) {
	var out []storage.KV
	err := s.view(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketData).Bucket(roomKey(r))
		if rb == nil {
			return nil
		}
		lo := max(o.Start, o.Prefix) // keys with the prefix sort at or after it
		hi := o.End
		if ub := storage.PrefixEnd(o.Prefix); ub != "" && (hi == "" || ub < hi) {
			hi = ub
		}
		in := func(k []byte) bool {
			return string(k) >= lo && (hi == "" || string(k) < hi)
		}
		c := rb.Cursor()
		var k, v []byte
		next := c.Next
		if o.Reverse {
			next = c.Prev
			if hi == "" {
				k, v = c.Last()
			} else if k, _ = c.Seek([]byte(hi)); k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		} else {
			k, v = c.Seek([]byte(lo))
		}
		for ; k != nil && in(k); k, v = next() {
			out = append(out, storage.KV{Key: string(k), Value: bytes.Clone(v)})
			if o.Limit > 0 && len(out) == o.Limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// Members implements storage.Store.
func (s *Store) Members(ctx context.Context, r storage.Room) ([]storage.Member, error) {
	var out []storage.Member
	err := s.view(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketMembers).Bucket(roomKey(r))
		if mb == nil {
			return nil
		}
		return mb.ForEach(func(k, v []byte) error {
			if len(k) == 8 {
				out = append(out, storage.Member{ID: binary.BigEndian.Uint64(k), Data: bytes.Clone(v)})
			}
			return nil
		})
	})
	return out, err
}

// Stat implements storage.Store.
func (s *Store) Stat(ctx context.Context, r storage.Room) (storage.Stat, bool, error) {
	var st storage.Stat
	var ok bool
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(roomKey(r))
		if v == nil {
			return nil
		}
		st, ok = statOf(r, readMeta(v)), true
		return nil
	})
	return st, ok, err
}

func statOf(r storage.Room, m meta) storage.Stat {
	st := storage.Stat{Room: r, Keys: int(m.keys), Bytes: int64(m.bytes), Members: int(m.members)}
	if m.alarm != 0 {
		st.Alarm = time.Unix(0, m.alarm)
	}
	return st
}

// Rooms implements storage.Store.
func (s *Store) Rooms(ctx context.Context, class, prefix string, after storage.Room, limit int) ([]storage.Stat, error) {
	var out []storage.Stat
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMeta).Cursor()
		var from []byte
		if class != "" {
			from = roomKey(storage.Room{Class: class, Name: prefix})
		}
		if after != (storage.Room{}) {
			if ak := append(roomKey(after), 0); bytes.Compare(ak, from) > 0 {
				from = ak // strictly after: the smallest key greater than after's
			}
		}
		for k, v := c.Seek(from); k != nil; k, v = c.Next() {
			r := parseRoomKey(k)
			if class != "" && r.Class != class {
				break
			}
			if len(r.Name) < len(prefix) || r.Name[:len(prefix)] != prefix {
				if class != "" {
					break // names of one class are contiguous and sorted
				}
				continue
			}
			out = append(out, statOf(r, readMeta(v)))
			if limit > 0 && len(out) == limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// DueAlarms implements storage.Store.
func (s *Store) DueAlarms(ctx context.Context, now time.Time, limit int) ([]storage.Due, error) {
	var out []storage.Due
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAlarms).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			at := int64(binary.BigEndian.Uint64(k))
			if at > now.UnixNano() || (limit > 0 && len(out) == limit) {
				break
			}
			out = append(out, storage.Due{Room: parseRoomKey(k[8:]), At: time.Unix(0, at)})
		}
		return nil
	})
	return out, err
}

// NextAlarm implements storage.Store.
func (s *Store) NextAlarm(ctx context.Context) (time.Time, bool, error) {
	var at time.Time
	var ok bool
	err := s.view(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketAlarms).Cursor().First(); k != nil {
			at, ok = time.Unix(0, int64(binary.BigEndian.Uint64(k))), true
		}
		return nil
	})
	return at, ok, err
}

// Ping implements storage.Store.
func (s *Store) Ping(ctx context.Context) error { return s.view(func(*bolt.Tx) error { return nil }) }

func (s *Store) view(f func(tx *bolt.Tx) error) error {
	if s.commits.Closed() {
		return storage.ErrClosed
	}
	err := s.db.View(f)
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return storage.ErrClosed
	}
	return err
}
