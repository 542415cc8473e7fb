package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// runBroadcast has one socket send "inc" to a counter room at o.Rate while
// every socket, the sender's too, receives each new value. The k-th inc
// yields value base+k, so each delivery's latency runs from the intended
// send time of the inc that made it.
func runBroadcast(ctx context.Context, o *Options, r *Report, conns []*wsConn) error {
	r.Rate = o.Rate
	// Every socket got the current value on connect; with no other writer
	// they all agree on it.
	var base int64 = -1
	for _, c := range conns {
		v, err := readCount(c, o.DialTimeout)
		if err != nil {
			return fmt.Errorf("loadtest: reading the counter's first value: %w", err)
		}
		base = max(base, v)
	}
	start, measureFrom, end := o.window()
	interval := time.Duration(float64(time.Second) / o.Rate)
	total := int(end.Sub(start) / interval)
	intended := make([]atomic.Int64, total+1) // UnixNano of inc k, written before it is sent

	var received, errs, sent atomic.Int64
	rs := startReaders(conns, &errs, func(p []byte, rec *recorder) {
		v, ok := countIn(p)
		if !ok {
			return
		}
		k := v - base - 1
		if k < 0 || k > int64(total) {
			return // another writer's value
		}
		at := intended[k].Load()
		if at != 0 && !time.Unix(0, at).Before(measureFrom) {
			received.Add(1)
			rec.record(max(time.Since(time.Unix(0, at)).Microseconds(), 1))
		}
	})

	stopProgress := progress(o.Progress, rs.status(func() string {
		return fmt.Sprintf("broadcast: %d sockets, %d sent, %d delivered", len(conns), sent.Load(), received.Load())
	}, &received))
	lag := newHistogram()
	sender := conns[0]
	err := schedule(ctx, start, end, interval, func(k int, at time.Time) bool {
		if k > total {
			return false
		}
		intended[k].Store(at.UnixNano())
		if err := sender.write(ws.OpText, []byte("inc")); err != nil {
			errs.Add(1)
			return true
		}
		if !at.Before(measureFrom) {
			sent.Add(1)
			lag.RecordValue(max(time.Since(at).Microseconds(), 1))
		}
		return true
	})
	if err != nil {
		return err
	}
	want := sent.Load() * int64(len(conns))
	awaitDeliveries(ctx, &received, want, 10*time.Second)
	stopProgress()
	hist := rs.stop()
	r.Sent, r.Received = sent.Load(), received.Load()
	r.Lost = want - r.Received
	r.Errors = errs.Load()
	r.Achieved = float64(r.Received) / o.Duration.Seconds()
	r.setLatency(hist, lag)
	return nil
}

// readCount reads the next {"type":"count","value":N}. It scans for the
// value instead of decoding JSON: at 100,000 deliveries a second the
// harness's own parsing would otherwise eat the CPU the server is measured on.
func readCount(c *wsConn, timeout time.Duration) (int64, error) {
	// A room that never sends a count (a wrong -class) must not hang the run.
	c.c.SetReadDeadline(time.Now().Add(timeout))
	defer c.c.SetReadDeadline(time.Time{})
	for {
		_, p, err := c.read()
		if err != nil {
			return 0, err
		}
		if v, ok := countIn(p); ok {
			return v, nil
		}
	}
}

// countIn finds N in a {"type":"count","value":N} frame.
func countIn(p []byte) (int64, bool) {
	if !bytes.Contains(p, []byte(`"type":"count"`)) {
		return 0, false
	}
	i := bytes.Index(p, []byte(`"value":`))
	if i < 0 {
		return 0, false
	}
	p = p[i+len(`"value":`):]
	j := 0
	for j < len(p) && p[j] >= '0' && p[j] <= '9' {
		j++
	}
	v, err := strconv.ParseInt(string(p[:j]), 10, 64)
	return v, err == nil
}
