// Package filestore is the embedded storage.Store: a directory under -data,
// on github.com/cockroachdb/pebble, for a single node without Redis.
//
// Pebble is a log-structured store: a commit appends one record to its
// write-ahead log and syncs it once, then lands in an in-memory table that
// is flushed and compacted in the background. That suits what rooms do,
// many small writes that each must be durable before the room may answer
// (the output gate): a commit costs one sequential write and one fsync,
// whatever it touches, where a B-tree rewrites every page it touches and
// syncs twice. Commits are grouped on top: while one group is being synced,
// every commit that arrives waits, and the next group carries all of them
// in one batch, so one fsync serves as many events as the load brings and
// an idle store adds no delay.
//
// Layout, one key space per leading byte (rk is class NUL name; names hold
// no NUL, so every prefix below is one room's alone):
//
//	'd' rk NUL key        a room's keys, in byte order
//	'm' rk                the room index: key count, bytes, alarm, members
//	'a' at(8, BE) rk      alarms in time order
//	'f' rk                the room's highest fencing token
//	's' rk NUL id(8, BE)  the room's sockets' membership records
package filestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/roomgate/roomgate/storage"
)

// maxGroup bounds how many commits share one batch.
const maxGroup = 1024

// Store is the embedded storage.Store.
type Store struct {
	db      *pebble.DB
	lock    *pebble.Lock
	commits *storage.CommitQueue
	done    chan struct{} // closed when the committer returns

	mu     sync.RWMutex // readers hold it shared, so Close never pulls the DB from under one
	closed bool
	once   sync.Once
}

// legacyFile is the single bbolt file of Roomgate's first embedded store.
const legacyFile = "roomgate.db"

// Open opens or creates the store in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("filestore: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, legacyFile)); err == nil {
		return nil, fmt.Errorf("filestore: %s holds %s, the file store of an earlier Roomgate, which this one does not read: "+
			"move it out of the directory (rooms then start empty) or point -data elsewhere", dir, legacyFile)
	}
	// Locked here rather than by Open, to say plainly who holds it.
	lock, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		return nil, fmt.Errorf("filestore: cannot lock %s (is another roomgate using it?): %w", dir, err)
	}
	o := &pebble.Options{
		Lock:   lock,
		Logger: logger{},
		// Pinned: a newer Pebble must not rewrite the files into a format an
		// older Roomgate cannot open; raising it is a deliberate change.
		FormatMajorVersion: pebble.FormatValueSeparation,
		EventListener:      events(),
		// Sockets need the descriptors: the process limit is shared.
		MaxOpenFiles: 256,
		// Recent keys answer the read every write makes from memory; Pebble
		// grows a memtable to this size in doubling steps from 256 KiB, so
		// a quiet node does not hold it all.
		MemTableSize: 32 << 20,
	}
	// Every write reads its key first (a room's key count and bytes are
	// kept exact), and most written keys are new: Bloom filters answer
	// "absent" without reading a block.
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, o)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("filestore: open: %w", err)
	}
	s := &Store{db: db, lock: lock, commits: storage.NewCommitQueue(maxGroup), done: make(chan struct{})}
	go func() { // the committer: one group at a time, as many per batch as are waiting
		defer close(s.done)
		s.commits.Serve(maxGroup, s.applyGroup)
	}()
	return s, nil
}

// Close waits for the batch in progress, fails the commits still queued
// with ErrClosed, and closes the store.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.commits.Close()
		<-s.done
		s.commits.Fail()
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		err = errors.Join(s.db.Close(), s.lock.Close())
	})
	return err
}

// Commit implements storage.Store.
func (s *Store) Commit(ctx context.Context, r storage.Room, b *storage.Batch, done func(error)) {
	s.commits.Put(&storage.Pending{Ctx: ctx, Room: r, Batch: b, Done: done})
}

// applyGroup writes the group in one synced batch. A commit with a stale
// fencing token is left out (it writes nothing) and fails alone; so does
// one whose context ended before it was applied. Should a read fail while
// the batch is built, or the batch be refused before it reaches the log,
// each commit is tried again in a batch of its own, so one bad commit
// fails only itself. A failed write or sync of the log stops the node
// (Pebble's Fatalf panics): nothing unwritten is ever acknowledged.
func (s *Store) applyGroup(group []*storage.Pending) {
	errs := make([]error, len(group))
	if err := s.applyBatch(group, errs); err != nil && len(group) > 1 {
		for i := range group {
			errs[i] = nil
			if err := s.applyBatch(group[i:i+1], errs[i:i+1]); err != nil {
				errs[i] = err
			}
		}
	} else if err != nil {
		errs[0] = err
	}
	for i, c := range group {
		c.Done(errs[i])
	}
}

