// Session ports Durable Objects' session pattern: one object per session
// that deletes its own storage once the session sat idle, through an alarm
// pushed back on every request. Here the alarm is a named schedule, "idle",
// set again by every connect and message; when it fires the room deletes
// its storage and closes its sockets with 4404, as deleting a room does.
package main

import (
	"context"
	"strconv"
	"time"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/rooms"
)

// Session is the class: a socket's messages count as activity, each one
// stored and answered with the session's message count.
type Session struct {
	Idle time.Duration // how long without a message the session lives
}

func (s Session) OnConnect(ctx context.Context, r *rooms.Room, c *rooms.Conn) error {
	return r.Schedule("idle", time.Now().Add(s.Idle), nil)
}

func (s Session) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	v, err := r.Storage().Get(ctx, "messages")
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(string(v))
	n++
	if err := r.Storage().Put("messages", []byte(strconv.Itoa(n))); err != nil {
		return err
	}
	if err := r.Schedule("idle", time.Now().Add(s.Idle), nil); err != nil {
		return err
	}
	return c.SendText(strconv.Itoa(n))
}

// OnAlarm ends the session: only "idle" is ever scheduled.
func (s Session) OnAlarm(ctx context.Context, r *rooms.Room, info rooms.AlarmInfo) error {
	if err := r.Storage().DeleteAll(); err != nil {
		return err
	}
	for _, c := range r.Conns("") {
		if err := c.Close(4404, "session expired"); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	roomgate.Main(roomgate.Builtins(), roomgate.Class("session", func() rooms.Handler {
		return Session{Idle: 30 * time.Minute}
	}))
}
