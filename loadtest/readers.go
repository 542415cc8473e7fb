package loadtest

import (
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
}

// startReaders calls read(c, local) in a loop for every socket c; an error
// ends that socket's reader and, unless the readers are being stopped,
// counts in errs.
func startReaders(conns []*wsConn, errs *atomic.Int64, read func(c *wsConn, local *hdrhistogram.Histogram) error) *readers {
	rs := &readers{conns: conns, hist: newHistogram(), errs: errs}
	for _, c := range conns {
		rs.wg.Add(1)
		go func() {
			defer rs.wg.Done()
			local := newHistogram()
			defer func() {
				rs.mu.Lock()
				rs.hist.Merge(local)
				rs.mu.Unlock()
			}()
			for {
				if err := read(c, local); err != nil {
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