// applyBatch writes group in one batch, setting errs[i] for the commits it
// leaves out (fenced, or given up by their caller). It returns an error
// when nothing was written.
func (s *Store) applyBatch(group []*storage.Pending, errs []error) error {
	// Indexed, so a commit reads what the ones before it in the batch wrote.
	b := s.db.NewIndexedBatch()
	defer b.Close()
	for i, c := range group {
		if err := c.Ctx.Err(); err != nil {
			errs[i] = err // not applied, and its caller is told so
			continue
		}
		switch err := apply(b, c.Room, c.Batch); {
		case errors.Is(err, storage.ErrFenced):
			errs[i] = err
		case err != nil:
			return fmt.Errorf("filestore: commit %s: %w", c.Room, err) // the batch is not whole
		}
	}
	if b.Empty() {
		return nil
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("filestore: commit: %w", err)
	}
	return nil
}

// roomKey orders rooms by class, then name: NUL sorts before every byte a
// name may hold.
func roomKey(r storage.Room) []byte { return []byte(r.Class + "\x00" + r.Name) }

func parseRoomKey(k []byte) storage.Room {
	class, name, _ := bytes.Cut(k, []byte{0})
	return storage.Room{Class: string(class), Name: string(name)}
}

func key(space byte, rk []byte, tail ...byte) []byte {
	k := make([]byte, 0, 1+len(rk)+len(tail))
	return append(append(append(k, space), rk...), tail...)
}

// dataPrefix is what every key of the room starts with.
func dataPrefix(rk []byte) []byte { return key('d', rk, 0) }

func membersPrefix(rk []byte) []byte { return key('s', rk, 0) }

func memberKey(rk []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(membersPrefix(rk), id)
}

func alarmKey(at int64, rk []byte) []byte {
	return append(binary.BigEndian.AppendUint64([]byte{'a'}, uint64(at)), rk...)
}

// end is the exclusive upper bound of the keys starting with p.
func end(p []byte) []byte { return []byte(storage.PrefixEnd(string(p))) }

// meta is a room's index entry.
type meta struct {
	keys    uint64
	bytes   uint64
	alarm   int64 // Unix nanoseconds; 0: none
	members uint64
}

func readMeta(v []byte) meta {
	if len(v) != 32 {
		return meta{}
	}
	return meta{
		keys:    binary.BigEndian.Uint64(v),
		bytes:   binary.BigEndian.Uint64(v[8:]),
		alarm:   int64(binary.BigEndian.Uint64(v[16:])),
		members: binary.BigEndian.Uint64(v[24:]),
	}
}

func (m meta) encode() []byte {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b, m.keys)
	binary.BigEndian.PutUint64(b[8:], m.bytes)
	binary.BigEndian.PutUint64(b[16:], uint64(m.alarm))
	binary.BigEndian.PutUint64(b[24:], m.members)
	return b
}

// get returns a copy of k's value; ok is false when k is absent.
func get(r pebble.Reader, k []byte) (v []byte, ok bool, err error) {
	v, closer, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v = bytes.Clone(v)
	closer.Close()
	return v, true, nil
}

// size returns the length of k's value without copying it.
func size(r pebble.Reader, k []byte) (n int, ok bool, err error) {
	v, closer, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	n = len(v)
	closer.Close()
	return n, true, nil
}

