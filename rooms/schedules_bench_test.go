package rooms

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roomgate/roomgate/storage/filestore"
)

// BenchmarkSchedulesFired fires b.N due schedules of one room that also
// holds 100,000 pending ones, through the store's one alarm: schedules
// fired per second. They are set before the runtime runs, so the timer
// measures the firing alone.
func BenchmarkSchedulesFired(b *testing.B) {
	store, err := filestore.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	var fired atomic.Int64
	all := make(chan struct{}) // closed on the b.N-th fire: the timing ends with it
	runs := make(chan AlarmInfo, 1024)
	go func() {
		for range runs {
			if fired.Add(1) == int64(b.N) {
				close(all)
			}
		}
	}()
	defer close(runs)
	rt, err := New(Options{Store: store, Metrics: prometheus.NewRegistry(), HibernateAfter: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	rt.Register("sched", func() Handler { return &scheduler{runs: runs} })
	set := func(n int, in time.Duration, prefix string) {
		args := make([]schedArg, 0, 1000)
		for i := range n {
			args = append(args, schedArg{Name: fmt.Sprintf("%s%07d", prefix, i), In: in, Payload: "p"})
			if len(args) == cap(args) || i == n-1 {
				var got int
				if err := rt.Call(context.Background(), schedRoom, "schedule", args, &got); err != nil {
					b.Fatal(err)
				}
				args = args[:0]
			}
		}
	}
	set(100000, time.Hour, "pending")
	set(b.N, -time.Second, "due")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.ResetTimer()
	start := time.Now()
	go func() { rt.Run(ctx); close(done) }()
	<-all
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "schedules/s")
	b.StopTimer()
	cancel()
	<-done
}
