package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/client"
	"github.com/roomgate/roomgate/examples/internal/examplenode"
	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/rooms"
)

func TestEventsHandlers(t *testing.T) {
	if err := rooms.CheckClass(func() rooms.Handler { return Events{} }); err != nil {
		t.Fatal(err)
	}
}

// TestJobsRunInTimeOrder: three jobs scheduled out of order run in the
// order of their times, each with its payload and not before its time; a
// cancelled job never runs; a job that fails its first run is retried
// (AlarmInfo.Retry 1) and then succeeds.
func TestJobsRunInTimeOrder(t *testing.T) {
	var (
		mu     sync.Mutex
		tries  = map[string]int{}
		ranAt  = map[string]time.Time{}
		failed = errors.New("first try fails")
	)
	c := start(t, func(name string, payload []byte) error {
		mu.Lock()
		defer mu.Unlock()
		tries[name]++
		if name == "flaky" && tries[name] == 1 {
			return failed
		}
		ranAt[name] = time.Now()
		return nil
	})
	room := c.Room("events", "jobs")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	began := time.Now()
	jobs := []Job{
		{Name: "third", DelayMS: 600, Payload: "c"},
		{Name: "first", DelayMS: 200, Payload: "a"},
		{Name: "cancelled", DelayMS: 300, Payload: "never"},
		{Name: "second", DelayMS: 400, Payload: "b"},
		{Name: "flaky", DelayMS: 100, Payload: "f"},
	}
	for _, j := range jobs {
		if err := room.Call(ctx, "schedule", j, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := room.Call(ctx, "cancel", "cancelled", nil); err != nil {
		t.Fatal(err)
	}

	// flaky's retry comes 2 s after its first try (the runtime's backoff).
	var ran []Ran
	testkit.Eventually(t, 15*time.Second, func() error {
		if err := room.Call(ctx, "ran", nil, &ran); err != nil {
			return err
		}
		if len(ran) < 4 {
			return fmt.Errorf("ran %+v, want 4 jobs", ran)
		}
		return nil
	})
	want := []Ran{{"first", "a", 0}, {"second", "b", 0}, {"third", "c", 0}, {"flaky", "f", 1}}
	if !reflect.DeepEqual(ran, want) {
		t.Errorf("ran %+v, want %+v", ran, want)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, j := range jobs {
		if at, ok := ranAt[j.Name]; ok && at.Sub(began) < time.Duration(j.DelayMS)*time.Millisecond {
			t.Errorf("%s ran %v after scheduling, before its delay of %d ms", j.Name, at.Sub(began), j.DelayMS)
		}
	}
	if tries["cancelled"] != 0 {
		t.Errorf("the cancelled job ran %d times", tries["cancelled"])
	}
	if tries["flaky"] != 2 {
		t.Errorf("flaky tried %d times, want 2", tries["flaky"])
	}
}

// start runs a node with the class whose jobs run do, and a client of it.
func start(t *testing.T, do func(string, []byte) error) *client.Client {
	t.Helper()
	url, _ := examplenode.Start(t, "", roomgate.Class("events", func() rooms.Handler { return Events{Do: do} }))
	c, err := client.New(url, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
