// RPC: methods a class declares, each call one event of its room, called
// from Go code, from other rooms, over REST and across the cluster's links.

package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Errors of RPC calls; the gateway maps each to a status (404, 400, 508).
var (
	ErrNoSuchMethod = errors.New("rooms: no such method")
	ErrBadArgument  = errors.New("rooms: the argument does not decode into the method's parameter")
	ErrCallCycle    = errors.New("rooms: call cycle")
)

// MaxCallDepth bounds a chain of calls, room A calling B calling C…: a
// call past it fails with ErrLimit, so rooms that call new rooms without
// end cannot hold up a chain of goroutines without end.
const MaxCallDepth = 16

// RPCHandler declares the methods of a class that RPC calls reach, like
// the public methods of a Durable Object that its stub calls. The runtime
// calls Methods once per instance, so a method value (h.increment) binds
// the instance's fields; Register calls it once more to learn the names,
// which must be the same every time.
type RPCHandler interface {
	Methods() []RPCMethod
}

// RPCMethod is one method of a class, made by Method.
type RPCMethod struct {
	name string
	run  func(ctx context.Context, r *Room, arg []byte) ([]byte, error)
}

// Name returns the method's name.
func (m RPCMethod) Name() string { return m.name }

// Method declares the method name of a class: a call runs f on the room's
// goroutine as one event, like OnMessage, with arg decoded from the
// call's JSON (an empty argument is JSON null: A's zero value) and the
// result encoded as JSON. What f writes is committed and what it sends
// leaves before the caller gets the result. An error from f fails the
// event (its writes and sends are dropped, the instance is rebuilt, the
// caller gets ErrFailed: 500 over REST), except a *UserError, which is an
// answer: the event commits, and the caller gets the UserError.
//
// ctx carries the call's deadline and the chain of rooms waiting for it:
// hand it to Room.Call so a call back into the chain fails at once with
// ErrCallCycle instead of waiting for the deadline.
func Method[A, R any](name string, f func(ctx context.Context, r *Room, arg A) (R, error)) RPCMethod {
	return RPCMethod{name: name, run: func(ctx context.Context, r *Room, arg []byte) ([]byte, error) {
		a, err := decodeArg[A](arg)
		if err != nil {
			return nil, &argError{err}
		}
		res, err := f(ctx, r, a)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(res)
		if err != nil {
			return nil, fmt.Errorf("rooms: encode the result of %s: %w", name, err)
		}
		return b, nil
	}}
}

// decodeArg decodes a call's argument; empty is JSON null.
func decodeArg[A any](b []byte) (A, error) {
	var a A
	if len(b) == 0 {
		return a, nil
	}
	err := json.Unmarshal(b, &a)
	return a, err
}

// argError is an argument that did not decode: the method never ran, so
// the event has nothing to undo and the instance nothing to rebuild. It
// is unexported so that no method's own error can pass for one.
type argError struct{ err error }

func (e *argError) Error() string { return e.err.Error() }

// UserError is a method's answer that is an error for its caller, not a
// failure of the room, like an exception a Durable Object's method throws
// on purpose: "not found", "rate limited", "lock held". Return it (or wrap
// it) from a method: the event's writes commit, the instance keeps its
// fields, and the caller gets it, from Runtime.Call or Room.Call as a
// *UserError (errors.As), over REST as its status and
// {"error":{"code","message"}}.
type UserError struct {
	Status     int           // 400 to 499; default (and anything else) 400
	Code       string        // the REST error code; default from Status: "bad_request", "not_found", "conflict"…
	Message    string        // default Code
	RetryAfter time.Duration // over REST, a Retry-After header in whole seconds, rounded up; 0: none
}

func (e *UserError) Error() string { return e.Code + ": " + e.Message }

// normalized returns e with its defaults filled in, as a copy: a method
// may return a shared *UserError.
func (e *UserError) normalized() *UserError {
	n := *e
	if n.Status < 400 || n.Status > 499 {
		n.Status = http.StatusBadRequest
	}
	if n.Code == "" {
		n.Code = strings.ReplaceAll(strings.ToLower(http.StatusText(n.Status)), " ", "_")
		if n.Code == "" {
			n.Code = "bad_request"
		}
	}
	if n.Message == "" {
		n.Message = n.Code
	}
	return &n
}

