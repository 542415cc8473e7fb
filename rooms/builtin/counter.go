package builtin

import (
	"context"
	"strconv"

	"github.com/roomgate/roomgate/rooms"
)

// Counter is the "counter" class: the text message "inc" adds one to a
// persisted count, and every socket gets {"type":"count","value":N}; a new
// socket gets the current value when it connects.
type Counter struct {
	value int64
}

type countMessage struct {
	Type  string `json:"type"`
	Value int64  `json:"value"`
}

// OnStart loads the count.
func (k *Counter) OnStart(ctx context.Context, r *rooms.Room) error {
	v, err := r.Storage().Get(ctx, "value")
	if err != nil || v == nil {
		return err
	}
	k.value, err = strconv.ParseInt(string(v), 10, 64)
	return err
}

// OnConnect sends the current value.
func (k *Counter) OnConnect(ctx context.Context, r *rooms.Room, c *rooms.Conn) error {
	return c.SendJSON(countMessage{Type: "count", Value: k.value})
}

// OnMessage counts "inc".
func (k *Counter) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	if f.Op != rooms.Text || string(f.Data) != "inc" {
		return refuse(r, c, "bad_command", `send the text "inc"`)
	}
	k.value++
	if err := r.Storage().Put("value", strconv.AppendInt(nil, k.value, 10)); err != nil {
		return err
	}
	return r.BroadcastJSON(countMessage{Type: "count", Value: k.value})
}
