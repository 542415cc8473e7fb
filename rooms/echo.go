package rooms

import (
	"context"
	"errors"
)

// Echo is the built-in "echo" class: every message goes back to its sender
// unchanged, text as text and binary as binary. It keeps no state, so the
// benchmarks that use it measure the gateway alone.
type Echo struct{}

// OnMessage implements Class.
func (Echo) OnMessage(ctx context.Context, s Socket, f Frame) error {
	err := s.Send(f)
	if errors.Is(err, ErrSlow) || errors.Is(err, ErrClosed) {
		// The socket is already closing with its own code; the message is
		// not the room's failure.
		return nil
	}
	return err
}
