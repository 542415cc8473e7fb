package rooms

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/roomgate/roomgate/storage"
)

// Limits on a room's storage (Durable Objects' limits).
const (
	MaxKeySize   = 2 << 10
	MaxValueSize = 128 << 10
)

// KV is a stored key and its value.
type KV = storage.KV

// ListOptions select keys in byte order: see storage.ListOptions.
type ListOptions = storage.ListOptions

// Storage is a room's durable key-value storage. Writes are buffered and
// committed together, atomically, when the event returns; reads see the
// room's own writes at once, committed or not. Only the room's goroutine
// may use it.
type Storage struct {
	inst *instance
	txs  []*writeSet // open transactions' own writes, innermost last
}

// writeSet is a layer of uncommitted writes. When deleteAll is set, nothing
// beneath the layer is visible.
type writeSet struct {
	deleteAll bool
	kv        map[string][]byte    // nil value: deleted
	adds      int64                // bytes of the keys and values kv puts: what the layer may add to the room's size
	alarm     *storage.AlarmChange // the room's own alarm (Alarm)
	index     *storage.AlarmChange // the store's alarm when schedules exist (fixAlarm); nil: alarm
	sched     bool                 // the event changed the schedules or the alarm: fixAlarm works the index out
	members   map[SocketID][]byte  // membership records; nil value: the socket left
}

func (w *writeSet) empty() bool {
	return !w.deleteAll && len(w.kv) == 0 && w.alarm == nil && w.index == nil && len(w.members) == 0
}

// reset empties w, keeping its maps for reuse.
func (w *writeSet) reset() {
	w.deleteAll, w.alarm, w.index, w.sched, w.adds = false, nil, nil, false, 0
	clear(w.kv)
	clear(w.members)
}

func (w *writeSet) member(id SocketID, rec []byte) {
	if w.members == nil {
		w.members = make(map[SocketID][]byte)
	}
	w.members[id] = rec
}

func (w *writeSet) put(k string, v []byte) {
	if w.kv == nil {
		w.kv = make(map[string][]byte)
	}
	if old := w.kv[k]; old != nil {
		w.adds -= int64(len(k) + len(old))
	}
	if v != nil {
		w.adds += int64(len(k) + len(v))
	}
	w.kv[k] = v
}

// wipe makes w a DeleteAll: nothing beneath it counts any more.
func (w *writeSet) wipe() {
	w.deleteAll, w.kv, w.adds = true, nil, 0
}

// apply lays w over dst, as if w's writes came after dst's.
func (w *writeSet) applyTo(dst *writeSet) {
	if w.deleteAll {
		dst.deleteAll, dst.adds = true, 0
		clear(dst.kv)
	}
	for k, v := range w.kv {
		dst.put(k, v)
	}
	if w.alarm != nil {
		dst.alarm = w.alarm
		dst.index = w.index // nil: no schedules, the alarm is the index's
	}
	for id, rec := range w.members {
		dst.member(id, rec)
	}
}

func (w *writeSet) batch() *storage.Batch {
	b := &storage.Batch{DeleteAll: w.deleteAll, Alarm: w.alarm}
	if w.index != nil {
		b.Alarm = w.index
	}
	keys := make([]string, 0, len(w.kv))
	for k := range w.kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v := w.kv[k]; v != nil {
			b.Puts = append(b.Puts, storage.KV{Key: k, Value: v})
		} else {
			b.Deletes = append(b.Deletes, k)
		}
	}
	for id, rec := range w.members {
		b.Members = append(b.Members, storage.Member{ID: uint64(id), Data: rec})
	}
	return b
}

func (s *Storage) top() (*writeSet, error) {
	w, err := s.inst.writes()
	if n := len(s.txs); n > 0 && err == nil {
		return s.txs[n-1], nil
	}
	return w, err
}

// layers are the uncommitted write sets a read must see, newest first.
func (s *Storage) layers() []*writeSet {
	l := make([]*writeSet, 0, len(s.txs)+3)
	for i := len(s.txs) - 1; i >= 0; i-- {
		l = append(l, s.txs[i])
	}
	return append(l, s.inst.layers()...)
}

func (s *Storage) checkKey(k string) error {
	if len(k) == 0 || len(k) > MaxKeySize {
		return fmt.Errorf("%w: key of %d bytes, want 1 to %d", ErrLimit, len(k), MaxKeySize)
	}
	if strings.HasPrefix(k, reservedPrefix) {
		s.inst.rt.m.limited.WithLabelValues("reserved_key").Inc()
		return fmt.Errorf("%w: a key may not start with byte 0xff, which the runtime keeps for schedules", ErrLimit)
	}
	return nil
}

// Get returns key's value, or nil when it is absent. The value is the
// caller's own.
func (s *Storage) Get(ctx context.Context, key string) ([]byte, error) {
	m, err := s.GetMany(ctx, key)
	return m[key], err
}

// GetMany returns the values of keys that are present.
func (s *Storage) GetMany(ctx context.Context, keys ...string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(keys))
	var missing []string
