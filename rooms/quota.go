// The storage quota: how a room knows its size, and the check each write
// makes against Options.MaxRoomBytes.

package rooms

import (
	"context"
	"fmt"
)

// quota checks that putting keys[i] = values[i] into the write set w keeps
// the room within MaxRoomBytes once everything written so far is committed.
//
// The room's committed size is exact: the store reports it with every
// commit (storage.Batch.Bytes), and an instance reads it once (Stat) if it
// writes before its first commit returns. What is not committed yet is
// counted as an upper bound: every key a layer puts at its full size, as
// if none replaced a stored one, and deletes as freeing nothing. So a room
// far from its quota pays for the check with a few additions. Only a write
// that the bound refuses gets a closer look: the values it replaces are
// read (the layers, then the store), and it passes if it does not grow the
// room, or if the bound with what it really adds still fits. Near its
// quota a room may thus be refused a write that would have fit, until its
// pending writes are committed and the count is exact again.
func (s *Storage) quota(w *writeSet, keys []string, values [][]byte) error {
	in := s.inst
	limit := in.rt.o.MaxRoomBytes
	var add int64 // what the puts add to w
	for i, k := range keys {
		add += int64(len(k) + len(values[i]))
		if old := w.kv[k]; old != nil {
			add -= int64(len(k) + len(old))
		}
	}
	if add <= 0 {
		return nil // a write that shrinks w never takes the room past its quota
	}
	bound, ok := s.bound()
	if !ok {
		// Put takes no context: the read gets a commit's deadline.
		ctx, cancel := context.WithTimeout(context.Background(), in.rt.o.CommitTimeout)
		defer cancel()
		st, _, err := in.rt.store.Stat(ctx, in.room)
		if err != nil {
			// A store that cannot answer cannot take the write either:
			// its commit fails and says so. Put stays a write to memory.
			return nil
		}
		// A commit in flight may be counted twice until it returns: in
		// st if it landed first, and in its layer.
		in.size, in.sized = st.Bytes, true
		bound += in.size
	}
	if bound+add <= limit {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), in.rt.o.CommitTimeout)
	defer cancel()
	var grow int64 // what the puts add to the room: less what they replace, wherever it is visible now
	for i, k := range keys {
		old, err := s.Get(ctx, k)
		if err != nil {
			grow = add // unknown: the bound's answer stands
			break
		}
		grow += int64(len(values[i]))
		if old == nil {
			grow += int64(len(k))
		} else {
			grow -= int64(len(old))
		}
	}
	if grow <= 0 || bound+grow <= limit {
		return nil
	}
	in.rt.m.limited.WithLabelValues("storage_quota").Inc()
	return fmt.Errorf("%w: the room's storage would pass its quota of %d bytes", ErrLimit, limit)
}

// bound is the most the room's keys and values can take once every write
// so far is committed: the committed size plus what each uncommitted layer
// may add, down to the newest DeleteAll, under which nothing counts. ok is
// false when the committed size is needed and not known: bound is then
// the layers' part only.
func (s *Storage) bound() (b int64, ok bool) {
	for _, w := range s.layers() {
		b += w.adds
		if w.deleteAll {
			return b, true
		}
	}
	if !s.inst.sized {
		return b, false
	}
	return b + s.inst.size, true
}
