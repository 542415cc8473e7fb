// Event handling: running one event's handler against the room's
// uncommitted writes, and failing it cleanly.

package rooms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/roomgate/roomgate/storage"
)

// writes is the current event's write set. Outside an event a write would
// belong to no commit: it is refused, as a send is, not silently lost.
func (in *instance) writes() (*writeSet, error) {
	if !in.inEvent {
		return nil, ErrOutsideEvent
	}
	return in.cur, nil
}

// layers are the uncommitted writes, newest first.
func (in *instance) layers() []*writeSet {
	l := make([]*writeSet, 0, 3)
	if in.inEvent {
		l = append(l, in.cur)
	}
	l = append(l, &in.pending)
	if in.inflight != nil {
		l = append(l, in.inflight)
	}
	return l
}

func (in *instance) emit(o output) error {
	if !in.inEvent {
		return ErrOutsideEvent
	}
	in.curOut = append(in.curOut, o)
	return nil
}

func (in *instance) connecting(c *Conn) bool { return in.inEvent && in.curConn == c }

func (in *instance) targets(tag string, except []SocketID) []*Conn {
	out := make([]*Conn, 0, len(in.list))
	for _, c := range in.list {
		if (tag == "" || contains(c.tags(), tag)) && !contains(except, c.id) {
			out = append(out, c)
		}
	}
	return out
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (in *instance) addConn(c *Conn) {
	c.idx = int32(len(in.list))
	in.list = append(in.list, c)
	in.conns[c.id] = c
	in.nconns.Store(int32(len(in.list)))
	if _, remote := c.sock.(*remoteSocket); remote {
		in.nremote++
	}
}

func (in *instance) removeConn(c *Conn) {
	if in.conns[c.id] != c {
		return
	}
	delete(in.conns, c.id)
	last := in.list[len(in.list)-1]
	in.list[c.idx], last.idx = last, c.idx
	in.list[len(in.list)-1] = nil
	in.list = in.list[:len(in.list)-1]
	c.gone = true
	c.rec &^= recUnsaved // it stays in in.unsaved, skipped there
	in.nconns.Store(int32(len(in.list)))
	if _, remote := c.sock.(*remoteSocket); remote {
		in.nremote--
	}
}

// call runs a handler method in an event scope and turns a panic into an error.
func (in *instance) call(ctx context.Context, f func() error) (w *writeSet, outs []output, err error) {
	in.scratch.reset()
	in.cur, in.curOut, in.inEvent = &in.scratch, in.curOut[:0], true
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: panic: %v\n%s", ErrFailed, p, debug.Stack())
		}
		for i, c := range in.dirty {
			switch {
			case err != nil:
				c.extra = in.dirtyWas[i] // the failed event's changes go with its writes
			case !c.gone:
				in.markUnsaved(c)
				if in.penExtra == nil {
					in.penExtra = make(map[*Conn]*connExtra)
				}
				if _, seen := in.penExtra[c]; !seen {
					in.penExtra[c] = in.dirtyWas[i]
				}
			}
			c.dirty = false
		}
		clear(in.dirty)
		clear(in.dirtyWas)
		in.dirty, in.dirtyWas = in.dirty[:0], in.dirtyWas[:0]
		w, outs = in.cur, in.curOut
		in.cur, in.inEvent, in.curConn = nil, false, nil
	}()
	if err := f(); err != nil {
		return nil, nil, err
	}
	return nil, nil, in.fixAlarm(ctx)
}

// ensureStarted builds the handler if the instance has none and runs OnStart.
func (in *instance) ensureStarted(ctx context.Context) error {
	if in.h == nil {
		in.h, in.started, in.rpcs = in.cls.new(), false, nil
	}
	if in.started {
		return nil
	}
	if s, ok := in.h.(StartHandler); ok {
		w, outs, err := in.call(ctx, func() error { return s.OnStart(ctx, &in.r) })
		if err != nil {
			in.reset("start", err)
			return fmt.Errorf("%w: OnStart: %w", ErrFailed, err)
		}
		in.accept(ctx, w, outs, nil)
	}
	in.started = true
	if !in.born.IsZero() {
		in.rt.m.wakeSeconds.Observe(time.Since(in.born).Seconds())
		in.born = time.Time{}
	}
	return nil
}

// reset discards the handler after a failure; the next event rebuilds it
// from storage. Sockets stay open.
func (in *instance) reset(reason string, err error) {
	in.h, in.started = nil, false
	in.rt.m.failures.WithLabelValues(reason).Inc()
	in.rt.log.LogAttrs(context.Background(), slog.LevelWarn, "room failed",
		slog.String("room", in.addr.String()), slog.String("during", reason), slog.Any("err", err))
}

// failClose queues closing c after what it was sent before: the event that
// failed sent nothing, and the client must not wait in silence.
func (in *instance) failClose(ctx context.Context, c *Conn, err error) {
	code, reason := 1011, "room handler failed"
	var ce *CloseError
	if errors.As(err, &ce) {
		code, reason = ce.Code, ce.Reason
	}
	in.penOut = append(in.penOut, output{to: c.self[:], close: true, code: code, reason: reason})
	in.penFrom = append(in.penFrom, c) // should the commit ahead fail, it is closed all the same
	in.pump(ctx)
}