// ValidMethod reports whether name is a legal method name:
// [A-Za-z][A-Za-z0-9_.-]{0,63}, so that it is one path segment of a URL.
func ValidMethod(name string) bool {
	if len(name) == 0 || len(name) > 64 || !(name[0] >= 'a' && name[0] <= 'z' || name[0] >= 'A' && name[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// classMethods checks the methods h declares, at Register.
func classMethods(h Handler) (map[string]bool, error) {
	rh, ok := h.(RPCHandler)
	if !ok {
		return nil, nil
	}
	names := map[string]bool{}
	for _, m := range rh.Methods() {
		switch {
		case m.run == nil:
			return nil, fmt.Errorf("method %q was not made by rooms.Method", m.name)
		case !ValidMethod(m.name):
			return nil, fmt.Errorf("invalid method name %q: want [A-Za-z][A-Za-z0-9_.-]{0,63}", m.name)
		case names[m.name]:
			return nil, fmt.Errorf("method %q declared twice", m.name)
		}
		names[m.name] = true
	}
	return names, nil
}

// Call calls method of room a with arg encoded as JSON, and decodes the
// method's result into result unless it is nil, like a Durable Object's
// stub: stub.increment(1) is rt.Call(ctx, a, "increment", 1, &n). The call
// is one event of the room, wherever it runs in the cluster, and its
// result is released once the event's writes are committed.
//
// It returns ErrUnknownClass, ErrNoSuchMethod, ErrBadArgument, a
// *UserError the method answered, ErrFailed when the method failed or
// its writes could not be committed, ErrCallCycle when a is already
// waiting for this call (see Room.Call), or ctx's error: without a
// deadline in ctx, the call gets Options.CallTimeout. A call that timed
// out may still run, and commit, later.
//
// From a room's handler, call Room.Call instead: it knows the room is
// waiting.
func (rt *Runtime) Call(ctx context.Context, a Addr, method string, arg, result any) error {
	return rt.callGo(ctx, a, method, arg, result, chainOf(ctx))
}

// CallJSON is Call with the argument and the result as JSON, as the REST
// API passes them; an empty arg is JSON null.
func (rt *Runtime) CallJSON(ctx context.Context, a Addr, method string, arg []byte) ([]byte, error) {
	return rt.call(ctx, a, method, arg, chainOf(ctx))
}

// Call calls method of room to from a handler of this room, as
// Runtime.Call does. The room waits for the answer, taking no other event
// meanwhile, so a cycle (A calls B, which calls A) would wait forever:
// a call to a room already waiting in the chain of calls that led here,
// this one included, fails at once with ErrCallCycle. The chain travels
// in ctx: pass the ctx the handler was given. To call back into the
// chain, don't wait: send a message, set a schedule or an alarm instead.
func (r *Room) Call(ctx context.Context, to Addr, method string, arg, result any) error {
	chain := chainOf(ctx)
	if self := r.inst.addr; !slices.Contains(chain, self) {
		chain = append(chain[:len(chain):len(chain)], self)
	}
	return r.inst.rt.callGo(ctx, to, method, arg, result, chain)
}

func (rt *Runtime) callGo(ctx context.Context, a Addr, method string, arg, result any, chain []Addr) error {
	b, err := json.Marshal(arg)
	if err != nil {
		rt.m.rpcCalls.WithLabelValues("bad_argument").Inc()
		return fmt.Errorf("%w: %s: %w", ErrBadArgument, method, err)
	}
	res, err := rt.call(ctx, a, method, b, chain)
	if err != nil || result == nil {
		return err
	}
	if err := json.Unmarshal(res, result); err != nil {
		return fmt.Errorf("rooms: decode the result of %s of %s: %w", method, a, err)
	}
	return nil
}

// chainKey keys the chain of rooms waiting for a call in its ctx.
type chainKey struct{}

// chainOf returns the rooms waiting for the call ctx belongs to,
// outermost first; the caller may not change it.
func chainOf(ctx context.Context) []Addr {
	c, _ := ctx.Value(chainKey{}).([]Addr)
	return c
}

// rpcCall is an RPC event's call and, once answered, its result.
type rpcCall struct {
	method   string
	arg      []byte
	chain    []Addr    // the rooms waiting for it, outermost first
	deadline time.Time // zero: none (a forwarded call from a caller without one)
	result   []byte    // set by the room before it answers
}

// call runs one call wherever its room runs and counts it.
func (rt *Runtime) call(ctx context.Context, a Addr, method string, arg []byte, chain []Addr) ([]byte, error) {
	res, err := rt.callRoom(ctx, a, method, arg, chain)
	rt.m.rpcCalls.WithLabelValues(rpcOutcome(err)).Inc()
	return res, err
}

func (rt *Runtime) callRoom(ctx context.Context, a Addr, method string, arg []byte, chain []Addr) ([]byte, error) {
	// What the edge can tell without the room is refused before it is
	// woken, placed or reached over a link.
	cls := rt.classes[a.Class]
	switch {
	case cls == nil:
		return nil, ErrUnknownClass
	case !ValidRoom(a.Room):
		return nil, fmt.Errorf("%w: room name %q", ErrBadRequest, a.Room)
	case !cls.methods[method]:
		return nil, fmt.Errorf("%w: class %s has no method %q", ErrNoSuchMethod, a.Class, method)
	case len(arg) > 0 && !json.Valid(arg):
		return nil, fmt.Errorf("%w: %s: the argument is not JSON", ErrBadArgument, method)
	case slices.Contains(chain, a):
		return nil, cycleError(chain, a)
	case len(chain) >= MaxCallDepth:
		return nil, fmt.Errorf("%w: a chain of calls deeper than %d rooms", ErrLimit, MaxCallDepth)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rt.o.CallTimeout)
		defer cancel()
	}
	deadline, _ := ctx.Deadline()
	var call *rpcCall
	mk := func() event {
		call = &rpcCall{method: method, arg: arg, chain: chain, deadline: deadline}
		return event{kind: evRPC, call: call}
	}
	wire := func() (*linkMsg, error) {
		// The chain rides in info.Query and the time left in token, which
		// a tAsk had no use for: the owner refuses a cycle and stops
		// waiting when the caller does.
		return &linkMsg{typ: tAsk, kind: askRPC, addr: a, text: method, data: arg,
			info: ConnectInfo{Query: formatChain(chain)}, token: uint64(max(time.Until(deadline), 1))}, nil
	}
	ans, err := rt.cl.call(ctx, a, mk, wire)
	switch {
	case err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return nil, fmt.Errorf("rooms: call %s of %s: %w", method, a, err)
	case err != nil:
		return nil, err
	case ans != nil: // answered by another node
		return ans.data, nil
	}
	return call.result, nil
}

func cycleError(chain []Addr, a Addr) error {
	path := make([]string, 0, len(chain)+1)
	for _, c := range chain {
		path = append(path, c.String())
	}
	path = append(path, a.String())
	return fmt.Errorf("%w: %s waits for this call (%s); don't wait for a call back into the chain: send a message or set a schedule",
		ErrCallCycle, a, strings.Join(path, " → "))
}

// formatChain and parseChain carry a chain over a link as
// "class/room,class/room": neither a class nor a room name has a comma
// or, a room, a slash.
func formatChain(chain []Addr) string {
	var b strings.Builder
	for i, a := range chain {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(a.String())
	}
	return b.String()
}

func parseChain(s string) ([]Addr, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxCallDepth {
		return nil, fmt.Errorf("a chain of %d rooms", len(parts))
	}
	chain := make([]Addr, 0, len(parts))
	for _, p := range parts {
		c, r, ok := strings.Cut(p, "/")
		if !ok || !ValidClass(c) || !ValidRoom(r) {
			return nil, fmt.Errorf("room %q in a call chain", p)
		}
		chain = append(chain, Addr{Class: c, Room: r})
	}
	return chain, nil
}

func rpcOutcome(err error) string {
	var ue *UserError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ue):
		return "user_error"
	case errors.Is(err, ErrNoSuchMethod):
		return "no_such_method"
	case errors.Is(err, ErrBadArgument):
		return "bad_argument"
	case errors.Is(err, ErrCallCycle):
		return "call_cycle"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, ErrFailed):
		return "failed"
	}
	return "other"
}

