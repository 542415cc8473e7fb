// The output gate: an event's writes are committed in the background and
// its sends leave only once that commit succeeded.

package rooms

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/roomgate/roomgate/storage"
)

// accept adds a successful event's writes and outputs to the pipeline.
func (in *instance) accept(ctx context.Context, w *writeSet, outs []output, from *Conn) {
	if !in.rt.o.LazyMembers && in.hasUnsaved() {
		// Another node may have to take the room over at any moment, and
		// must know every socket: records go with the event that changed
		// them.
		in.collectUnsaved(w)
	}
	if !w.empty() || in.inflight != nil {
		in.penEvents++ // it waits for a commit
	}
	if !w.empty() {
		w.applyTo(&in.pending)
	}
	in.penOut = append(in.penOut, outs...)
	clear(outs) // outs may be the scratch list the next event reuses
	if from != nil {
		in.penFrom = append(in.penFrom, from)
	}
	in.pump(ctx)
}

// pump starts a commit of the pending writes when none is in flight, or
// releases outputs that wait for nothing.
func (in *instance) pump(ctx context.Context) {
	if in.inflight != nil {
		return // committed() pumps again
	}
	if in.pending.empty() {
		outs := in.penOut
		clear(in.penFrom)
		in.penOut, in.penFrom, in.penEvents, in.penExtra = nil, in.penFrom[:0], 0, nil
		in.release(outs)
		clear(outs)
		if in.penOut == nil {
			in.penOut = outs[:0] // keep the backing array: this is the hot path
		}
		return
	}
	w := in.pending
	in.inflight, in.inOut, in.inFrom, in.inEvents, in.inExtra = &w, in.penOut, in.penFrom, in.penEvents, in.penExtra
	in.pending, in.penOut, in.penFrom, in.penEvents, in.penExtra = writeSet{}, nil, nil, 0, nil
	b := w.batch()
	if !in.rt.o.Unfenced {
		b.Token = in.lease.Token
	}
	in.inBatch = b
	in.rt.commit(ctx, in.room, b, in.onCommit)
}

// commitDone takes the store's answer to the commit in flight, on the
// store's goroutine; the room's loop picks it up. It never blocks: a room
// has at most one commit in flight.
func (in *instance) commitDone(err error) { in.done <- err }

// committed finishes the commit in flight. On failure nothing it or any
// later event sent leaves: they all saw its writes. Their sockets are
// closed with 1011, so no client waits in silence.
func (in *instance) committed(ctx context.Context, err error) {
	w, outs, from, extras := in.inflight, in.inOut, in.inFrom, in.inExtra
	in.inflight, in.inOut, in.inFrom, in.inEvents, in.inExtra = nil, nil, nil, 0, nil
	// The store counts the room's bytes as it applies a batch: the quota
	// starts again from the truth. A failed commit may still have landed
	// (a timeout), so the size is read again before the next check.
	in.size, in.sized = in.inBatch.Bytes, err == nil
	in.inBatch = nil
	if err == nil {
		if w.alarm != nil {
			in.rt.alarmChanged()
		}
		in.release(outs)
		in.pump(ctx)
		return
	}
	outs = append(outs, in.penOut...)
	from = append(from, in.penFrom...)
	lost := in.pending
	// Tags and attachments go back to what they were before the failed
	// events, the older snapshot last, so it wins.
	for _, was := range []map[*Conn]*connExtra{in.penExtra, extras} {
		for c, x := range was {
			c.extra = x
		}
	}
	in.pending, in.penOut, in.penFrom, in.penEvents, in.penExtra = writeSet{}, nil, nil, 0, nil
	in.reset("commit", err)
	in.schedFree = false // what the lost writes found may no longer hold
	code, reason := 1011, "storage failed"
	if errors.Is(err, storage.ErrFenced) {
		// Another node took the room over: what this one did since is void.
		in.rt.m.fencedCommits.WithLabelValues("store").Inc()
		in.rt.cl.lose(in)
		code, reason = 1012, "room moved, reconnect"
	}
	// A socket whose connect waited for this commit is refused (the edge
	// closes it), so it is no member: no record, and no OnClose.
	for _, o := range outs {
		if o.join != nil {
			in.removeConn(o.join)
		}
	}
	// Otherwise membership is not the events' to lose: a socket that
	// joined is still open, one that left is gone. Its record is saved
	// again, as it is now.
	for _, ws := range []*writeSet{w, &lost} {
		for id, rec := range ws.members {
			switch c := in.conns[id]; {
			case c != nil:
				in.markUnsaved(c)
			case rec == nil: // a deletion
				in.left = append(in.left, id)
			}
		}
	}
	failed := fmt.Errorf("%w: %w", ErrFailed, err)
	if errors.Is(err, storage.ErrFenced) {
		failed = errMoved // the client reconnects and finds the new owner
	}
	for _, o := range outs {
		if o.done != nil {
			o.done(failed)
		}
	}
	for _, c := range from {
		if !c.gone && !c.origin {
			c.origin = true
			c.sock.Close(code, reason)
		}
	}
	for _, c := range from {
		c.origin = false
	}
}

// release sends what committed events produced, in order. In a cluster,
// sends to sockets on other nodes go one link frame per node and output,
// whatever the number of sockets there; all carry the lease's token, so an
// edge drops frames of a former owner once it has heard from a newer one.
// This node's own sockets are held to the same fence.
func (in *instance) release(outs []output) {
	cl := in.rt.cl
	checked, fenced := false, false // once per release: the token is the instance's
	for _, o := range outs {
		if len(o.to) > 0 && cl.linked.Load() {
			if !checked {
				checked, fenced = true, !cl.fenceOK(in.addr, in.lease.Token)
			}
			if fenced {
				if o.done != nil {
					o.done(errMoved)
				}
				continue
			}
		}
		switch {
		case o.close:
			for _, c := range o.to {
				if !c.gone {
					c.sock.Close(o.code, o.reason)
				}
			}
		case len(o.to) > 0:
			local := o.to
			if in.nremote > 0 {
				local = in.deliverRemote(cl, o)
			}
			if len(local) >= fanoutMin {
				fanout(local, o.frame)
			} else {
				send(local, o.frame)
			}
		}
		if o.done != nil {
			o.done(nil)
		}
	}
}

// fanoutMin is the broadcast size from which writing is split across CPUs.
// A socket write on loopback costs the kernel some microseconds, so 5,000
// sockets take tens of milliseconds on one core.
const fanoutMin = 256

// fanout writes f to every socket of to, split across GOMAXPROCS goroutines.
// It returns when all are written: outputs are released one after another,
// which keeps every socket's frames in order.
func fanout(to []*Conn, f Frame) {
	parts := min(runtime.GOMAXPROCS(0), len(to)/(fanoutMin/2))
	size := (len(to) + parts - 1) / parts
	var wg sync.WaitGroup
	for i := size; i < len(to); i += size {
		wg.Add(1)
		go func(part []*Conn) {
			defer wg.Done()
			send(part, f)
		}(to[i:min(i+size, len(to))])
	}
	send(to[:size], f)
	wg.Wait()
}

func send(to []*Conn, f Frame) {
	for _, c := range to {
		if !c.gone {
			c.sock.Send(f) // a slow or closing socket ends itself
		}
	}
}
