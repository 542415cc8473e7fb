package loadtest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// readers runs one goroutine per socket that reads and measures until
// stopped. Each goroutine records into its own histogram, merged into hist
// when it ends, so readers never contend on a lock per message.
type readers struct {
	conns    []*wsConn
	hist     *hdrhistogram.Histogram
	errs     *atomic.Int64
	mu       sync.Mutex
	wg       sync.WaitGroup
	stopping atomic.Bool

	liveMu sync.Mutex
	live   *hdrhistogram.Histogram // every 16th value, for the progress line's p99 so far
}

// recorder is one reader's histogram; it feeds a sample to the live one.
type recorder struct {
	local *hdrhistogram.Histogram
	rs    *readers
	n     int
}

func (r *recorder) record(us int64) {
	r.local.RecordValue(us)
	if r.n++; r.n%16 == 0 {
		r.rs.liveMu.Lock()
		r.rs.live.RecordValue(us)
		r.rs.liveMu.Unlock()
	}
}

// status is a progress line: what scenario says, deliveries a second since
// the last line, the p99 so far (sampled) and errors.
func (rs *readers) status(what func() string, received *atomic.Int64) func() string {
	last, lastAt := received.Load(), time.Now()
	return func() string {
		n, now := received.Load(), time.Now()
		rate := float64(n-last) / now.Sub(lastAt).Seconds()
		last, lastAt = n, now
		rs.liveMu.Lock()
		p99 := float64(rs.live.ValueAtQuantile(99)) / 1000
		rs.liveMu.Unlock()
		return fmt.Sprintf("%s · %.0f msg/s · p99 so far %.2f ms · %d errors", what(), rate, p99, rs.errs.Load())
	}
}

// startReaders calls read(c, local) in a loop for every socket c; an error
// ends that socket's reader and, unless the readers are being stopped,
// counts in errs.
func startReaders(conns []*wsConn, errs *atomic.Int64, read func(c *wsConn, rec *recorder) error) *readers {
	rs := &readers{conns: conns, hist: newHistogram(), errs: errs, live: newHistogram()}
	for _, c := range conns {
		rs.wg.Add(1)
		go func() {
			defer rs.wg.Done()
			rec := &recorder{local: newHistogram(), rs: rs}
			defer func() {
				rs.mu.Lock()
				rs.hist.Merge(rec.local)
				rs.mu.Unlock()
			}()
			for {
				if err := read(c, rec); err != nil {
					if !rs.stopping.Load() {
						errs.Add(1)
					}
					return
				}
			}
		}()
	}
	return rs
}

// stop ends every reader with a read deadline, which is not the target's
// error, and returns the merged histogram.
func (rs *readers) stop() *hdrhistogram.Histogram {
	rs.stopping.Store(true)
	for _, c := range rs.conns {
		c.c.SetReadDeadline(time.Now())
	}
	rs.wg.Wait()
	for _, c := range rs.conns {
		c.c.SetReadDeadline(time.Time{})
	}
	return rs.hist
}

// awaitDeliveries waits up to d for received to reach want.
func awaitDeliveries(received *atomic.Int64, want int64, d time.Duration) {
	deadline := time.Now().Add(d)
	for received.Load() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// awaitQuiet waits until received has not moved for quiet, at most d.
func awaitQuiet(received *atomic.Int64, quiet, d time.Duration) {
	deadline := time.Now().Add(d)
	last, since := received.Load(), time.Now()
	for time.Now().Before(deadline) && time.Since(since) < quiet {
		time.Sleep(20 * time.Millisecond)
		if n := received.Load(); n != last {
			last, since = n, time.Now()
		}
	}
}
