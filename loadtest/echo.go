package loadtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// runEcho sends o.Rate messages per second round-robin over conns, each
// carrying its intended send time, and records the time from then until
// the echo arrives. Messages due during Warmup are sent but not recorded.
func runEcho(ctx context.Context, o *Options, r *Report, conns []*wsConn) error {
	r.Rate = o.Rate
	var sent, received, errs atomic.Int64
	start, measureFrom, end := o.window()

	rs := startReaders(conns, &errs, func(p []byte, rec *recorder) {
		if len(p) < 8 {
			errs.Add(1)
			return
		}
		intended := time.Unix(0, int64(binary.LittleEndian.Uint64(p)))
		if !intended.Before(measureFrom) {
			received.Add(1)
			rec.record(max(time.Since(intended).Microseconds(), 1))
		}
	})

	stopProgress := progress(o.Progress, rs.status(func() string {
		return fmt.Sprintf("echo: %d sockets, %d sent, %d received", len(conns), sent.Load(), received.Load())
	}, &received))
	lag := newHistogram() // written only by the one sender below
	interval := time.Duration(float64(time.Second) / o.Rate)
	payload := make([]byte, o.Size)
	// One sender walks the schedule, round-robin over the sockets.
	err := schedule(ctx, start, end, interval, func(j int, intended time.Time) bool {
		binary.LittleEndian.PutUint64(payload, uint64(intended.UnixNano()))
		if err := conns[j%len(conns)].write(ws.OpBinary, payload); err != nil {
			errs.Add(1)
			return true
		}
		if !intended.Before(measureFrom) {
			sent.Add(1)
			lag.RecordValue(max(time.Since(intended).Microseconds(), 1))
		}
		return true
	})
	if err != nil {
		errs.Add(1)
	}
	awaitDeliveries(ctx, &received, sent.Load(), 5*time.Second) // the last echoes
	stopProgress()
	hist := rs.stop()

	r.Sent, r.Received = sent.Load(), received.Load()
	r.Lost = r.Sent - r.Received
	r.Errors = errs.Load()
	r.Achieved = float64(r.Received) / o.Duration.Seconds()
	r.setLatency(hist, lag)
	return nil
}

// schedule calls step(k, at) for k = 0, 1, … at the intended times
// at = start + k·interval before end, each as soon as it is due (open
// loop: a late step is still charged from its intended time), until ctx
// ends or step reports false.
func schedule(ctx context.Context, start, end time.Time, interval time.Duration, step func(k int, at time.Time) bool) error {
	p, err := newPacer(min(max(interval, 50*time.Microsecond), time.Millisecond))
	if err != nil {
		return err
	}
	defer p.close()
	for k := 0; ; k++ {
		at := start.Add(time.Duration(k) * interval)
		if !at.Before(end) || ctx.Err() != nil {
			return nil
		}
		for time.Now().Before(at) {
			if err := p.wait(); err != nil {
				return err
			}
		}
		if !step(k, at) {
			return nil
		}
	}
}

// pacer wakes a sender on a fixed period. Go's timers are no good for this:
// when the process is otherwise idle the runtime waits for them in
// epoll_wait, whose timeout is in milliseconds, so a 100 µs sleep can take a
// whole millisecond, and that lag would be charged to the server. A timerfd
// read through Go's netpoller wakes within microseconds of its deadline and
// keeps the sender an ordinary goroutine.
type pacer struct{ f *os.File }

func newPacer(period time.Duration) (*pacer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("loadtest: timerfd: %w", err)
	}
	ts := unix.NsecToTimespec(period.Nanoseconds())
	if err := unix.TimerfdSettime(fd, 0, &unix.ItimerSpec{Interval: ts, Value: ts}, nil); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("loadtest: timerfd: %w", err)
	}
	return &pacer{f: os.NewFile(uintptr(fd), "pacer")}, nil
}

// wait blocks until the next period ends.
func (p *pacer) wait() error {
	var b [8]byte
	_, err := p.f.Read(b[:])
	return err
}

func (p *pacer) close() { p.f.Close() }