func (in *instance) handle(ctx context.Context, ev *event) {
	in.rt.m.events.Inc()
	defer in.settle(ev) // whatever path it takes, a forwarded event is answered
	if !in.loaded && !in.load(ctx, ev) {
		return
	}
	switch ev.kind {
	case evWake:
		ev.reply.answer(nil)
		return
	case evSave:
		in.saveMembers(ctx)
		return
	case evEdgeLost:
		for _, c := range append([]*Conn(nil), in.list...) {
			if c.edge == ev.reason {
				// Should the node be alive after all (a late heartbeat),
				// its socket must not stay open outside the room.
				c.sock.Close(1012, "room lost your node, reconnect")
				in.closeConn(ctx, &event{kind: evClose}, c, 1006, "edge node lost")
			}
		}
		return
	case evEdgeGap:
		if g, sent := in.edgeGen[ev.reason]; sent && g != in.rt.cl.generation(ev.reason) {
			in.closeEdge(in.rt.cl, ev.reason, nil)
		}
		return
	case evProbed:
		for _, id := range ev.gone {
			if c := in.conns[id]; c != nil && c.edge == ev.reason {
				in.closeConn(ctx, &event{kind: evClose}, c, 1006, "connection lost")
			}
		}
		return
	case evDelete:
		in.deleteRoom(ctx, ev)
		return
	case evInspect:
		ev.inspect(in)
		ev.reply.answer(nil)
		return
	case evClose:
		if c := in.conns[ev.id]; c != nil {
			in.closeConn(ctx, ev, c, ev.code, ev.reason)
		}
		return
	}
	if ev.kind == evAlarm {
		in.alarm.busy = true
	}
	h, ok := in.handlerFor(ctx, ev)
	if !ok {
		return
	}
	switch ev.kind {
	case evConnect:
		if len(in.list) >= in.rt.o.MaxSockets {
			ev.reply.answer(ErrRoomFull)
			return
		}
		edge := in.rt.o.NodeID
		if rs, ok := ev.sock.(*remoteSocket); ok {
			edge, rs.in = rs.edge, in
		}
		c := &Conn{id: ev.sock.ID(), sock: ev.sock, inst: in, user: ev.info.User, query: ev.info.Query,
			edge: edge, connectedAt: time.Now().UnixNano()}
		if len(ev.info.Claims) > 0 {
			c.extra = &connExtra{claims: ev.info.Claims}
		}
		c.self[0] = c
		in.addConn(c)
		if in.auto != nil {
			ev.sock.SetAutoResponse(in.auto)
		}
		w, outs := &writeSet{}, []output(nil)
		if ch, ok := h.(ConnectHandler); ok {
			var err error
			w, outs, err = in.call(ctx, func() error {
				in.curConn = c
				return ch.OnConnect(ctx, &in.r, c)
			})
			if err != nil {
				in.removeConn(c)
				if errors.Is(err, ErrFailed) { // a panic, not a refusal
					in.reset("handler", err)
				}
				var ce *CloseError
				if !errors.As(err, &ce) && !errors.Is(err, ErrFailed) {
					err = fmt.Errorf("%w: %w", ErrRefused, err)
				}
				ev.reply.answer(err)
				return
			}
		}
		in.markUnsaved(c)
		if !in.rt.o.LazyMembers {
			// The socket's membership record is written with this event,
			// and the socket is accepted only once it is committed: a new
			// owner must know every socket that was let in.
			in.accept(ctx, w, append(outs, output{done: ev.reply.answer, join: c}), c)
			return
		}
		ev.reply.answer(nil)
		in.accept(ctx, w, outs, c)
	case evMessage:
		c := in.conns[ev.id]
		if c == nil {
			// Closed while the message waited, or a socket the room no
			// longer knows: one of a node it took for dead. It must not
			// talk into the void; reconnecting makes it a member again.
			if ev.done != nil {
				ev.done(ErrSocketNotFound)
				ev.done = nil
			} else if s := in.rt.lookup(ev.id); s != nil {
				s.Close(1012, "room lost this socket, reconnect")
			}
			return
		}
		in.message(ctx, ev, c, h)
	case evAlarm:
		in.runAlarm(ctx, ev, h)
	case evRequest:
		rh, ok := h.(RequestHandler)
		if !ok {
			ev.reply.answer(ErrNoRequestHandler)
			return
		}
		w, outs, err := in.call(ctx, func() error { return rh.OnRequest(ctx, &in.r, ev.rec, ev.req) })
		if err != nil {
			in.reset("handler", err)
			ev.reply.answer(fmt.Errorf("%w: %w", ErrFailed, err))
			return
		}
		// The response is released like a send; the HTTP goroutine writes it.
		in.accept(ctx, w, append(outs, output{done: ev.reply.answer}), nil)
	case evRPC:
		in.rpc(ctx, ev, h)
	case evBroadcast:
		outs := []output{{to: in.targets(ev.tag, nil), frame: ev.frame, done: ev.reply.answer}}
		in.accept(ctx, &writeSet{}, outs, nil)
	case evKick:
		c := in.conns[ev.id]
		if c == nil {
			ev.reply.answer(ErrSocketNotFound)
			return
		}
		outs := []output{{to: []*Conn{c}, close: true, code: 4403, reason: "kicked", done: ev.reply.answer}}
		in.accept(ctx, &writeSet{}, outs, nil)
	}
}

