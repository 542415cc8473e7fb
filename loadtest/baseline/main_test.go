package main

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/roomgate/roomgate/loadtest"
)

// The baseline speaks the protocols the harness measures Roomgate with, so
// the two are compared on the same scenarios.
func TestBaselineServesTheHarnessScenarios(t *testing.T) {
	srv := httptest.NewServer(handler())
	defer srv.Close()
	for _, o := range []loadtest.Options{
		{Scenario: "echo", Sockets: 20, Rate: 200},
		{Scenario: "broadcast", Sockets: 300, Rate: 10},
		{Scenario: "chat", Sockets: 60, Rooms: 3, Rate: 100},
	} {
		t.Run(o.Scenario, func(t *testing.T) {
			o.Target, o.Warmup, o.Duration = srv.URL, 200*time.Millisecond, time.Second
			r, err := loadtest.Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if r.Sent == 0 || r.Received < r.Sent || r.Lost != 0 || r.Errors != 0 {
				t.Fatalf("sent %d, received %d, lost %d, errors %d", r.Sent, r.Received, r.Lost, r.Errors)
			}
		})
	}
}
