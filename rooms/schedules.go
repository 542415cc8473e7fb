// Named schedules: any number of named alarms per room, kept in the room's
// own storage under reserved keys and served by its one alarm in the
// store's index.

package rooms

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/roomgate/roomgate/storage"
)

// Limits on a schedule.
const (
	MaxScheduleName    = 256
	MaxSchedulePayload = 16 << 10
)

// Reserved keys. A byte 0xff never starts a UTF-8 string, and sorts after
// every other: a user's key may not start with it (checkKey), and a List
// stops before it. Schedules are kept twice, by time (the earliest is one
// ordered read) and by name (a replace or a cancel is one get):
//
//	\xffa                 the user's alarm while schedules exist (8 bytes, 0: none)
//	\xfft<8-byte time><name>  at (8 bytes), retry (1 byte), payload
//	\xffn<name>           the 8-byte time of its \xfft key
//
// The store's one alarm for the room is then the earliest of the user's
// alarm and the schedules; without schedules it is the user's alarm, as it
// always was, and no reserved key exists.
const (
	reservedPrefix = "\xff"
	keyUserAlarm   = reservedPrefix + "a"
	schedByTime    = reservedPrefix + "t"
	schedByName    = reservedPrefix + "n"
)

// ScheduleInfo is a pending schedule.
type ScheduleInfo struct {
	Name    string
	At      time.Time // when it was set to fire
	Next    time.Time // when it fires next: At, or its next retry
	Retry   int       // failed tries so far
	Payload []byte
}

func be8(n int64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(n)) }

// schedTime is the time key of at: times before 1970 fire at once, and sort
// as 1970 does.
func schedTime(at time.Time) int64 { return max(at.UnixNano(), 0) }

func timeKey(t int64, name string) string { return schedByTime + string(be8(t)) + name }

func decodeSchedule(k string, v []byte) (ScheduleInfo, bool) {
	if len(k) < len(schedByTime)+8 || len(v) < 9 {
		return ScheduleInfo{}, false
	}
	t := int64(binary.BigEndian.Uint64([]byte(k[len(schedByTime):])))
	return ScheduleInfo{
		Name:    k[len(schedByTime)+8:],
		At:      time.Unix(0, int64(binary.BigEndian.Uint64(v))),
		Next:    time.Unix(0, t),
		Retry:   int(v[8]),
		Payload: v[9:],
	}, true
}

func encodeSchedule(at time.Time, retry int, payload []byte) []byte {
	v := make([]byte, 0, 9+len(payload))
	v = binary.BigEndian.AppendUint64(v, uint64(at.UnixNano()))
	v = append(v, byte(retry))
	return append(v, payload...)
}

// Schedule sets the schedule name to fire at at with payload, replacing
// any schedule of that name, with the event's writes. It fires at least
// once, through OnAlarm with info.Name and info.Payload, each schedule on
// its own and with its own retries; a time in the past fires at once.
func (r *Room) Schedule(name string, at time.Time, payload []byte) error {
	in := r.inst
	switch {
	case len(name) == 0 || len(name) > MaxScheduleName:
		in.rt.m.limited.WithLabelValues("schedule").Inc()
		return fmt.Errorf("%w: schedule name of %d bytes, want 1 to %d", ErrLimit, len(name), MaxScheduleName)
	case len(payload) > MaxSchedulePayload:
		in.rt.m.limited.WithLabelValues("schedule").Inc()
		return fmt.Errorf("%w: schedule payload of %d bytes, at most %d", ErrLimit, len(payload), MaxSchedulePayload)
	case at.IsZero() || at.After(latestAlarm):
		in.rt.m.limited.WithLabelValues("schedule").Inc()
		return fmt.Errorf("%w: schedule time %s", ErrLimit, at.UTC().Format(time.RFC3339))
	}
	w, err := in.writes()
	if err != nil {
		return err
	}
	// Schedule takes no context, like Put: the read gets a commit's deadline.
	ctx, cancel := context.WithTimeout(context.Background(), in.rt.o.CommitTimeout)
	defer cancel()
	if err := in.unschedule(ctx, w, name); err != nil {
		return err
	}
	t := schedTime(at)
	keys := []string{timeKey(t, name), schedByName + name}
	values := [][]byte{encodeSchedule(at, 0, payload), be8(t)}
	if err := r.storage.quota(w, keys, values); err != nil {
		return err
	}
	for i, k := range keys {
		w.put(k, values[i])
	}
	in.schedChanged(w)
	return nil
}

