package builtin

import (
	"context"

	"github.com/roomgate/roomgate/rooms"
)

// Echo is the "echo" class: every message goes back to its sender
// unchanged, text as text and binary as binary. It stores nothing, so the
// benchmarks that use it measure the gateway and the runtime alone.
type Echo struct{}

// OnMessage implements rooms.Handler.
func (Echo) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	return c.Send(f)
}