// errNoMethodHere: the instance's class declares no such method; the
// edge's class, which checked, must be another build of it.
var errNoMethodHere = errors.New("rooms: no such method here")

// rpc runs a call's method on the room's goroutine.
func (in *instance) rpc(ctx context.Context, ev *event, h Handler) {
	call := ev.call
	switch {
	case !call.deadline.IsZero() && !time.Now().Before(call.deadline):
		// Nobody waits for it any more: the room does not do the work.
		ev.reply.answer(fmt.Errorf("rooms: call %s of %s waited past its deadline: %w", call.method, in.addr, context.DeadlineExceeded))
		return
	case slices.Contains(call.chain, in.addr):
		ev.reply.answer(cycleError(call.chain, in.addr))
		return
	}
	mctx := context.WithValue(ctx, chainKey{}, append(call.chain[:len(call.chain):len(call.chain)], in.addr))
	if !call.deadline.IsZero() {
		var cancel context.CancelFunc
		mctx, cancel = context.WithDeadline(mctx, call.deadline)
		defer cancel()
	}
	var ue *UserError
	w, outs, err := in.call(mctx, func() error {
		m, ok := in.method(h, call.method)
		if !ok {
			return errNoMethodHere
		}
		var err error
		call.result, err = m.run(mctx, &in.r, call.arg)
		if errors.As(err, &ue) {
			return nil // an answer, not a failure: the event commits
		}
		return err
	})
	var bad *argError
	switch {
	case errors.Is(err, errNoMethodHere):
		ev.reply.answer(fmt.Errorf("%w: class %s has no method %q on node %s", ErrNoSuchMethod, in.addr.Class, call.method, in.rt.o.NodeID))
		return
	case errors.As(err, &bad):
		ev.reply.answer(fmt.Errorf("%w: %s: %v", ErrBadArgument, call.method, bad.err))
		return
	case err != nil:
		in.reset("handler", err)
		ev.reply.answer(&callFailed{method: call.method, err: err})
		return
	}
	var answer error
	if ue != nil {
		answer = ue.normalized()
	}
	reply := ev.reply
	// The answer is released like a send: after the commit of this
	// event's writes and every earlier event's, or as their failure.
	in.accept(ctx, w, append(outs, output{done: func(err error) {
		if err == nil {
			err = answer
		}
		reply.answer(err)
	}}), nil)
}

