package rooms

import (
	"context"
	"fmt"
	"runtime/debug"
	"sort"
)

// Class is a room class. This first runtime calls it inline on the gateway
// worker that read the message, which suits stateless classes such as echo;
// stateful classes with storage, alarms and hibernation build on the same
// Router seam.
type Class interface {
	// OnMessage handles one client message. f.Data is valid until it returns.
	OnMessage(ctx context.Context, s Socket, f Frame) error
}

// Runtime routes sockets to the classes registered with it. It implements
// Router and is safe for concurrent use once Register calls are done.
type Runtime struct {
	classes map[string]Class
}

// New returns a Runtime with no classes; call Register before serving.
func New() *Runtime {
	return &Runtime{classes: make(map[string]Class)}
}

// Register adds class c under name. It panics on an invalid or duplicate
// name, which is a programmer error at start-up.
func (r *Runtime) Register(name string, c Class) {
	if !ValidClass(name) {
		panic(fmt.Sprintf("rooms: invalid class name %q", name))
	}
	if _, dup := r.classes[name]; dup {
		panic(fmt.Sprintf("rooms: class %q registered twice", name))
	}
	r.classes[name] = c
}

// Classes returns the registered class names in order.
func (r *Runtime) Classes() []string {
	names := make([]string, 0, len(r.classes))
	for n := range r.classes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// HasClass implements Router.
func (r *Runtime) HasClass(class string) bool {
	_, ok := r.classes[class]
	return ok
}

// Connect implements Router.
func (r *Runtime) Connect(ctx context.Context, a Addr, s Socket, info ConnectInfo) error {
	if !r.HasClass(a.Class) {
		return ErrUnknownClass
	}
	return nil
}

// Message implements Router. A class error or panic fails the message with
// ErrFailed, which closes that socket with 1011 and leaves the node running.
func (r *Runtime) Message(ctx context.Context, a Addr, s Socket, f Frame) (err error) {
	c, ok := r.classes[a.Class]
	if !ok {
		return ErrUnknownClass
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s: panic: %v\n%s", ErrFailed, a, p, debug.Stack())
		}
	}()
	if err := c.OnMessage(ctx, s, f); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrFailed, a, err)
	}
	return nil
}

// Closed implements Router.
func (r *Runtime) Closed(a Addr, s Socket, code int, reason string) {}