// CancelSchedule deletes the schedule name, if there is one, with the
// event's writes.
func (r *Room) CancelSchedule(name string) error {
	in := r.inst
	w, err := in.writes()
	if err != nil {
		return err
	}
	if len(name) == 0 || len(name) > MaxScheduleName {
		return nil // no such schedule can exist
	}
	ctx, cancel := context.WithTimeout(context.Background(), in.rt.o.CommitTimeout)
	defer cancel()
	return in.unschedule(ctx, w, name)
}

// Schedules lists the room's pending schedules in the order they fire,
// the event's own changes included.
func (r *Room) Schedules(ctx context.Context) ([]ScheduleInfo, error) {
	kvs, err := r.storage.list(ctx, ListOptions{Prefix: schedByTime})
	if err != nil {
		return nil, err
	}
	out := make([]ScheduleInfo, 0, len(kvs))
	for _, kv := range kvs {
		if s, ok := decodeSchedule(kv.Key, kv.Value); ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// unschedule deletes name's keys in w, if it has any.
func (in *instance) unschedule(ctx context.Context, w *writeSet, name string) error {
	v, err := in.r.storage.Get(ctx, schedByName+name)
	if err != nil || v == nil {
		return err
	}
	if len(v) == 8 {
		w.put(timeKey(int64(binary.BigEndian.Uint64(v)), name), nil)
	}
	w.put(schedByName+name, nil)
	in.schedChanged(w)
	return nil
}

// schedChanged notes that w changes the schedules: the room's indexed
// alarm is worked out again when the event ends (fixAlarm).
func (in *instance) schedChanged(w *writeSet) {
	w.sched = true
	in.schedFree = false
	in.schedGen++
}

// userAlarm is the room's own alarm (Alarm), as the event sees it.
func (in *instance) userAlarm(ctx context.Context) (time.Time, bool, error) {
	layers := in.layers()
	for _, w := range layers {
		if w.alarm != nil {
			return w.alarm.At, !w.alarm.At.IsZero(), nil
		}
	}
	if !in.schedFree {
		// A DeleteAll hides the stored keys but leaves the alarm: this key
		// is read through it.
		for _, w := range layers {
			if v := w.kv[keyUserAlarm]; len(v) == 8 {
				return decodeAlarm(v)
			}
		}
		vals, err := in.rt.store.Get(ctx, in.room, keyUserAlarm)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("rooms: alarm: %w", err)
		}
		if len(vals) == 1 && len(vals[0]) == 8 {
			return decodeAlarm(vals[0])
		}
	}
	st, ok, err := in.rt.store.Stat(ctx, in.room)
	if err != nil || !ok || st.Alarm.IsZero() {
		return time.Time{}, false, err
	}
	return st.Alarm, true, nil
}

func decodeAlarm(v []byte) (time.Time, bool, error) {
	n := int64(binary.BigEndian.Uint64(v))
	if n == 0 {
		return time.Time{}, false, nil
	}
	return time.Unix(0, n), true, nil
}

// fixAlarm sets the store's alarm for the room to the earliest of its own
// alarm and its schedules, when the current event changed either. It runs
// at the end of a handler call, so a failed read fails the event.
func (in *instance) fixAlarm(ctx context.Context) error {
	w := in.cur
	if !w.sched {
		return nil
	}
	w.sched = false
	if in.schedFree {
		return nil // the store's alarm is the room's own: w.alarm as it is
	}
	user, set, err := in.userAlarm(ctx)
	if err != nil {
		return err
	}
	first, err := in.r.storage.list(ctx, ListOptions{Prefix: schedByTime, Limit: 1})
	if err != nil {
		return err
	}
	if !set {
		user = time.Time{}
	}
	w.alarm = &storage.AlarmChange{At: user}
	if len(first) == 0 {
		w.put(keyUserAlarm, nil)
		w.index = nil
		in.schedFree = true
		return nil
	}
	s, _ := decodeSchedule(first[0].Key, first[0].Value)
	w.put(keyUserAlarm, be8(user.UnixNano()*boolInt(set)))
	idx := s.Next
	if set && user.Before(idx) {
		idx = user
	}
	w.index = &storage.AlarmChange{At: idx}
	return nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// schedulesPerRun bounds the schedules one alarm run fires; the rest are
// still due, and the scheduler hands the room its alarm again.
const schedulesPerRun = 1024

// runSchedules fires the room's due schedules, earliest first, each as an
// event of its own. It reports whether it found any.
func (in *instance) runSchedules(ctx context.Context) bool {
	if in.schedFree {
		return false
	}
	now := time.Now()
	due, err := in.r.storage.list(ctx, ListOptions{Prefix: schedByTime, End: timeKey(now.UnixNano()+1, ""), Limit: schedulesPerRun})
	if err != nil {
		in.rt.log.Warn("read due schedules", "room", in.addr.String(), "err", err)
		return false
	}
	gen := in.schedGen
	for _, kv := range due {
		s, ok := decodeSchedule(kv.Key, kv.Value)
		if !ok {
			continue
		}
		if in.schedGen != gen {
			// A handler changed the schedules: this one may be gone.
			v, err := in.r.storage.Get(ctx, kv.Key)
			if err != nil || v == nil {
				continue
			}
		}
		in.fireSchedule(ctx, kv.Key, s)
	}
	if len(due) > 0 {
		w, outs, err := in.call(ctx, func() error { in.cur.sched = true; return nil })
		if err == nil {
			in.accept(ctx, w, outs, nil)
		}
	}
	return len(due) > 0
}

// fireSchedule runs OnAlarm for one schedule. It is deleted with the run's
// writes (unless the handler sets it again); a failure moves it to its
// next try, persisted, or deletes it after the last.
func (in *instance) fireSchedule(ctx context.Context, key string, s ScheduleInfo) {
	drop := func() {
		in.cur.put(key, nil)
		in.cur.put(schedByName+s.Name, nil)
		// The store's alarm is left as it is, due now: runSchedules works
		// it out once after the run, not once per schedule. An alarm too
		// early costs a look; never one too late, as long as nothing
		// moves earlier than it (a handler's Schedule works it out then).
	}
	// A failure before this one rebuilds the handler.
	err := in.ensureStarted(ctx)
	if err == nil {
		ah, ok := in.h.(AlarmHandler)
		if !ok {
			w, outs, _ := in.call(ctx, func() error { drop(); return nil })
			in.accept(ctx, w, outs, nil)
			return
		}
		info := AlarmInfo{Scheduled: s.At, Retry: s.Retry, Name: s.Name, Payload: s.Payload}
		var w *writeSet
		var outs []output
		w, outs, err = in.call(ctx, func() error {
			drop()
			return ah.OnAlarm(ctx, &in.r, info)
		})
		if err == nil {
			in.rt.m.alarmsFired.Inc()
			in.accept(ctx, w, outs, nil)
			return
		}
		in.reset("alarm", err)
	}
	w, outs, err2 := in.call(ctx, func() error {
		drop()
		if s.Retry+1 >= alarmTries {
			in.rt.log.Warn("schedule given up", "room", in.addr.String(), "schedule", s.Name, "tries", s.Retry+1, "err", err)
			return nil
		}
		t := time.Now().Add(in.rt.o.AlarmRetryBase << s.Retry).UnixNano()
		in.cur.put(timeKey(t, s.Name), encodeSchedule(s.At, s.Retry+1, s.Payload))
		in.cur.put(schedByName+s.Name, be8(t))
		return nil
	})
	if err2 != nil {
		// It stays due in storage and is tried again on the next run.
		in.rt.log.Warn("schedule retry not saved", "room", in.addr.String(), "schedule", s.Name, "err", err2)
		return
	}
	in.accept(ctx, w, outs, nil)
}
