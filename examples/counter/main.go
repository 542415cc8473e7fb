// Command counter ports Durable Objects' Counter: a number kept in the
// room's storage (ctx.storage.get/put), changed and read through methods
// other code calls, as it calls a stub's increment().
package main

import (
	"context"
	"strconv"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/rooms"
)

// Counter keeps its value under the key "value".
type Counter struct{}

func (Counter) OnMessage(context.Context, *rooms.Room, *rooms.Conn, rooms.Frame) error { return nil }

func (c Counter) Methods() []rooms.RPCMethod {
	return []rooms.RPCMethod{rooms.Method("increment", c.increment), rooms.Method("get", c.get)}
}

func (Counter) get(ctx context.Context, r *rooms.Room, _ any) (int, error) {
	v, err := r.Storage().Get(ctx, "value")
	n, _ := strconv.Atoi(string(v)) // no value yet: 0
	return n, err
}

func (c Counter) increment(ctx context.Context, r *rooms.Room, _ any) (int, error) {
	n, err := c.get(ctx, r, nil)
	if err != nil {
		return 0, err
	}
	return n + 1, r.Storage().Put("value", []byte(strconv.Itoa(n+1)))
}

func newCounter() rooms.Handler { return Counter{} }

func main() { roomgate.Main(roomgate.Builtins(), roomgate.Class("rpc-counter", newCounter)) }
