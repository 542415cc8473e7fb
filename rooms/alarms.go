// Alarms: firing due alarms from the store's index, and a room's OnAlarm
// with its retries.

package rooms

import (
	"context"
	"errors"
	"time"

	"github.com/roomgate/roomgate/storage"
)

// runAlarm runs what is due when the store's alarm for the room fires: the
// room's own alarm through OnAlarm, cleared with the run's writes unless the
// handler set a new one, a failure retried with backoff; then each due
// schedule, as an event of its own (runSchedules).
func (in *instance) runAlarm(ctx context.Context, ev *event, h Handler) {
	// The alarm may have moved or gone since it was handed out, or since the
	// retry was scheduled: then this run is stale, and the new alarm must
	// stand untouched. The store's alarm may also be a schedule's, with the
	// room's own not due.
	at, set, err := in.r.alarm.Get(ctx)
	if err != nil {
		in.alarmFailed(ctx, ev, err)
		return
	}
	due := set && (at.UnixNano() == ev.alarm.Scheduled.UnixNano() ||
		ev.alarm.Retry == 0 && !at.After(time.Now()))
	retrying := false
	if due {
		info := ev.alarm
		info.Scheduled = at
		ah, _ := h.(AlarmHandler)
		{
			w, outs, err := in.call(ctx, func() error {
				in.cur.alarm = &storage.AlarmChange{}
				in.cur.sched = true
				if ah == nil {
					return nil
				}
				return ah.OnAlarm(ctx, &in.r, info)
			})
			if err != nil {
				in.reset("alarm", err)
				retrying = in.alarmFailed(ctx, &event{alarm: info}, err)
			} else {
				in.rt.m.alarmsFired.Inc()
				in.accept(ctx, w, outs, nil)
			}
		}
	}
	if !retrying && in.alarm.retry != nil {
		in.alarm.retry.Stop()
		in.alarm.retry = nil
	}
	if !in.runSchedules(ctx) && !due && !in.schedFree {
		// Nothing was due: the store's alarm is worked out again, should
		// it be stale.
		w, outs, err := in.call(ctx, func() error { in.cur.sched = true; return nil })
		if err == nil {
			in.accept(ctx, w, outs, nil)
		}
	}
	if !retrying {
		in.accept(ctx, &writeSet{}, []output{in.alarmDoneOutput()}, nil)
	}
}

// alarmFailed schedules the next try, or gives up after the last; it
// reports whether it scheduled one.
func (in *instance) alarmFailed(ctx context.Context, ev *event, err error) bool {
	next := ev.alarm
	next.Retry++
	if next.Retry >= alarmTries {
		in.rt.log.Warn("alarm given up", "room", in.addr.String(), "tries", next.Retry, "err", err)
		w, outs, err := in.call(ctx, func() error {
			in.cur.alarm = &storage.AlarmChange{}
			in.cur.sched = true
			return nil
		})
		if err != nil {
			w, outs = &writeSet{alarm: &storage.AlarmChange{}}, nil
		}
		in.accept(ctx, w, append(outs, in.alarmDoneOutput()), nil)
		return false
	}
	delay := in.rt.o.AlarmRetryBase << (next.Retry - 1)
	in.alarm.retry = time.AfterFunc(delay, func() {
		if in.rt.send(in.addr, event{kind: evAlarm, alarm: next}, false) != nil {
			// The room left this node; wherever it runs now, the alarm is
			// still due in storage and fires there.
			in.rt.alarmFinished(in.room)
		}
	})
	return true
}

// alarmDoneOutput ends the alarm's run once the commit that clears (or
// moves) it is durable: until then the store still lists it as due, and the
// scheduler must not hand it out again. After a failed commit the scheduler
// finds it due again on its next regular pass, not at once.
func (in *instance) alarmDoneOutput() output {
	return output{done: func(err error) {
		in.alarm.busy = false
		in.rt.alarmFinishedQuietly(in.room, err != nil)
	}}
}

// alarmEnd ends an alarm run that needs no commit.
func (in *instance) alarmEnd() {
	if in.alarm.retry != nil {
		in.alarm.retry.Stop()
		in.alarm.retry = nil
	}
	in.alarm.busy = false
	in.rt.alarmFinished(in.room)
}

// Alarm retries: 6 tries in all, the first retry 2 s after the failure,
// doubling after each (DESIGN §1).
const (
	alarmTries   = 6
	alarmBackoff = 2 * time.Second
)

// fireAlarms hands due alarms to their rooms until ctx ends. It sleeps
// until the earliest alarm, or a second, or until a commit changes an alarm.
func (rt *Runtime) fireAlarms(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-rt.alarmWake:
		}
		wait := time.Second
		rt.alarmMu.Lock()
		busy := len(rt.alarmBusy)
		rt.alarmMu.Unlock()
		// Ask for enough that busy alarms (running, retrying, or of a class
		// no longer registered) cannot hide the others.
		due, err := rt.store.DueAlarms(ctx, time.Now(), 256+busy)
		if err != nil && ctx.Err() == nil {
			rt.log.Warn("read due alarms", "err", err)
		}
		for _, d := range due {
			rt.alarmMu.Lock()
			busy := rt.alarmBusy[d.Room]
			rt.alarmBusy[d.Room] = true
			rt.alarmMu.Unlock()
			if busy {
				continue
			}
			a := Addr{Class: d.Room.Class, Room: d.Room.Name}
			ev := event{kind: evAlarm, alarm: AlarmInfo{Scheduled: d.At}}
			// Every node polls the one index; an alarm runs where its room
			// does, or here if the room has no owner: the owner died, and
			// its alarms are taken over. One its owner runs is not this
			// node's to count as busy.
			remote, err := rt.cl.here(ctx, a, ev, false, false)
			if remote != "" {
				rt.alarmFinishedQuietly(d.Room, true)
				continue
			}
			if err != nil {
				if errors.Is(err, ErrUnknownClass) {
					continue // stays busy: no code can ever run it, and it must not hide the others
				}
				rt.log.Warn("alarm not delivered", "room", a.String(), "err", err)
				rt.alarmFinishedQuietly(d.Room, true) // retried on the next pass
			}
		}
		// An alarm due now is either handed out above or busy; a busy one's
		// end wakes this loop (alarmFinished). So only a future alarm
		// shortens the sleep, and a busy alarm never makes the loop spin.
		if next, ok, err := rt.store.NextAlarm(ctx); err == nil && ok && next.After(time.Now()) {
			wait = min(wait, time.Until(next))
		}
		t.Reset(wait)
	}
}

func (rt *Runtime) alarmFinished(r storage.Room) { rt.alarmFinishedQuietly(r, false) }

// alarmFinishedQuietly frees r's alarm for the scheduler, waking it unless
// quiet: after a failed commit the next regular pass is soon enough.
func (rt *Runtime) alarmFinishedQuietly(r storage.Room, quiet bool) {
	rt.alarmMu.Lock()
	delete(rt.alarmBusy, r)
	rt.alarmMu.Unlock()
	if !quiet {
		rt.alarmChanged()
	}
}

func (rt *Runtime) alarmChanged() {
	select {
	case rt.alarmWake <- struct{}{}:
	default:
	}
}
