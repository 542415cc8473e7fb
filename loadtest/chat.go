package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// runChat is Rooms chat rooms of Sockets/Rooms members each: at o.Rate
// messages a second in all, a member picked at random (from o.Seed) says a
// message whose text is its intended send time; every member of the room,
// the sender too, receives it, and each delivery's latency runs from that
// time. Fan-out is Rate × members deliveries a second.
func runChat(ctx context.Context, o *Options, r *Report, conns []*wsConn) error {
	r.Rate = o.Rate
	members := int64(o.members)
	start, measureFrom, end := o.window()

	var received, errs, sent atomic.Int64
	rs := startReaders(conns, &errs, func(p []byte, rec *recorder) {
		at, ok := chatSentAt(p)
		if ok && !at.Before(measureFrom) {
			received.Add(1)
			rec.record(max(time.Since(at).Microseconds(), 1))
		}
	})
	stopProgress := progress(o.Progress, rs.status(func() string {
		return fmt.Sprintf("chat: %d rooms × %d, %d sent, %d delivered", o.Rooms, members, sent.Load(), received.Load())
	}, &received))
	interval := time.Duration(float64(time.Second) / o.Rate)
	rng := rand.New(rand.NewPCG(uint64(o.Seed), uint64(o.Seed)>>32^0x9e3779b97f4a7c15))
	lag := newHistogram()
	var msg []byte
	err := schedule(ctx, start, end, interval, func(_ int, at time.Time) bool {
		c := conns[rng.IntN(len(conns))]
		msg = append(msg[:0], `{"type":"say","text":"`...)
		msg = strconv.AppendInt(msg, at.UnixNano(), 10)
		msg = append(msg, `"}`...)
		if err := c.write(ws.OpText, msg); err != nil {
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
	want := sent.Load() * members
	if o.worker == nil {
		awaitDeliveries(ctx, &received, want, 10*time.Second)
	} else {
		// Other workers' messages reach these sockets too, so this
		// worker cannot count what it still awaits: it waits for quiet.
		awaitQuiet(ctx, &received, 500*time.Millisecond, 10*time.Second)
	}
	stopProgress()
	hist := rs.stop()
	r.Sent, r.Received = sent.Load(), received.Load()
	r.Lost = want - r.Received
	r.Errors = errs.Load()
	r.Achieved = float64(r.Received) / o.Duration.Seconds()
	r.setLatency(hist, lag)
	return nil
}

// chatSentAt finds the send time in a chat message frame. It scans instead
// of decoding JSON, so the harness's own CPU stays small next to the
// server's (the deliveries run to 100,000 a second).
func chatSentAt(p []byte) (time.Time, bool) {
	if !bytes.Contains(p, []byte(`"type":"message"`)) {
		return time.Time{}, false
	}
	i := bytes.Index(p, []byte(`"text":"`))
	if i < 0 {
		return time.Time{}, false
	}
	p = p[i+len(`"text":"`):]
	j := 0
	for j < len(p) && p[j] >= '0' && p[j] <= '9' {
		j++
	}
	ns, err := strconv.ParseInt(string(p[:j]), 10, 64)
	if err != nil || j == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}