// apply adds one commit to the group's batch. It checks the fencing token
// before it writes anything, so a fenced commit leaves the batch as it was.
func apply(b *pebble.Batch, r storage.Room, c *storage.Batch) error {
	rk := roomKey(r)
	if c.Token != 0 {
		fk := key('f', rk)
		v, _, err := get(b, fk)
		if err != nil {
			return err
		}
		held := uint64(0)
		if len(v) == 8 {
			held = binary.BigEndian.Uint64(v)
		}
		if held > c.Token {
			return storage.ErrFenced
		}
		if held < c.Token {
			if err := b.Set(fk, binary.BigEndian.AppendUint64(nil, c.Token), nil); err != nil {
				return err
			}
		}
	}
	mk := key('m', rk)
	mv, _, err := get(b, mk)
	if err != nil {
		return err
	}
	m := readMeta(mv)
	if c.Empty() {
		c.Bytes = int64(m.bytes)
		return nil
	}
	before := m
	var w writer
	dp := dataPrefix(rk)
	wiped := false // the old values are gone: none to read
	if c.DeleteAll && m.keys > 0 {
		w.do(b.DeleteRange(dp, end(dp), nil))
		m.keys, m.bytes, wiped = 0, 0, true
	}
	for _, k := range c.Deletes {
		if wiped {
			break // nothing is left to delete
		}
		dk := append(dp[:len(dp):len(dp)], k...)
		n, had, err := size(b, dk)
		if err != nil {
			return err
		}
		if had {
			m.keys--
			m.bytes -= uint64(len(k) + n)
			w.do(b.Delete(dk, nil))
		}
	}
	for _, kv := range c.Puts {
		dk := append(dp[:len(dp):len(dp)], kv.Key...)
		// Read even after a wipe: the batch sees its own DeleteRange, and
		// a key put twice in one batch must count once.
		n, had, err := size(b, dk)
		if err != nil {
			return err
		}
		if had {
			m.bytes -= uint64(len(kv.Key) + n)
		} else {
			m.keys++
		}
		m.bytes += uint64(len(kv.Key) + len(kv.Value))
		w.do(b.Set(dk, kv.Value, nil))
	}
	if c.Alarm != nil {
		if m.alarm != 0 {
			w.do(b.Delete(alarmKey(m.alarm, rk), nil))
		}
		m.alarm = 0
		if !c.Alarm.At.IsZero() {
			m.alarm = max(c.Alarm.At.UnixNano(), 1)
			w.do(b.Set(alarmKey(m.alarm, rk), nil, nil))
		}
	}
	for _, mem := range c.Members {
		k := memberKey(rk, mem.ID)
		_, had, err := size(b, k)
		if err != nil {
			return err
		}
		switch {
		case mem.Data == nil && had:
			m.members--
			w.do(b.Delete(k, nil))
		case mem.Data != nil:
			if !had {
				m.members++
			}
			w.do(b.Set(k, mem.Data, nil))
		}
	}
	c.Bytes = int64(m.bytes)
	switch {
	case m == before:
	case m.keys == 0 && m.alarm == 0 && m.members == 0:
		w.do(b.Delete(mk, nil))
	default:
		w.do(b.Set(mk, m.encode(), nil))
	}
	return w.err
}

// writer keeps the first error of a run of batch writes.
type writer struct{ err error }

func (w *writer) do(err error) {
	if w.err == nil {
		w.err = err
	}
}

// read runs f unless the store is closed.
func (s *Store) read(f func() error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return storage.ErrClosed
	}
	return f()
}

// scan calls f with each key and value in [lo, hi), last first when
// reverse, until f returns false. The slices are valid only during f.
func (s *Store) scan(lo, hi []byte, reverse bool, f func(k, v []byte) bool) error {
	return s.read(func() error {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return err
		}
		ok, next := it.First(), it.Next
		if reverse {
			ok, next = it.Last(), it.Prev
		}
		for ; ok; ok = next() {
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return err
			}
			if !f(it.Key(), v) {
				break
			}
		}
		return it.Close()
	})
}

// Get implements storage.Store.
func (s *Store) Get(ctx context.Context, r storage.Room, keys ...string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	err := s.read(func() error {
		dp := dataPrefix(roomKey(r))
		for i, k := range keys {
			v, _, err := get(s.db, append(dp[:len(dp):len(dp)], k...))
			if err != nil {
				return err
			}
			out[i] = v
		}
		return nil
	})
	return out, err
}

// List implements storage.Store.
func (s *Store) List(ctx context.Context, r storage.Room, o storage.ListOptions) ([]storage.KV, error) {
	dp := dataPrefix(roomKey(r))
	lo := max(o.Start, o.Prefix) // keys with the prefix sort at or after it
	hi := o.End
	if ub := storage.PrefixEnd(o.Prefix); ub != "" && (hi == "" || ub < hi) {
		hi = ub
	}
	if hi != "" && hi <= lo {
		return nil, s.read(func() error { return nil })
	}
	upper := end(dp)
	if hi != "" {
		upper = append(dp[:len(dp):len(dp)], hi...)
	}
	var out []storage.KV
	err := s.scan(append(dp[:len(dp):len(dp)], lo...), upper, o.Reverse, func(k, v []byte) bool {
		out = append(out, storage.KV{Key: string(k[len(dp):]), Value: bytes.Clone(v)})
		return o.Limit <= 0 || len(out) < o.Limit
	})
	return out, err
}

