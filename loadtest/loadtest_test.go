package loadtest

import (
	"context"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// delayEcho is a test target: it answers every message after a fixed delay,
// so the harness has a known latency to measure, and serves an empty
// /metrics.
func delayEcho(tb testing.TB, delay time.Duration) string {
	tb.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("process_resident_memory_bytes 1e+06\ngo_goroutines 5\n"))
	})
	mux.HandleFunc("/ws/", func(w http.ResponseWriter, r *http.Request) {
		conn, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			for {
				msg, op, err := wsutil.ReadClientData(conn)
				if err != nil {
					return
				}
				time.AfterFunc(delay, func() { wsutil.WriteServerMessage(conn, op, msg) })
			}
		}()
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func TestEchoMeasuresAKnownDelay(t *testing.T) {
	const delay = 20 * time.Millisecond
	target := delayEcho(t, delay)
	r, err := Run(context.Background(), Options{
		Scenario: "echo", Target: target, Sockets: 20, Rate: 500,
		Warmup: 200 * time.Millisecond, Duration: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Lost != 0 || r.Errors != 0 || r.Received < 900 {
		t.Fatalf("sent %d, received %d, lost %d, errors %d", r.Sent, r.Received, r.Lost, r.Errors)
	}
	// Timers and scheduling only ever add to the delay, a little.
	if p50 := r.Latency.P50; p50 < 20 || p50 > 25 {
		t.Errorf("p50 = %.2f ms for a server that waits 20 ms", p50)
	}
}

func TestIdleCountsSockets(t *testing.T) {
	target := delayEcho(t, 0)
	r, err := Run(context.Background(), Options{Scenario: "idle", Target: target, Sockets: 200, Settle: 100 * time.Millisecond, Duration: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sockets != 200 || r.ConnectErrors != 0 {
		t.Fatalf("opened %d sockets with %d errors, want 200 and 0", r.Sockets, r.ConnectErrors)
	}
}

func TestStoppedTargetIsAClearError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := "http://" + ln.Addr().String()
	ln.Close()
	done := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), Options{Scenario: "echo", Target: target, Duration: time.Second})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("got %v, want a connection-refused error", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run against a stopped target did not return")
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Scenario: "nope", Target: "http://x"},
		{Scenario: "echo", Target: "ws://x"},
		{Scenario: "echo", Target: "http://x", Size: 4},
		{Scenario: "idle", Target: "http://x", Sockets: 50000},
		{Scenario: "echo", Target: "http://x", Sockets: 2, Workers: 3},
		{Scenario: "broadcast", Target: "http://x", Workers: 2},
		{Scenario: "echo", Target: "http://x", Rate: 1e9},
		{Scenario: "echo", Target: "http://x", Duration: -time.Second},
		{Scenario: "echo", Target: "http://x", SourceIPs: 300},
		{Scenario: "echo", Target: "http://127.0.0.1:1", SourceIPs: 2},
		{Scenario: "echo", Target: "http://127.0.0.1:1,http://10.0.0.1:1", SourceIPs: 2, Workers: 2},
	} {
		// init alone: Run would also fail on the unreachable targets,
		// and so pass whatever init did.
		if err := o.init(); err == nil {
			t.Errorf("options %+v were accepted", o)
		}
	}
	good := Options{Scenario: "echo", Target: "http://127.0.0.1:1,http://localhost:2", SourceIPs: 2, Workers: 2}
	if err := good.init(); err != nil {
		t.Errorf("options %+v refused: %v", good, err)
	}
}

func TestMain(m *testing.M) {
	ServeWorker() // the test binary doubles as the workers of TestWorkersMergeExactly
	os.Exit(m.Run())
}

// TestWorkersMergeExactly spreads an echo run over two worker processes:
// the merged report counts every message once and measures the same delay.
func TestWorkersMergeExactly(t *testing.T) {
	const delay = 10 * time.Millisecond
	target := delayEcho(t, delay)
	r, err := Run(context.Background(), Options{
		Scenario: "echo", Target: target, Sockets: 30, Rate: 600, Workers: 2,
		Warmup: 200 * time.Millisecond, Duration: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Workers != 2 || r.Sockets != 30 || r.Lost != 0 || r.Errors != 0 {
		t.Fatalf("merged report: %d workers, %d sockets, lost %d, errors %d", r.Workers, r.Sockets, r.Lost, r.Errors)
	}
	if r.Latency.Count != r.Received || r.Received < 500 {
		t.Fatalf("merged latency counts %d deliveries, the workers received %d", r.Latency.Count, r.Received)
	}
	if r.Connect.Count != 30 {
		t.Fatalf("merged connect latency counts %d sockets, want 30", r.Connect.Count)
	}
	if p50 := r.Latency.P50; p50 < 10 || p50 > 15 {
		t.Errorf("p50 = %.2f ms for a server that waits 10 ms", p50)
	}
}

// Histograms travel between processes as snapshots; merged, they must give
// exactly what one histogram of all the values gives.
func TestHistogramMergeIsExact(t *testing.T) {
	all, a, b := newHistogram(), newHistogram(), newHistogram()
	for i := int64(1); i <= 100000; i++ {
		v := i*37%50000 + 1
		all.RecordValue(v)
		if i%3 == 0 {
			a.RecordValue(v)
		} else {
			b.RecordValue(v)
		}
	}
	merged, err := mergeResults(Options{Scenario: "echo"}, []*workerResult{
		{Connect: a.Export(), Latency: a.Export(), Lag: a.Export()},
		{Connect: b.Export(), Latency: b.Export(), Lag: b.Export()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := *merged.Latency, summarize(all); got != want {
		t.Fatalf("merged %+v, want %+v", got, want)
	}
	if !merged.latencyHist.Equals(all) {
		t.Fatal("merged histogram differs from the histogram of all values")
	}
}

func TestChurnReplacesSockets(t *testing.T) {
	target := delayEcho(t, 0)
	r, err := Run(context.Background(), Options{Scenario: "churn", Target: target, Sockets: 20, Rate: 200, Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r.Received < 150 || r.Errors != 0 || r.Latency.Count != r.Received {
		t.Fatalf("churn: %d replaced, %d errors, %d connect times", r.Received, r.Errors, r.Latency.Count)
	}
}

// A target that refuses the token says so, not just "status 401".
func TestRefusedTokenIsAClearError(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/ws/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":{"code":"unauthorized"}}`, http.StatusUnauthorized)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	_, err = Run(context.Background(), Options{Scenario: "echo", Target: "http://" + ln.Addr().String(), JWTSecret: "wrong"})
	if err == nil || !strings.Contains(err.Error(), "refused the token") {
		t.Fatalf("got %v, want an error saying the token was refused", err)
	}
}

// A target that takes the sockets and then stops reading fills their
// buffers until sends block; the run still ends, at its bound, with an
// error that says so.
func TestTargetThatStopsReadingEndsTheRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var held []net.Conn
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if _, err := ws.Upgrade(c); err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			held = append(held, c) // upgraded, and never read again
			mu.Unlock()
		}
	}()
	o := Options{Scenario: "echo", Target: "http://" + ln.Addr().String(), MetricsURL: delayEcho(t, 0) + "/metrics",
		Sockets: 2, Rate: 100, Size: 256 << 10, Warmup: 100 * time.Millisecond, Duration: time.Second, grace: time.Second}
	start := time.Now()
	_, err = Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "did not end within") {
		t.Fatalf("run against a target that stopped reading: %v, want the bound's error", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the run took %s", took)
	}
}
