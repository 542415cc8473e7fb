// Command binary is the smallest program of your own: Durable Objects'
// exported class plus its binding in wrangler.jsonc become one Go class
// handed to roomgate.Main, beside the built-in classes. Build it instead
// of ./cmd/roomgate; every command and flag of roomgate stays the same.
package main

import (
	"bytes"
	"context"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/rooms"
)

// Shout sends every message back to its sender in capitals.
type Shout struct{}

func (Shout) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	return c.Send(rooms.Frame{Op: f.Op, Data: bytes.ToUpper(f.Data)})
}

func newShout() rooms.Handler { return Shout{} }

func main() { roomgate.Main(roomgate.Builtins(), roomgate.Class("shout", newShout)) }
