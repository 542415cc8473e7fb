package loadtest

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// serverStats are the target's own figures, read from its /metrics.
type serverStats struct {
	RSSBytes   float64 `json:"rss_bytes"`
	Goroutines float64 `json:"goroutines"`
	Sockets    float64 `json:"sockets_open"`
	FramesIn   float64 `json:"frames_in"`
	FramesOut  float64 `json:"frames_out"`
	BadInput   float64 `json:"bad_input"`
	Hibernated float64 `json:"rooms_hibernated"`
	Wakes      float64 `json:"room_wakes"`
}

// scrape reads url, a Prometheus text endpoint. Series the target does not
// export stay zero: the baseline server has no roomgate_ metrics.
func scrape(ctx context.Context, url string) (serverStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return serverStats{}, err
	}
	// Uncompressed: a gzip writer costs the target about a megabyte of
	// garbage per scrape, which would show up in the RSS being measured.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return serverStats{}, fmt.Errorf("loadtest: read target metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return serverStats{}, fmt.Errorf("loadtest: read target metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return serverStats{}, fmt.Errorf("loadtest: parse target metrics: %w", err)
	}
	sum := func(name string) float64 {
		f, ok := fams[name]
		if !ok {
			return 0
		}
		var v float64
		for _, m := range f.GetMetric() {
			switch {
			case m.Gauge != nil:
				v += m.Gauge.GetValue()
			case m.Counter != nil:
				v += m.Counter.GetValue()
			case m.Untyped != nil:
				v += m.Untyped.GetValue()
			}
		}
		return v
	}
	var hibernated float64
	if f, ok := fams["roomgate_rooms"]; ok {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "state" && l.GetValue() == "hibernated" && m.Gauge != nil {
					hibernated += m.Gauge.GetValue()
				}
			}
		}
	}
	return serverStats{
		Hibernated: hibernated,
		Wakes:      sum("roomgate_room_wakes_total"),
		RSSBytes:   sum("process_resident_memory_bytes"),
		Goroutines: sum("go_goroutines"),
		Sockets:    sum("roomgate_sockets_open"),
		FramesIn:   sum("roomgate_frames_in_total"),
		FramesOut:  sum("roomgate_frames_out_total"),
		BadInput:   sum("roomgate_bad_input_total"),
	}, nil
}

// scrape reads every target's metrics and adds them up: for a cluster, the
// figures are the cluster's.
func (o *Options) scrape(ctx context.Context) (serverStats, error) {
	var total serverStats
	for _, u := range o.metricsURLs {
		st, err := scrape(ctx, u)
		if err != nil {
			return serverStats{}, err
		}
		total.RSSBytes += st.RSSBytes
		total.Goroutines += st.Goroutines
		total.Sockets += st.Sockets
		total.FramesIn += st.FramesIn
		total.FramesOut += st.FramesOut
		total.BadInput += st.BadInput
		total.Hibernated += st.Hibernated
		total.Wakes += st.Wakes
	}
	return total, nil
}
