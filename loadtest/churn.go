package loadtest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runChurn keeps the sockets open while it replaces them at o.Rate a
// second: each step dials a new socket and closes the oldest. Latency is
// the new sockets' connect time (handshake and the room's OnConnect).
func runChurn(ctx context.Context, o *Options, r *Report, conns []*wsConn) error {
	r.Rate = o.Rate
	start := o.startAt()
	end := start.Add(o.Duration)
	interval := time.Duration(float64(time.Second) / o.Rate)
	hist, lag := newHistogram(), newHistogram()
	var mu sync.Mutex // guards hist and the ring of sockets
	var done, errs atomic.Int64
	ring := append([]*wsConn(nil), conns...)
	next := 0
	stopProgress := progress(o.Progress, func() string {
		return fmt.Sprintf("churn: %d replaced, %d errors", done.Load(), errs.Load())
	})
	sem := make(chan struct{}, o.ConnectConcurrency)
	var wg sync.WaitGroup
	err := schedule(ctx, start, end, interval, func(k int, at time.Time) bool {
		lag.RecordValue(max(time.Since(at).Microseconds(), 1))
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dial(ctx, o.wsURL(i), o.DialTimeout, o.localIP)
			if err != nil {
				errs.Add(1)
				return
			}
			took := time.Since(at)
			mu.Lock()
			hist.RecordValue(max(took.Microseconds(), 1))
			var old *wsConn
			if len(ring) > 0 {
				old, ring[next] = ring[next], c
				next = (next + 1) % len(ring)
			} else {
				ring = append(ring, c)
			}
			mu.Unlock()
			if old != nil {
				old.close()
			}
			done.Add(1)
		}(o.firstIndex + o.Sockets + k)
		return true
	})
	wg.Wait()
	stopProgress()
	mu.Lock()
	copy(conns, ring) // the caller closes what is open now, also after an error
	mu.Unlock()
	if err != nil {
		return err
	}
	r.Sent, r.Received = done.Load()+errs.Load(), done.Load()
	r.Errors = errs.Load()
	r.Achieved = float64(done.Load()) / o.Duration.Seconds()
	r.setLatency(hist, lag)
	return nil
}
