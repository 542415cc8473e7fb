package loadtest

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteText prints r as a table for people.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...)
	}
	row("scenario", "%s against %s", r.Scenario, r.Target)
	row("sockets", "%d open, %d failed, %.0f connects/s", r.Sockets, r.ConnectErrors, r.ConnectRate)
	row("connect latency", "%s", r.Connect)
	if r.Latency != nil {
		row("messages", "%d sent, %d received, %d lost, %d errors", r.Sent, r.Received, r.Lost, r.Errors)
		row("rate", "%.0f/s achieved of %.0f/s", r.Achieved, r.Rate)
		row("latency", "%s", *r.Latency)
		row("harness send lag", "%s", *r.SendLag)
	}
	row("server RSS", "%.1f MiB → %.1f MiB (%.0f bytes per socket)", r.Before.RSSBytes/(1<<20), r.After.RSSBytes/(1<<20), r.RSSPerSocket)
	row("server goroutines", "%.0f → %.0f (%.3f per socket)", r.Before.Goroutines, r.After.Goroutines, r.GoroutinesPer)
	if r.After.FramesIn > 0 {
		row("server frames", "%.0f in, %.0f out, %.0f bad input", r.After.FramesIn-r.Before.FramesIn, r.After.FramesOut-r.Before.FramesOut, r.After.BadInput-r.Before.BadInput)
	}
	return tw.Flush()
}

func (l Latency) String() string {
	return fmt.Sprintf("p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  (n=%d)", l.P50, l.P90, l.P99, l.P999, l.Max, l.Count)
}
