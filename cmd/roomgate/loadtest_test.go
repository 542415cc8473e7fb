package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"testing"
	"time"

	"github.com/roomgate/roomgate/loadtest"
)

// The harness's scenarios that need Roomgate's own classes, against a
// real node.

func TestLoadtestChat(t *testing.T) {
	addr := startNode(t)
	r, err := loadtest.Run(context.Background(), loadtest.Options{
		Scenario: "chat", Target: "http://" + addr, Sockets: 40, Rooms: 4, Rate: 100,
		Warmup: 300 * time.Millisecond, Duration: time.Second, Seed: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent < 90 || r.Received != r.Sent*10 || r.Lost != 0 || r.Errors != 0 {
		t.Fatalf("chat: sent %d, received %d (want 10 each), lost %d, errors %d", r.Sent, r.Received, r.Lost, r.Errors)
	}
}

func TestLoadtestBroadcast(t *testing.T) {
	addr := startNode(t)
	r, err := loadtest.Run(context.Background(), loadtest.Options{
		Scenario: "broadcast", Target: "http://" + addr, Sockets: 50, Rate: 20,
		Warmup: 300 * time.Millisecond, Duration: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent < 18 || r.Received != r.Sent*50 || r.Lost != 0 || r.Errors != 0 {
		t.Fatalf("broadcast: sent %d, delivered %d (want 50 each), lost %d, errors %d", r.Sent, r.Received, r.Lost, r.Errors)
	}
	// A class that never sends a count is a clear error, not a hang.
	if _, err := loadtest.Run(context.Background(), loadtest.Options{
		Scenario: "broadcast", Class: "echo", Target: "http://" + addr, Sockets: 2, Rate: 5,
		Duration: 200 * time.Millisecond, DialTimeout: time.Second,
	}); err == nil {
		t.Fatal("broadcast to the echo class (no counts) succeeded")
	}
}

func TestLoadtestWakeStorm(t *testing.T) {
	addr := startNode(t, "-hibernate-after", "1s")
	r, err := loadtest.Run(context.Background(), loadtest.Options{
		Scenario: "wake", Target: "http://" + addr, Sockets: 60, Settle: 15 * time.Second, Duration: time.Second,
		Workers: 2, // both see the rooms asleep, then storm at one instant
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Hibernated < 60 {
		t.Fatalf("only %v of 60 rooms had hibernated before the storm", r.Hibernated)
	}
	if r.Received != 60 || r.Errors != 0 {
		t.Fatalf("wake storm: %d of 60 answered, %d errors", r.Received, r.Errors)
	}
	if woke := r.After.Wakes - r.Before.Wakes; woke < 60 {
		t.Fatalf("the target woke %v rooms, want 60", woke)
	}
	if r.Workers != 2 {
		t.Fatalf("report from %d workers, want 2", r.Workers)
	}
	t.Logf("60 hibernated rooms woken at once by 2 workers: all answered within %.1f ms", r.Latency.Max)
}

// TestLoadtestWorkersFromTheCommandLine runs the binary's harness with two
// worker processes (copies of itself) and reads its JSON report.
func TestLoadtestWorkersFromTheCommandLine(t *testing.T) {
	addr := startNode(t)
	out, err := exec.Command(binary, "loadtest", "-scenario", "echo", "-target", "http://"+addr,
		"-sockets", "40", "-rate", "400", "-warmup", "200ms", "-duration", "1s", "-workers", "2", "-source-ips", "2", "-json").Output()
	if err != nil {
		t.Fatalf("loadtest: %v\n%s", err, out)
	}
	var r loadtest.Report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("report %q: %v", out, err)
	}
	if r.Workers != 2 || r.Sockets != 40 || r.Lost != 0 || r.Received < 350 {
		t.Fatalf("report: %d workers, %d sockets, %d received, %d lost", r.Workers, r.Sockets, r.Received, r.Lost)
	}
}
