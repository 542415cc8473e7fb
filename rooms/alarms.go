// Alarms: firing due alarms from the store's index, and a room's OnAlarm
// with its retries.

package rooms

import (
	"context"
	"errors"
	"time"

	"github.com/roomgate/roomgate/storage"
)

// runAlarm runs OnAlarm. The alarm is cleared with the run's writes unless
// the handler set a new one; a failure retries with backoff.
func (in *instance) runAlarm(ctx context.Context, ev *event, h Handler) {
	// The alarm may have moved or gone since it was handed out, or since the
	// retry was scheduled: then this run is stale, and the new alarm must
	// stand untouched.
	at, set, err := in.r.alarm.Get(ctx)
	if err != nil {
		in.alarmFailed(ctx, ev, err)
		return
	}
	if !set || at.UnixNano() != ev.alarm.Scheduled.UnixNano() {
		in.alarmEnd()
		return
	}
	ah, ok := h.(AlarmHandler)
	if !ok {
		in.accept(ctx, &writeSet{alarm: &storage.AlarmChange{}}, []output{in.alarmDoneOutput()}, nil)
		return
	}
	w, outs, err := in.call(ctx, func() error {
		in.cur.alarm = &storage.AlarmChange{}
		return ah.OnAlarm(ctx, &in.r, ev.alarm)
	})
	if err != nil {
		in.reset("alarm", err)
		in.alarmFailed(ctx, ev, err)
		return
	}
	in.rt.m.alarmsFired.Inc()
	in.accept(ctx, w, append(outs, in.alarmDoneOutput()), nil)
}

// alarmFailed schedules the next try, or gives up after the last.
func (in *instance) alarmFailed(ctx context.Context, ev *event, err error) {
	next := ev.alarm
	next.Retry++
	if next.Retry >= alarmTries {
		in.rt.log.Warn("alarm given up", "room", in.addr.String(), "tries", next.Retry, "err", err)
		in.accept(ctx, &writeSet{alarm: &storage.AlarmChange{}}, []output{in.alarmDoneOutput()}, nil)
		return
	}
	delay := in.rt.o.AlarmRetryBase << (next.Retry - 1)
	in.alarm.retry = time.AfterFunc(delay, func() {
		if in.rt.send(in.addr, event{kind: evAlarm, alarm: next}, false) != nil {
			// The room left this node; wherever it runs now, the alarm is
			// still due in storage and fires there.
			in.rt.alarmFinished(in.room)
		}
	})
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
