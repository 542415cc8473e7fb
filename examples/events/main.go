// Events ports Durable Objects' "multiple events" pattern: an object has
// one alarm, so it keeps a queue of events in storage, sets the alarm to
// the earliest and, when it fires, runs what is due and sets it again.
// Here each event is a named schedule of its own: the runtime keeps them
// in order, fires each through OnAlarm with its name and payload, and
// retries each one that fails on its own.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"time"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/rooms"
)

// Events is the class: jobs come in over RPC and run through OnAlarm.
type Events struct {
	// Do is a job's work; an error fails the run, which is retried.
	Do func(name string, payload []byte) error
}

// Job is what "schedule" takes.
type Job struct {
	Name    string `json:"name"`
	DelayMS int64  `json:"delay_ms"`
	Payload string `json:"payload"`
}

// Ran is a job's successful run, as "ran" lists it.
type Ran struct {
	Name    string `json:"name"`
	Payload string `json:"payload"`
	Retry   int    `json:"retry"` // the retries it took
}

func (Events) OnMessage(context.Context, *rooms.Room, *rooms.Conn, rooms.Frame) error { return nil }

func (Events) Methods() []rooms.RPCMethod {
	return []rooms.RPCMethod{
		rooms.Method("schedule", func(ctx context.Context, r *rooms.Room, j Job) (bool, error) {
			return true, r.Schedule(j.Name, time.Now().Add(time.Duration(j.DelayMS)*time.Millisecond), []byte(j.Payload))
		}),
		rooms.Method("cancel", func(ctx context.Context, r *rooms.Room, name string) (bool, error) {
			return true, r.CancelSchedule(name)
		}),
		rooms.Method("ran", func(ctx context.Context, r *rooms.Room, _ struct{}) ([]Ran, error) {
			kvs, err := r.Storage().List(ctx, rooms.ListOptions{Prefix: "ran/"})
			out := make([]Ran, len(kvs))
			for i, kv := range kvs {
				json.Unmarshal(kv.Value, &out[i])
			}
			return out, err
		}),
	}
}

// OnAlarm runs one job and records it under a key that sorts by time; a
// failed run records nothing and is retried.
func (e Events) OnAlarm(ctx context.Context, r *rooms.Room, info rooms.AlarmInfo) error {
	if err := e.Do(info.Name, info.Payload); err != nil {
		return err
	}
	b, _ := json.Marshal(Ran{Name: info.Name, Payload: string(info.Payload), Retry: info.Retry})
	return r.Storage().Put(fmt.Sprintf("ran/%019d", time.Now().UnixNano()), b)
}

func main() {
	roomgate.Main(roomgate.Builtins(), roomgate.Class("events", func() rooms.Handler {
		return Events{Do: func(name string, payload []byte) error {
			log.Printf("job %s: %s", name, payload)
			return nil
		}}
	}))
}
