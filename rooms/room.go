package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/roomgate/roomgate/storage"
)

// ErrOutsideEvent is what a send, a storage write, an alarm change or
// SetAttachment returns when it is made outside a handler call: from a
// goroutine of the room's own, or through a Room or Conn kept after its
// event. Such a change would belong to no event's commit, so it is
// refused instead of silently lost.
var ErrOutsideEvent = errors.New("rooms: a room can send and write only from a handler while it runs")

// Room is a Handler's view of its room: its name, storage, alarm and
// sockets. Only the room's goroutine may use it, i.e. only from within a
// Handler method, and only while that method runs.
type Room struct {
	inst    *instance
	storage Storage
	alarm   Alarm
}

// Class returns the room's class name.
func (r *Room) Class() string { return r.inst.addr.Class }

// Name returns the room's name.
func (r *Room) Name() string { return r.inst.addr.Room }

// Storage returns the room's durable key-value storage.
func (r *Room) Storage() *Storage { return &r.storage }

// Alarm returns the room's one alarm.
func (r *Room) Alarm() *Alarm { return &r.alarm }

// Conns returns the room's sockets, or those carrying tag when tag is not
// empty, in no particular order.
func (r *Room) Conns(tag string) []*Conn {
	out := make([]*Conn, 0, len(r.inst.list))
	for _, c := range r.inst.list {
		if tag == "" || slices.Contains(c.tags(), tag) {
			out = append(out, c)
		}
	}
	return out
}

// Conn returns the socket with id, or nil.
func (r *Room) Conn(id SocketID) *Conn { return r.inst.conns[id] }

// Broadcast sends f to every socket but those in except, once the current
// event's writes are committed. It keeps one copy of f.Data for them all
// (see Frame).
func (r *Room) Broadcast(f Frame, except ...SocketID) error {
	if f.Op != Text && f.Op != Binary {
		return ErrOpcode
	}
	f.Data = append([]byte(nil), f.Data...)
	return r.inst.emit(output{to: r.inst.targets("", except), frame: f})
}

// BroadcastText sends s as a text message to every socket but those in
// except, as Conn.SendText does to one.
func (r *Room) BroadcastText(s string, except ...SocketID) error {
	return r.inst.emit(output{to: r.inst.targets("", except), frame: Frame{Op: Text, Data: []byte(s)}})
}

// BroadcastJSON sends v encoded as JSON to every socket but those in except.
func (r *Room) BroadcastJSON(v any, except ...SocketID) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("rooms: encode message: %w", err)
	}
	return r.inst.emit(output{to: r.inst.targets("", except), frame: Frame{Op: Text, Data: b}})
}

// Limit on an auto-response's request and response (Durable Objects' limit).
const MaxAutoResponseSize = 2048

// SetAutoResponse makes the room's sockets answer a text message equal to
// request with response at the edge, without waking the room, like
// Durable Objects' setWebSocketAutoResponse; a client's "ping" can keep a
// connection alive while the room hibernates. An empty request turns it
// off. It applies to the room's sockets at once and to those that connect
// later while this instance lives; call it in OnStart so every instance,
// after a wake or a restart, sets it again.
func (r *Room) SetAutoResponse(request, response string) error {
	if len(request) > MaxAutoResponseSize || len(response) > MaxAutoResponseSize {
		return fmt.Errorf("%w: auto-response over %d bytes", ErrLimit, MaxAutoResponseSize)
	}
	in := r.inst
	in.auto = nil
	if request != "" {
		in.auto = &AutoResponse{Request: []byte(request), Response: []byte(response)}
	}
	for _, c := range in.list {
		c.sock.SetAutoResponse(in.auto)
	}
	return nil
}

// AutoResponse returns the pair SetAutoResponse set on this instance; ok is
// false when none is set.
func (r *Room) AutoResponse() (request, response string, ok bool) {
	if a := r.inst.auto; a != nil {
		return string(a.Request), string(a.Response), true
	}
	return "", "", false
}

// CountBadInput counts a client's bad input in
// roomgate_room_bad_input_total{class, kind}; kind must come from a short
// fixed list of the class's own.
func (r *Room) CountBadInput(kind string) {
	r.inst.rt.m.badInput.WithLabelValues(r.inst.addr.Class, kind).Inc()
}

// Alarm is a room's one alarm. Set replaces it; the runtime fires it at
// least once at its time, on the room's goroutine, by calling OnAlarm.
type Alarm struct{ inst *instance }

// Get returns the alarm's time; ok is false when none is set.
func (a *Alarm) Get(ctx context.Context) (at time.Time, ok bool, err error) {
	return a.inst.userAlarm(ctx)
}

// latestAlarm is the last time an alarm can be set for.
var latestAlarm = time.Unix(0, math.MaxInt64).UTC()

// Set schedules the alarm for at, replacing any other, with the event's writes.
func (a *Alarm) Set(at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("%w: alarm time is zero", ErrLimit)
	}
	if at.After(latestAlarm) {
		// The stores keep times as Unix nanoseconds, which end in 2262: a
		// later time would wrap around and fire at once.
		return fmt.Errorf("%w: alarm time %s is after %s", ErrLimit, at.UTC().Format(time.RFC3339), latestAlarm.Format(time.RFC3339))
	}
	w, err := a.inst.writes()
	if err != nil {
		return err
	}
	w.alarm = &storage.AlarmChange{At: at}
	w.sched = true // the store's alarm may be a schedule's
	return nil
}

// Delete removes the alarm, with the event's writes.
func (a *Alarm) Delete() error {
	w, err := a.inst.writes()
	if err != nil {
		return err
	}
	w.alarm = &storage.AlarmChange{}
	w.sched = true
	return nil
}