// failEvent fails ev without running it, so that nobody waits in silence:
// a message's sender is closed (1011), an alarm is retried, whoever asks
// gets err. A close needs nothing: a record left behind is closed as lost
// on the next wake.
func (in *instance) failEvent(ctx context.Context, ev *event, err error) {
	switch ev.kind {
	case evMessage:
		switch c := in.conns[ev.id]; {
		case c != nil:
			in.failClose(ctx, c, err)
		case ev.done != nil:
			ev.done(err) // the edge closes the socket
			ev.done = nil
		default:
			if s := in.rt.lookup(ev.id); s != nil {
				s.Close(1011, "room unavailable") // the room could not load its members
			}
		}
	case evAlarm:
		in.alarm.busy = true
		in.alarmFailed(ctx, ev, err)
	case evClose:
		if ev.done != nil {
			ev.done(err) // the edge tries again
			ev.done = nil
		}
	default:
		ev.reply.answer(err)
	}
}

// closeConn says goodbye to c: OnClose, then its membership record goes
// with the event's writes, whatever the handler did.
func (in *instance) closeConn(ctx context.Context, ev *event, c *Conn, code int, reason string) {
	// Build the handler first: a rebuilt one's OnStart must still see the
	// socket that OnClose then says goodbye to.
	h, ok := in.handlerFor(ctx, ev)
	in.removeConn(c)
	w, outs := &writeSet{}, []output(nil)
	if ch, isCH := h.(CloseHandler); ok && isCH {
		var err error
		// 1006 is never on the wire (RFC 6455 §7.4.1): the edge and the
		// runtime report it exactly when no close frame ended the socket.
		info := CloseInfo{Code: code, Reason: reason, Clean: code != 1006}
		w, outs, err = in.call(ctx, func() error { return ch.OnClose(ctx, &in.r, c, info) })
		if err != nil {
			in.reset("handler", err)
			w, outs = &writeSet{}, nil
		}
	}
	in.markUnsaved(c)
	in.accept(ctx, w, in.withDone(ev, outs), nil)
}

// handlerFor returns the started handler, failing ev when OnStart fails.
func (in *instance) handlerFor(ctx context.Context, ev *event) (Handler, bool) {
	if err := in.ensureStarted(ctx); err != nil {
		in.failEvent(ctx, ev, err)
		return nil, false
	}
	return in.h, true
}

// message runs OnMessage for c's message ev. A *CloseError it returns is
// a deliberate close, not a failure: the event's writes and sends commit
// as usual, then c alone is closed with the error's code, and the instance
// keeps its fields (bad input must not wipe a room's cache). Any other
// error fails the event (see failClose).
func (in *instance) message(ctx context.Context, ev *event, c *Conn, h Handler) {
	var ce *CloseError
	w, outs, err := in.call(ctx, func() error {
		err := h.OnMessage(ctx, &in.r, c, ev.frame)
		if errors.As(err, &ce) {
			return nil // so that call keeps the event's tags and attachments
		}
		return err
	})
	if err != nil {
		in.reset("handler", err)
		in.failClose(ctx, c, err)
		return
	}
	if ce != nil {
		outs = append(outs, output{to: c.self[:], close: true, code: ce.Code, reason: ce.Reason})
	}
	in.accept(ctx, w, in.withDone(ev, outs), c)
}

// withDone adds ev's done to its outputs: it runs when they are released.
func (in *instance) withDone(ev *event, outs []output) []output {
	if ev.done != nil {
		outs = append(outs, output{done: ev.done})
		ev.done = nil
	}
	return outs
}

// settle answers a forwarded event that made no outputs: it was dropped
// (its socket had closed) or failed, and a failure closed the socket.
func (in *instance) settle(ev *event) {
	if ev.done != nil {
		ev.done(nil)
		ev.done = nil
	}
}

// deleteRoom closes every socket with 4404 after what it was sent before,
// and wipes the room's storage and alarm.
func (in *instance) deleteRoom(ctx context.Context, ev *event) {
	in.h, in.started = nil, false
	if in.alarm.busy {
		in.alarmEnd() // a retry would run OnAlarm for a room that no longer exists
	}
	outs := []output{{to: append([]*Conn(nil), in.list...), close: true, code: 4404, reason: "room deleted"}}
	outs = append(outs, output{done: ev.reply.answer})
	in.accept(ctx, &writeSet{deleteAll: true, alarm: &storage.AlarmChange{}}, outs, nil)
}
