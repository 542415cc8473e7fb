package loadtest

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// readers read and measure every socket until stopped (see startReaders).
// Each reader goroutine records into its own histogram, merged into hist
// when it ends, so readers never contend on a lock per message.
type readers struct {
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

// startReaders reads every socket until stopped and calls onData with
// each data frame's payload (valid until onData returns), recording into
// rec. A socket that fails or is closed by the target counts in errs,
// unless the readers are being stopped.
//
// A goroutine per socket would cost the harness a wake-up and a read per
// delivery; at 100,000 deliveries a second that is as much CPU as the
// server uses, on the same machine. Instead GOMAXPROCS goroutines each
// wait in epoll for their share of the sockets and read what is ready, so
// a busy socket's several frames cost one read.
func startReaders(conns []*wsConn, errs *atomic.Int64, onData func(p []byte, rec *recorder)) *readers {
	rs := &readers{hist: newHistogram(), errs: errs, live: newHistogram()}
	n := min(runtime.GOMAXPROCS(0), max(len(conns), 1))
	for w := range n {
		var part []*wsConn
		for i := w; i < len(conns); i += n {
			part = append(part, conns[i])
		}
		rs.wg.Add(1)
		go rs.loop(part, onData)
	}
	return rs
}

// loop reads part's sockets until the readers stop.
func (rs *readers) loop(part []*wsConn, onData func(p []byte, rec *recorder)) {
	defer rs.wg.Done()
	rec := &recorder{local: newHistogram(), rs: rs}
	defer func() {
		rs.mu.Lock()
		rs.hist.Merge(rec.local)
		rs.mu.Unlock()
	}()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		rs.errs.Add(int64(len(part)))
		return
	}
	defer unix.Close(ep)
	dead := make([]bool, len(part))
	fail := func(i int) {
		dead[i] = true
		unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, part[i].fd, nil)
		if !rs.stopping.Load() {
			rs.errs.Add(1)
		}
	}
	// parse hands every complete frame in socket i's buffer to onData.
	parse := func(i int) {
		for {
			_, p, err := part[i].next()
			if err != nil {
				fail(i)
				return
			}
			if p == nil {
				return
			}
			onData(p, rec)
		}
	}
	for i, c := range part {
		if c.fd < 0 || unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(i)}) != nil {
			fail(i)
			continue
		}
		parse(i) // what came with the handshake, or was read before
	}
	events := make([]unix.EpollEvent, 256)
	for !rs.stopping.Load() {
		n, err := unix.EpollWait(ep, events, 50) // a timeout, to see stop
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			i := int(ev.Fd)
			if dead[i] {
				continue
			}
			c := part[i]
			c.compact()
			m, err := unix.Read(c.fd, c.in[len(c.in):cap(c.in)])
			switch {
			case m > 0:
				c.in = c.in[:len(c.in)+m]
				parse(i)
			case err == unix.EAGAIN || err == unix.EINTR:
			default: // end of stream or an error
				fail(i)
			}
		}
	}
}

// stop ends the readers and returns the merged histogram.
func (rs *readers) stop() *hdrhistogram.Histogram {
	rs.stopping.Store(true)
	rs.wg.Wait()
	return rs.hist
}

// awaitDeliveries waits up to d for received to reach want, or until ctx
// ends.
func awaitDeliveries(ctx context.Context, received *atomic.Int64, want int64, d time.Duration) {
	deadline := time.Now().Add(d)
	for received.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

// awaitQuiet waits until received has not moved for quiet, at most d, or
// until ctx ends.
func awaitQuiet(ctx context.Context, received *atomic.Int64, quiet, d time.Duration) {
	deadline := time.Now().Add(d)
	last, since := received.Load(), time.Now()
	for time.Now().Before(deadline) && time.Since(since) < quiet && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if n := received.Load(); n != last {
			last, since = n, time.Now()
		}
	}
}