// Members implements storage.Store.
func (s *Store) Members(ctx context.Context, r storage.Room) ([]storage.Member, error) {
	p := membersPrefix(roomKey(r))
	var out []storage.Member
	err := s.scan(p, end(p), false, func(k, v []byte) bool {
		if id := k[len(p):]; len(id) == 8 {
			out = append(out, storage.Member{ID: binary.BigEndian.Uint64(id), Data: bytes.Clone(v)})
		}
		return true
	})
	return out, err
}

// Stat implements storage.Store.
func (s *Store) Stat(ctx context.Context, r storage.Room) (storage.Stat, bool, error) {
	var st storage.Stat
	var ok bool
	err := s.read(func() error {
		v, found, err := get(s.db, key('m', roomKey(r)))
		if found {
			st, ok = statOf(r, readMeta(v)), true
		}
		return err
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
	from := []byte{'m'}
	if class != "" {
		from = key('m', roomKey(storage.Room{Class: class, Name: prefix}))
	}
	if after != (storage.Room{}) {
		if ak := key('m', roomKey(after), 0); bytes.Compare(ak, from) > 0 {
			from = ak // strictly after: the smallest key greater than after's
		}
	}
	var out []storage.Stat
	err := s.scan(from, []byte{'m' + 1}, false, func(k, v []byte) bool {
		r := parseRoomKey(k[1:])
		if class != "" && r.Class != class {
			return false
		}
		if !strings.HasPrefix(r.Name, prefix) {
			return class == "" // names of one class are contiguous and sorted
		}
		out = append(out, statOf(r, readMeta(v)))
		return limit <= 0 || len(out) < limit
	})
	return out, err
}

// DueAlarms implements storage.Store.
func (s *Store) DueAlarms(ctx context.Context, now time.Time, limit int) ([]storage.Due, error) {
	var out []storage.Due
	err := s.scan([]byte{'a'}, alarmKey(now.UnixNano()+1, nil), false, func(k, _ []byte) bool {
		if len(k) < 9 {
			return true
		}
		at := int64(binary.BigEndian.Uint64(k[1:]))
		out = append(out, storage.Due{Room: parseRoomKey(k[9:]), At: time.Unix(0, at)})
		return limit <= 0 || len(out) < limit
	})
	return out, err
}

// NextAlarm implements storage.Store.
func (s *Store) NextAlarm(ctx context.Context) (time.Time, bool, error) {
	var at time.Time
	var ok bool
	err := s.scan([]byte{'a'}, []byte{'a' + 1}, false, func(k, _ []byte) bool {
		if len(k) >= 9 {
			at, ok = time.Unix(0, int64(binary.BigEndian.Uint64(k[1:]))), true
		}
		return false
	})
	return at, ok, err
}

// Ping implements storage.Store.
func (s *Store) Ping(ctx context.Context) error { return s.read(func() error { return nil }) }

// logger keeps Pebble's routine news (WAL recovery, flushes) out of the
// node's log and passes its errors on.
type logger struct{}

func (logger) Infof(string, ...any) {}

func (logger) Errorf(format string, args ...any) {
	slog.Error("filestore: " + fmt.Sprintf(format, args...))
}

// Fatalf is how Pebble reports what it cannot go on from, such as
// corruption: a panic keeps the stack for whoever has to look.
func (logger) Fatalf(format string, args ...any) {
	panic("filestore: " + fmt.Sprintf(format, args...))
}

// events logs what an operator must see: the disk getting slow, and writes
// held back while compactions catch up (commits, and so every room's
// answers, wait then).
func events() *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) { slog.Error("filestore: background", "err", err) },
		DiskSlow: func(i pebble.DiskSlowInfo) {
			slog.Warn("filestore: disk slow", "path", i.Path, "op", i.OpType.String(), "for", i.Duration)
		},
		WriteStallBegin: func(i pebble.WriteStallBeginInfo) { slog.Warn("filestore: writes stalled", "reason", i.Reason) },
		WriteStallEnd:   func() { slog.Info("filestore: writes resumed") },
	}
}
