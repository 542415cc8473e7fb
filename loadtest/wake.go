package loadtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// runWake waits until the target has hibernated the sockets' rooms (its
// roomgate_rooms{state="hibernated"}, or Settle at most), then has every
// socket send one message at the same instant: a wake storm. Latency runs
// from that instant to each answer; its max is how long the last room
// took to wake and answer.
func runWake(ctx context.Context, o *Options, r *Report, conns []*wsConn) error {
	if o.worker == nil {
		if err := awaitHibernation(ctx, o, r); err != nil {
			return err
		}
	}
	var received, errs, sent atomic.Int64
	rs := startReaders(conns, &errs, func(p []byte, rec *recorder) {
		if len(p) >= 8 {
			received.Add(1)
			rec.record(max(time.Since(time.Unix(0, int64(binary.LittleEndian.Uint64(p)))).Microseconds(), 1))
		}
	})
	stopProgress := progress(o.Progress, rs.status(func() string {
		return fmt.Sprintf("wake: %d sockets, %d sent, %d answered", len(conns), sent.Load(), received.Load())
	}, &received))
	defer stopProgress()
	start := o.startAt()
	time.Sleep(time.Until(start))
	payload := make([]byte, 8)
	binary.LittleEndian.PutUint64(payload, uint64(start.UnixNano()))
	lag := newHistogram()
	for _, c := range conns {
		if err := c.write(ws.OpBinary, payload); err != nil {
			errs.Add(1)
			continue
		}
		sent.Add(1)
		lag.RecordValue(max(time.Since(start).Microseconds(), 1))
	}
	awaitDeliveries(ctx, &received, sent.Load(), max(o.Duration, 10*time.Second))
	hist := rs.stop()
	r.Rate = float64(len(conns))
	r.Sent, r.Received = sent.Load(), received.Load()
	r.Lost = r.Sent - r.Received
	r.Errors = errs.Load()
	r.setLatency(hist, lag)
	if r.Latency.Max > 0 {
		r.Achieved = float64(r.Received) / (r.Latency.Max / 1000)
	}
	return nil
}

// awaitHibernation waits until the target reports the rooms hibernated, or
// Settle has passed. A worker waits before it reports ready, so that all
// workers storm at the one instant their parent gives.
func awaitHibernation(ctx context.Context, o *Options, r *Report) error {
	deadline := time.Now().Add(o.Settle)
	for {
		st, err := o.scrape(ctx)
		if err != nil {
			return err
		}
		r.Hibernated = st.Hibernated
		if st.Hibernated >= float64(o.Rooms)*0.99 || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
