package rooms

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/storage/filestore"
)

// latencies collects the time of each call across a parallel benchmark's
// goroutines and reports calls/s, p50 and p99.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d...)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B, elapsed time.Duration) {
	b.ReportMetric(float64(len(l.all))/elapsed.Seconds(), "calls/s")
	if len(l.all) == 0 {
		return
	}
	slices.Sort(l.all)
	b.ReportMetric(float64(l.all[len(l.all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(l.all[len(l.all)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkRPCInProcess is Runtime.Call of a method that writes a key,
// through one room on the embedded store: each call is one event, and its
// result comes back only once its write is synced. The callers run in
// parallel, as a backend's requests do; one commit carries the writes of
// every call that ran meanwhile. Target: 20,000 calls/s on 2 cores.
func BenchmarkRPCInProcess(b *testing.B) {
	for _, callers := range []int{1, 64} {
		b.Run(map[int]string{1: "sequential", 64: "64-callers"}[callers], func(b *testing.B) {
			store, err := filestore.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			rt, err := New(Options{Store: store, Metrics: prometheus.NewRegistry(), HibernateAfter: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			rt.Register("tally", func() Handler { return &tally{} })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { rt.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			a := tallyRoom("bench")
			if err := rt.Call(ctx, a, "increment", 1, nil); err != nil {
				b.Fatal(err)
			}
			var lat latencies
			b.SetParallelism(max(1, callers/2)) // × GOMAXPROCS (2 here) goroutines
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			if callers == 1 {
				var own []time.Duration
				for b.Loop() {
					t0 := time.Now()
					var n int
					if err := rt.Call(ctx, a, "increment", 1, &n); err != nil {
						b.Fatal(err)
					}
					own = append(own, time.Since(t0))
				}
				lat.add(own)
			} else {
				b.RunParallel(func(pb *testing.PB) {
					var own []time.Duration
					for pb.Next() {
						t0 := time.Now()
						var n int
						if err := rt.Call(ctx, a, "increment", 1, &n); err != nil {
							b.Error(err)
							return
						}
						own = append(own, time.Since(t0))
					}
					lat.add(own)
				})
			}
			elapsed := time.Since(start)
			b.StopTimer()
			lat.report(b, elapsed)
		})
	}
}
