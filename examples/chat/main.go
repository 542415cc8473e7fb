// Command chat ports the Durable Objects quick start's chat with stored
// messages (a messages table, INSERT, SELECT … ORDER BY created_at DESC
// LIMIT ?, DELETE WHERE created_at < ?) in key-value form: each message
// under an ordered key, a history method, and old messages deleted by a
// named schedule that re-arms itself, where Durable Objects uses its one
// alarm.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/rooms"
)

// Chat stores every message under "msg/<time>" and broadcasts it;
// messages older than Retention are deleted.
type Chat struct {
	Retention time.Duration
	last      int64 // the newest message's time: keys stay unique and ordered if the clock stalls
}

type Message struct {
	User string `json:"user"`
	Text string `json:"text"`
	At   int64  `json:"at"` // Unix nanoseconds, as in its key
}

// msgKey zero-pads the time so that the keys sort as the times do.
func msgKey(t int64) string { return fmt.Sprintf("msg/%019d", t) }

func (h *Chat) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	h.last = max(time.Now().UnixNano(), h.last+1)
	m := Message{User: c.User().Name, Text: string(f.Data), At: h.last}
	b, _ := json.Marshal(m)
	if err := r.Storage().Put(msgKey(m.At), b); err != nil {
		return err
	}
	// A pending prune is for an older message, which expires first; with
	// none, this message is the oldest.
	s, err := r.Schedules(ctx)
	if err == nil && len(s) == 0 {
		err = r.Schedule("prune", time.Unix(0, m.At).Add(h.Retention), nil)
	}
	if err != nil {
		return err
	}
	return r.BroadcastJSON(m)
}

// OnAlarm deletes the expired messages, up to a page per run, and arms the
// prune again for the oldest one left (at once if it expired too).
func (h *Chat) OnAlarm(ctx context.Context, r *rooms.Room, _ rooms.AlarmInfo) error {
	cutoff := msgKey(time.Now().Add(-h.Retention).UnixNano())
	old, err := r.Storage().List(ctx, rooms.ListOptions{Prefix: "msg/", End: cutoff, Limit: 1000})
	if err != nil {
		return err
	}
	for _, kv := range old {
		if err := r.Storage().Delete(kv.Key); err != nil {
			return err
		}
	}
	next, err := r.Storage().List(ctx, rooms.ListOptions{Prefix: "msg/", Limit: 1})
	if err != nil || len(next) == 0 {
		return err
	}
	t, _ := strconv.ParseInt(strings.TrimPrefix(next[0].Key, "msg/"), 10, 64)
	return r.Schedule("prune", time.Unix(0, t).Add(h.Retention), nil)
}

func (h *Chat) Methods() []rooms.RPCMethod {
	return []rooms.RPCMethod{rooms.Method("history", h.history)}
}

// history returns the newest limit messages (1 to 100), oldest first.
func (h *Chat) history(ctx context.Context, r *rooms.Room, limit int) ([]Message, error) {
	kvs, err := r.Storage().List(ctx, rooms.ListOptions{Prefix: "msg/", Reverse: true, Limit: max(1, min(limit, 100))})
	out := make([]Message, len(kvs))
	for i, kv := range kvs {
		if err := json.Unmarshal(kv.Value, &out[i]); err != nil {
			return nil, err
		}
	}
	slices.Reverse(out)
	return out, err
}

func newChat(retention time.Duration) func() rooms.Handler {
	return func() rooms.Handler { return &Chat{Retention: retention} }
}

func main() {
	roomgate.Main(roomgate.Builtins(), roomgate.Class("stored-chat", newChat(24*time.Hour)))
}
