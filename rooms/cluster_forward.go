// Forwarding: events from this edge to a room's owner elsewhere, and the
// owner's side of what other edges send over the links.

package rooms

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"slices"
	"time"
)

// closedLater reports a socket's close to its room's current owner,
// retrying while the room has none: the close must not be lost, or the
// room would keep the socket for good.
func (cl *cluster) closedLater(ctx context.Context, a Addr, id SocketID, code int, reason string) {
	backoff := 100 * time.Millisecond
	deadline := time.Now().Add(3*cl.ttl + time.Second)
	for time.Now().Before(deadline) {
		if cl.closed(a, id, code, reason) == nil {
			return
		}
		select {
		case <-ctx.Done():
			return // the node left: the registry tells the room's owner
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	cl.rt.log.Warn("socket close not delivered", "room", a.String(), "socket", id.String())
}

// closeLater runs closedLater in the background.
func (cl *cluster) closeLater(a Addr, id SocketID, code int, reason string) {
	cl.background(func(ctx context.Context) { cl.closedLater(ctx, a, id, code, reason) })
}

func (cl *cluster) connect(ctx context.Context, a Addr, s Socket, info ConnectInfo) error {
	remote, err := cl.call(ctx, a, func() event { return event{kind: evConnect, sock: s, info: info} },
		// The claims ride in data, which a tConnect had no use for: a node
		// of the previous version reads the frame and ignores them, and
		// one of this version reads an older node's frame as claimless.
		wireMsg(&linkMsg{typ: tConnect, addr: a, sock: s.ID(), info: info, data: info.Claims}))
	if remote != nil && errors.Is(err, ErrDraining) {
		// The link to the owner closed with the connect unanswered: the
		// owner may have let the socket in before it went. The socket is
		// refused here, so the room must hear it is gone.
		cl.closeLater(a, s.ID(), 1006, "connect lost")
	}
	return err
}

// call runs an event that answers (connect, admin calls) wherever its room
// runs: here, or on the owner through a tConnect or tAsk. A wrong cached
// owner is corrected from its answer. remote is the owner's answer when
// the room ran elsewhere.
func (cl *cluster) call(ctx context.Context, a Addr, mk func() event, wire func() (*linkMsg, error)) (remote *linkMsg, err error) {
	for range 3 {
		ev := mk()
		ev.reply = make(chan error, 1)
		owner, err := cl.here(ctx, a, ev, false, true)
		if err != nil {
			return nil, err
		}
		if owner == "" {
			select {
			case err := <-ev.reply:
				return nil, err
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		m, err := wire()
		if err != nil {
			return nil, err
		}
		ans, err := cl.callRemote(ctx, owner, m)
		if errors.Is(err, errNotOwner) {
			cl.forgetOwner(a, owner)
			continue
		}
		return &ans, err
	}
	return nil, ErrUnavailable
}

func (cl *cluster) callRemote(ctx context.Context, node string, m *linkMsg) (linkMsg, error) {
	l, err := cl.linkTo(ctx, node)
	if err != nil {
		cl.forgetOwner(m.addr, node)
		return linkMsg{}, err
	}
	reply := make(chan linkMsg, 1)
	if err := l.call(m, reply); err != nil {
		return linkMsg{}, errMoved
	}
	cl.fwdOut[m.typ].Inc()
	select {
	case ans := <-reply:
		return ans, decodeErr(&ans)
	case <-ctx.Done():
		return linkMsg{}, ctx.Err()
	}
}

func (cl *cluster) message(a Addr, s Socket, f Frame) error {
	// The room running here is the common case, and on one node the only
	// one: one lock, no placement.
	ev := event{kind: evMessage, id: s.ID(), frame: f}
	ev.frame.Data = append([]byte(nil), f.Data...) // the room keeps it; f.Data is the gateway's
	err := cl.rt.send(a, ev, true)
	if !errors.Is(err, errNotHere) {
		return err
	}
	remote := cl.cachedOwner(a)
	if remote == "" {
		if remote, err = cl.here(context.Background(), a, ev, true, true); err != nil || remote == "" {
			return err
		}
	}
	l, err := cl.linkTo(context.Background(), remote)
	if err != nil {
		cl.forgetOwner(a, remote)
		return errMoved // the owner is unreachable: the client reconnects, and finds the room anew
	}
	cl.fwdOut[tMessage].Inc()
	if err := l.call(&linkMsg{typ: tMessage, addr: a, sock: s.ID(), op: f.Op, data: f.Data}, nil); err != nil {
		return errMoved
	}
	return nil
}

func (cl *cluster) closed(a Addr, id SocketID, code int, reason string) error {
	remote, err := cl.here(context.Background(), a, event{kind: evClose, id: id, code: code, reason: reason}, false, true)
	if err != nil || remote == "" {
		return err
	}
	l, err := cl.linkTo(context.Background(), remote)
	if err != nil {
		cl.forgetOwner(a, remote)
		return err
	}
	cl.fwdOut[tClosed].Inc()
	return l.call(&linkMsg{typ: tClosed, addr: a, sock: id, code: code, text: reason}, nil)
}

// dispatch handles one frame from a peer, on the link's reader goroutine:
// events are queued in order, and nothing here waits for a room.
func (cl *cluster) dispatch(l *link, m *linkMsg) {
	cl.fwdIn[m.typ].Inc()
	switch m.typ {
	case tPing:
	case tMessage:
		seq := m.seq
		ev := event{kind: evMessage, id: m.sock, frame: Frame{Op: m.op, Data: m.data}, done: func(err error) { cl.answer(l, tAck, seq, err, nil) }}
		if cl.nqueued.Load() == 0 {
			// The hot path: no room waits for placement, so none of this
			// link's earlier events can be behind; a running room takes
			// the event straight away.
			if err := cl.rt.sendWith(m.addr, ev, true, nil); !errors.Is(err, errNotHere) {
				if err != nil {
					cl.answer(l, tAck, seq, err, nil)
				}
				return
			}
		}
		cl.inOrder(m.addr, func() { cl.forwarded(l, m, ev, true) }, func() { ev.done(ErrOverloaded) })
	case tClosed:
		seq := m.seq
		ev := event{kind: evClose, id: m.sock, code: m.code, reason: m.text, done: func(err error) { cl.answer(l, tAck, seq, err, nil) }}
		cl.inOrder(m.addr, func() { cl.forwarded(l, m, ev, false) }, nil)
	case tConnect:
		rs := newRemoteSocket(cl, m.sock, l.peer, nil)
		info := m.info
		info.Claims = m.data
		ev := event{kind: evConnect, sock: rs, info: info, reply: make(chan error, 1)}
		cl.inOrder(m.addr, func() { cl.forwardedCall(l, m, ev, nil) }, nil)
	case tAsk:
		cl.inOrder(m.addr, func() { cl.ask(l, m) }, nil)
	case tAck, tReply:
		p, ok := l.answered(m.seq)
		if !ok {
			return
		}
		if p.reply != nil {
			p.reply <- *m
			return
		}
		err := decodeErr(m)
		switch {
		case err == nil:
		case p.typ == tMessage:
			// The owner closes the socket itself when a handler fails; a
			// message it could not take at all closes it here.
			if errors.Is(err, errNotOwner) {
				cl.forgetOwner(p.addr, l.peer)
			}
			if s := cl.rt.lookup(p.sock); s != nil {
				code, reason := closeCodeOf(err)
				s.Close(code, reason)
			}
		case p.typ == tClosed:
			if errors.Is(err, errNotOwner) {
				cl.forgetOwner(p.addr, l.peer)
			}
			cl.closeLater(p.addr, p.sock, p.code, p.text)
		}
	case tDeliver:
		if !cl.fenceOK(m.addr, m.token) {
			// A former owner's frame, after the new owner's: the client
			// may have missed it for good, so it reconnects and resyncs
			// (chat resumes with ?since=).
			for _, id := range m.ids {
				if s := cl.rt.lookup(id); s != nil {
					s.Close(1012, "room moved, reconnect")
				}
			}
			return
		}
		f := Frame{Op: m.op, Data: m.data}
		for _, id := range m.ids {
			if s := cl.rt.lookup(id); s != nil {
				s.Send(f)
			}
		}
	case tClose:
		// Not fenced: a close from any owner, even a former one, is safe;
		// the client reconnects. Dropping it could leave a socket open
		// that no room knows.
		if s := cl.rt.lookup(m.sock); s != nil {
			s.Close(m.code, m.text)
		}
	case tAuto:
		if s := cl.rt.lookup(m.sock); s != nil {
			if m.data == nil {
				s.SetAutoResponse(nil)
			} else {
				s.SetAutoResponse(&AutoResponse{Request: m.data, Response: []byte(m.text)})
			}
		}
	case tProbe:
		held := m.ids[:0]
		for _, id := range m.ids {
			if cl.rt.lookup(id) != nil {
				held = append(held, id)
			}
		}
		l.send(&linkMsg{typ: tReply, seq: m.seq, ids: held})
	}
}

// forwarded queues an event a peer sent this node as the room's owner.
func (cl *cluster) forwarded(l *link, m *linkMsg, ev event, bounded bool) {
	remote, err := cl.here(context.Background(), m.addr, ev, bounded, false)
	if remote != "" {
		err = errNotOwner
	}
	if err != nil {
		cl.answer(l, tAck, m.seq, err, nil)
	}
}

// forwardedCall queues an event that answers, and answers the peer when
// the room has. The wait runs apart so the link keeps reading.
func (cl *cluster) forwardedCall(l *link, m *linkMsg, ev event, result func() []byte) {
	seq := m.seq
	remote, err := cl.here(context.Background(), m.addr, ev, false, false)
	if remote != "" {
		err = errNotOwner
	}
	if err != nil {
		cl.answer(l, tReply, seq, err, nil)
		return
	}
	cl.background(func(context.Context) {
		err := <-ev.reply // every queued event is answered, on a drain too
		var data []byte
		if err == nil && result != nil {
			data = result()
		}
		cl.answer(l, tReply, seq, err, data)
	})
}

func (cl *cluster) answer(l *link, typ linkType, seq uint64, err error, data []byte) {
	m := linkMsg{typ: typ, seq: seq, data: data}
	encodeErr(&m, err)
	cl.fwdOut[typ].Inc()
	l.send(&m)
}

// ask runs an admin call a peer forwarded.
func (cl *cluster) ask(l *link, m *linkMsg) {
	ev := event{reply: make(chan error, 1)}
	var result func() []byte
	switch m.kind {
	case askKick:
		ev.kind, ev.id = evKick, m.sock
	case askBroadcast:
		ev.kind, ev.tag, ev.frame = evBroadcast, m.text, Frame{Op: m.op, Data: m.data}
	case askDelete:
		ev.kind = evDelete
	case askRequest:
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(m.data)))
		if err != nil {
			cl.answer(l, tReply, m.seq, fmt.Errorf("%w: forwarded request: %w", ErrBadRequest, err), nil)
			return
		}
		ev.kind, ev.req, ev.rec = evRequest, req, httptest.NewRecorder()
		result = func() []byte {
			b, _ := httputil.DumpResponse(ev.rec.Result(), true)
			return b
		}
	case askRPC:
		chain, err := parseChain(m.info.Query)
		if err != nil {
			cl.answer(l, tReply, m.seq, fmt.Errorf("%w: forwarded call: %w", ErrBadRequest, err), nil)
			return
		}
		call := &rpcCall{method: m.text, arg: m.data, chain: chain}
		if m.token > 0 {
			call.deadline = time.Now().Add(time.Duration(min(m.token, math.MaxInt64)))
		}
		ev.kind, ev.call = evRPC, call
		result = func() []byte { return call.result }
	default:
		cl.answer(l, tReply, m.seq, ErrBadRequest, nil)
		return
	}
	cl.forwardedCall(l, m, ev, result)
}

// Errors over the link: a small table, so the edge maps the owner's error
// to the same close code and HTTP status a local room would have caused.
var linkErrs = []error{nil, ErrUnknownClass, ErrRefused, ErrFailed, ErrOverloaded, ErrDraining,
	ErrRoomNotFound, ErrSocketNotFound, ErrNoRequestHandler, ErrBadRequest, ErrLimit, errNotOwner, ErrUnavailable,
	ErrRoomFull, ErrNoSuchMethod, ErrBadArgument, ErrCallCycle} // append only: a node of the last release decodes a new code as text

// codeCloseError marks a CloseError: its code travels in token.
const codeCloseError = 100

// codeUserError marks a UserError: it travels as JSON in data, and as
// text for a node of the last release.
const codeUserError = 101

// codeCallCycle is ErrCallCycle's code. A cycle fails every method on
// its way back (each returned the error of the call it made), so it
// wraps ErrFailed too; it is looked for first, as the gateway's table
// does, so the cause and not the symptom crosses the link.
var codeCallCycle = slices.Index(linkErrs, ErrCallCycle)

func encodeErr(m *linkMsg, err error) {
	if err == nil {
		return
	}
	m.text = err.Error()
	var ce *CloseError
	if errors.As(err, &ce) {
		m.code, m.token, m.text = codeCloseError, uint64(ce.Code), ce.Reason
		return
	}
	var ue *UserError
	if errors.As(err, &ue) {
		m.code, m.data = codeUserError, encodeUserError(ue)
		return
	}
	if errors.Is(err, ErrCallCycle) {
		m.code = codeCallCycle
		return
	}
	m.code = len(linkErrs) // unknown: kept as text
	for i, e := range linkErrs[1:] {
		if errors.Is(err, e) {
			m.code = i + 1
			break
		}
	}
}

func decodeErr(m *linkMsg) error {
	switch {
	case m.code == 0:
		return nil
	case m.code == codeCloseError:
		return &CloseError{Code: int(m.token), Reason: m.text}
	case m.code == codeUserError:
		if ue, err := decodeUserError(m.data); err == nil {
			return ue
		}
		return errors.New(m.text)
	case m.code < len(linkErrs):
		return fmt.Errorf("%w (on the room's node: %s)", linkErrs[m.code], m.text)
	default:
		return errors.New(m.text)
	}
}

// closeCodeOf is the close code for a socket whose message the owner
// could not take.
func closeCodeOf(err error) (int, string) {
	switch {
	case errors.Is(err, ErrOverloaded):
		return 1008, "room overloaded"
	case errors.Is(err, ErrDraining), errors.Is(err, errNotOwner), errors.Is(err, ErrUnavailable), errors.Is(err, ErrSocketNotFound):
		return 1012, "room moved, reconnect"
	default:
		return 1011, "room handler failed"
	}
}

// request hands an HTTP request to the room's OnRequest wherever it runs;
// a remote room's request and response travel in HTTP/1.1 wire form.
func (cl *cluster) request(ctx context.Context, a Addr, w http.ResponseWriter, req *http.Request) error {
	// The body is read once: the room may run here or on another node.
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	// Serialized only for a room that runs on another node.
	wire := func() (*linkMsg, error) {
		out := req.Clone(ctx)
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		var dump bytes.Buffer
		if err := out.Write(&dump); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
		return &linkMsg{typ: tAsk, kind: askRequest, addr: a, data: dump.Bytes()}, nil
	}
	ans, err := cl.call(ctx, a, func() event { return event{kind: evRequest, rec: rec, req: req} }, wire)
	if err != nil {
		return err
	}
	if ans != nil { // answered by another node
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(ans.data)), req)
		if err != nil {
			return fmt.Errorf("rooms: response from the room's node: %w", err)
		}
		copyResponse(w, resp)
		return nil
	}
	// Answered here: the room is done with rec, and the write happens on
	// the HTTP goroutine, so a slow client never holds up the room.
	copyResponse(w, rec.Result())
	return nil
}

// wireMsg is call's wire for a message built in advance.
func wireMsg(m *linkMsg) func() (*linkMsg, error) {
	return func() (*linkMsg, error) { return m, nil }
}
