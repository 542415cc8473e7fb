package rooms_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/rooms"
	"github.com/roomgate/roomgate/storage/filestore"
)

// Counter is Durable Objects' Counter: a method that other code calls,
// like stub.increment(), persisted in the room's storage.
type Counter struct{ n int }

func (c *Counter) OnStart(ctx context.Context, r *rooms.Room) error {
	v, err := r.Storage().Get(ctx, "n")
	c.n, _ = strconv.Atoi(string(v))
	return err
}

func (c *Counter) OnMessage(ctx context.Context, r *rooms.Room, conn *rooms.Conn, f rooms.Frame) error {
	return nil
}

// Methods makes Counter a rooms.RPCHandler. It runs once per instance,
// so c.increment is bound to this instance's fields.
func (c *Counter) Methods() []rooms.RPCMethod {
	return []rooms.RPCMethod{rooms.Method("increment", c.increment)}
}

func (c *Counter) increment(ctx context.Context, r *rooms.Room, by int) (int, error) {
	if by < 1 {
		return 0, &rooms.UserError{Status: 400, Code: "bad_step", Message: "by must be positive"}
	}
	c.n += by
	return c.n, r.Storage().Put("n", []byte(strconv.Itoa(c.n)))
}

// ExampleRuntime_Call calls a room's method from Go code in the same
// process; each result comes back once the write it made is on disk.
func ExampleRuntime_Call() {
	dir, _ := os.MkdirTemp("", "counter")
	defer os.RemoveAll(dir)
	store, _ := filestore.Open(dir)
	defer store.Close()
	rt, _ := rooms.New(rooms.Options{Store: store, Metrics: prometheus.NewRegistry()})
	rt.Register("counter", func() rooms.Handler { return new(Counter) })
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()

	x := rooms.Addr{Class: "counter", Room: "x"}
	for range 2 {
		var n int
		if err := rt.Call(ctx, x, "increment", 1, &n); err != nil {
			fmt.Println(err)
		}
		fmt.Println(n)
	}
	var ue *rooms.UserError
	if err := rt.Call(ctx, x, "increment", 0, nil); errors.As(err, &ue) {
		fmt.Println(ue.Status, ue.Code)
	}
	stop()
	<-done
	// Output:
	// 1
	// 2
	// 400 bad_step
}