// method finds the instance's method name; Methods runs once per instance.
func (in *instance) method(h Handler, name string) (RPCMethod, bool) {
	if in.rpcs == nil {
		in.rpcs = []RPCMethod{}
		if rh, ok := h.(RPCHandler); ok {
			in.rpcs = rh.Methods()
		}
	}
	for _, m := range in.rpcs {
		if m.name == name {
			return m, true
		}
	}
	return RPCMethod{}, false
}

// callFailed is a method's failure as its caller sees it: ErrFailed and
// the method's error, whose first line only is in the message (a panic's
// stack trace is logged, not sent to a REST client).
type callFailed struct {
	method string
	err    error
}

func (e *callFailed) Error() string {
	msg := e.err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	msg = strings.TrimPrefix(msg, ErrFailed.Error()+": ")
	return fmt.Sprintf("%s: method %s: %s", ErrFailed, e.method, msg)
}

func (e *callFailed) Unwrap() []error { return []error{ErrFailed, e.err} }

// userErrorWire is a UserError on a link: the reply's data.
type userErrorWire struct {
	Status       int    `json:"status"`
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

func encodeUserError(ue *UserError) []byte {
	b, _ := json.Marshal(userErrorWire{Status: ue.Status, Code: ue.Code, Message: ue.Message, RetryAfterMS: ue.RetryAfter.Milliseconds()})
	return b
}

func decodeUserError(b []byte) (*UserError, error) {
	var w userErrorWire
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, err
	}
	ue := &UserError{Status: w.Status, Code: w.Code, Message: w.Message, RetryAfter: time.Duration(w.RetryAfterMS) * time.Millisecond}
	return ue.normalized(), nil
}