next:
	for _, k := range keys {
		for _, w := range s.layers() {
			if v, ok := w.kv[k]; ok {
				if v != nil {
					out[k] = append([]byte{}, v...) // the layer's copy goes to the store
				}
				continue next
			}
			if w.deleteAll {
				continue next
			}
		}
		missing = append(missing, k)
	}
	if len(missing) == 0 {
		return out, nil
	}
	vals, err := s.inst.rt.store.Get(ctx, s.inst.room, missing...)
	if err != nil {
		return nil, fmt.Errorf("rooms: storage get: %w", err)
	}
	for i, k := range missing {
		if vals[i] != nil {
			out[k] = vals[i]
		}
	}
	return out, nil
}

// Put sets key to value with the event's writes. value is copied. It fails
// with ErrLimit when the room's keys and values would grow past the
// runtime's MaxRoomBytes (see quota).
func (s *Storage) Put(key string, value []byte) error {
	return s.put([]string{key}, [][]byte{value})
}

// PutMany sets several keys, all or none.
func (s *Storage) PutMany(kvs map[string][]byte) error {
	keys, values := make([]string, 0, len(kvs)), make([][]byte, 0, len(kvs))
	for k, v := range kvs {
		keys, values = append(keys, k), append(values, v)
	}
	return s.put(keys, values)
}

// put sets keys[i] to values[i], all or none.
func (s *Storage) put(keys []string, values [][]byte) error {
	for i, k := range keys {
		if err := s.checkKey(k); err != nil {
			return err
		}
		if len(values[i]) > MaxValueSize {
			return fmt.Errorf("%w: value of %d bytes, at most %d", ErrLimit, len(values[i]), MaxValueSize)
		}
	}
	w, err := s.top()
	if err != nil {
		return err
	}
	if err := s.quota(w, keys, values); err != nil {
		return err
	}
	for i, k := range keys {
		// A copy: the caller may reuse the value, and a value read back
		// must not alias one the store is writing.
		w.put(k, append([]byte{}, values[i]...))
	}
	return nil
}

// Delete removes keys with the event's writes.
func (s *Storage) Delete(keys ...string) error {
	for _, k := range keys {
		if err := s.checkKey(k); err != nil {
			return err
		}
	}
	w, err := s.top()
	if err != nil {
		return err
	}
	for _, k := range keys {
		w.put(k, nil)
	}
	return nil
}

// DeleteAll removes every key of the room with the event's writes.
func (s *Storage) DeleteAll() error {
	w, err := s.top()
	if err != nil {
		return err
	}
	w.wipe()
	if s.inst.inEvent {
		// The schedules go with the keys; the alarm stays.
		s.inst.cur.sched = true
	}
	return nil
}

// List returns the keys o selects with their values, the room's own
// uncommitted writes included.
func (s *Storage) List(ctx context.Context, o ListOptions) ([]KV, error) {
	if o.End == "" || o.End > reservedPrefix {
		o.End = reservedPrefix // the schedules' keys are not the room's to see
	}
	return s.list(ctx, o)
}

func (s *Storage) list(ctx context.Context, o ListOptions) ([]KV, error) {
	layers := s.layers()
	// Each uncommitted key can hide at most one stored key, so asking the
	// store for that many more than o.Limit always leaves enough.
	fetch := o
	hidden := false
	for _, w := range layers {
		if fetch.Limit > 0 {
			fetch.Limit += len(w.kv)
		}
		if w.deleteAll {
			hidden = true
			break
		}
	}
	var stored []KV
	if !hidden {
		var err error
		if stored, err = s.inst.rt.store.List(ctx, s.inst.room, fetch); err != nil {
			return nil, fmt.Errorf("rooms: storage list: %w", err)
		}
	}
	merged := make(map[string][]byte, len(stored))
	for _, kv := range stored {
		merged[kv.Key] = kv.Value
	}
	// Oldest layer first, so newer writes win.
	for i := len(layers) - 1; i >= 0; i-- {
		w := layers[i]
		if w.deleteAll {
			clear(merged)
		}
		for k, v := range w.kv {
			if !inRange(k, o) {
				continue
			}
			if v == nil {
				delete(merged, k)
			} else {
				merged[k] = append([]byte{}, v...)
			}
		}
	}
	out := make([]KV, 0, len(merged))
	for k, v := range merged {
		out = append(out, KV{Key: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return (out[i].Key < out[j].Key) != o.Reverse })
	if o.Limit > 0 && len(out) > o.Limit {
		out = out[:o.Limit]
	}
	return out, nil
}

func inRange(k string, o ListOptions) bool {
	return strings.HasPrefix(k, o.Prefix) && k >= o.Start && (o.End == "" || k < o.End)
}

// Transaction runs f with a Storage whose writes join the event's only if f
// returns nil: an error rolls all of them back and is returned. Reads inside
// see the transaction's own writes.
func (s *Storage) Transaction(ctx context.Context, f func(tx *Storage) error) error {
	w, err := s.top()
	if err != nil {
		return err
	}
	own := &writeSet{}
	tx := &Storage{inst: s.inst, txs: append(append([]*writeSet(nil), s.txs...), own)}
	if err := f(tx); err != nil {
		return err
	}
	own.applyTo(w)
	return nil
}
