package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gobwas/ws"
)

// Options describe one run. A zero field means its default.
type Options struct {
	Scenario           string        // "idle", "echo", "broadcast", "chat", "churn" or "wake"; required
	Target             string        // the target's base URL, e.g. http://127.0.0.1:8080, or several comma-separated (a cluster's nodes: socket i goes to the i-th mod n); required
	MetricsURL         string        // default each target's /metrics, summed
	Class              string        // room class to connect to; default "echo", "counter" for broadcast, "chat" for chat
	Sockets            int           // sockets to open; default 1000
	Rooms              int           // rooms the sockets spread over; default one per socket (chat: 50 members a room)
	Rate               float64       // messages sent per second, all sockets together (churn: sockets replaced per second); default 1000
	Size               int           // echo: payload bytes, at least 8; default 32
	Duration           time.Duration // measured time; default 10s
	Warmup             time.Duration // echo: sending before measuring starts; default 2s
	Settle             time.Duration // idle: wait after connecting before reading server memory, default 5s; wake: longest wait for the rooms to hibernate, default 30s
	Ramp               time.Duration // spread connects over this long; default as fast as ConnectConcurrency allows
	ConnectConcurrency int           // dials in flight; default 64
	DialTimeout        time.Duration // per dial, handshake included; default 10s
	Seed               int64         // chat: the random choice of senders; default 1
	JWTSecret          string        // when set, every socket presents an HS256 token minted with it
	Workers            int           // processes to spread the sockets over (see RunWorkers); default 1: this one
	SourceIPs          int           // loopback targets: bind sockets to 127.0.0.2… (this many), when ephemeral ports run short; default 0: the system's choice
	Progress           io.Writer     `json:"-"` // a live status line, when set

	firstIndex  int       // this worker's first socket index, so workers share one room numbering
	start       time.Time // when every worker starts sending; zero: 100 ms after this one is ready
	localIP     net.IP    // the source address of this worker's sockets; nil: the system's choice
	targets     []string  // Target, split
	metricsURLs []string
	members     int           // chat: sockets per room, over all workers
	worker      *workerIO     // set in a worker process: it reports to its parent instead of scraping
	grace       time.Duration // beyond the run's own times, before it is cut short; default 2m
}

// bound is the longest a run may take: its ramp, settle (idle and wake
// only), warm-up and measured time, and grace for the connects, the last
// deliveries and the scrapes. A target that stops reading would otherwise
// hold a send forever.
func (o *Options) bound() time.Duration {
	d := o.Ramp + o.Warmup + o.Duration + o.grace
	if o.Scenario == "idle" || o.Scenario == "wake" {
		d += o.Settle
	}
	return d
}

func (o *Options) init() error {
	if o.Sockets == 0 {
		o.Sockets = 1000
	}
	switch o.Scenario {
	case "idle", "echo", "churn":
	case "wake":
		if o.Settle == 0 {
			o.Settle = 30 * time.Second
		}
	case "broadcast":
		if o.Class == "" {
			o.Class = "counter"
		}
		o.Rooms = 1 // every socket in one room
	case "chat":
		if o.Class == "" {
			o.Class = "chat"
		}
		if o.Rooms == 0 {
			o.Rooms = max(1, o.Sockets/50)
		}
		if o.worker == nil {
			if o.Sockets%o.Rooms != 0 {
				return fmt.Errorf("loadtest: chat needs as many members in every room: %d sockets do not divide into %d rooms", o.Sockets, o.Rooms)
			}
			o.members = o.Sockets / o.Rooms
		}
	default:
		return fmt.Errorf("loadtest: unknown scenario %q (want idle, echo, broadcast, chat, churn or wake)", o.Scenario)
	}
	o.targets, o.metricsURLs = nil, nil
	for _, t := range strings.Split(o.Target, ",") {
		t = strings.TrimRight(strings.TrimSpace(t), "/")
		u, err := url.Parse(t)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("loadtest: target %q is not an http(s) base URL", t)
		}
		o.targets = append(o.targets, t)
		o.metricsURLs = append(o.metricsURLs, t+"/metrics")
	}
	if o.MetricsURL != "" {
		o.metricsURLs = []string{o.MetricsURL}
	}
	if o.Class == "" {
		o.Class = "echo"
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Workers == 0 {
		o.Workers = 1
	}
	if o.Rooms == 0 {
		o.Rooms = o.Sockets
	}
	if o.Rate == 0 {
		o.Rate = 1000
	}
	if o.Size == 0 {
		o.Size = 32
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = 2 * time.Second
	}
	if o.Settle == 0 {
		o.Settle = 5 * time.Second
	}
	if o.ConnectConcurrency == 0 {
		o.ConnectConcurrency = 64
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.grace == 0 {
		o.grace = 2 * time.Minute
	}
	switch {
	case o.Sockets < 0 || o.Rooms < 0 || o.Rate < 0 || o.ConnectConcurrency < 0:
		return errors.New("loadtest: negative option")
	case o.Size < 8:
		return errors.New("loadtest: Size must be at least 8 bytes, the send timestamp")
	case o.Workers < 0 || o.Duration < 0 || o.Warmup < 0 || o.Settle < 0 || o.Ramp < 0 || o.DialTimeout < 0 || o.SourceIPs < 0:
		return errors.New("loadtest: negative option")
	case o.Rate > 1e6:
		return fmt.Errorf("loadtest: rate %g/s is past what one harness can schedule (1,000,000/s)", o.Rate)
	case o.SourceIPs > 253:
		return errors.New("loadtest: at most 253 source addresses (127.0.0.2 to 127.0.0.254)")
	case o.SourceIPs > 0 && o.worker == nil && o.Workers < 2:
		return errors.New("loadtest: source addresses are given out per worker process: use them with 2 or more workers")
	case o.SourceIPs > 0 && !allLoopback(o.targets):
		return errors.New("loadtest: source addresses 127.0.0.x reach only loopback targets")
	case o.worker == nil && o.Workers > o.Sockets:
		return fmt.Errorf("loadtest: %d workers for %d sockets: every worker needs one", o.Workers, o.Sockets)
	case o.Scenario == "broadcast" && o.Workers > 1:
		return errors.New("loadtest: broadcast has one sender and one room: it runs in one process (no -workers)")
	case o.Sockets/o.Workers > 19000:
		return fmt.Errorf("loadtest: %d sockets in %d process(es) exceed what one process may hold here (~19,000 each): add -workers", o.Sockets, o.Workers)
	}
	return nil
}

// allLoopback reports whether every target is on this machine's loopback.
func allLoopback(targets []string) bool {
	for _, t := range targets {
		u, err := url.Parse(t)
		if err != nil {
			return false
		}
		if ip := net.ParseIP(u.Hostname()); !(ip != nil && ip.IsLoopback() || u.Hostname() == "localhost") {
			return false
		}
	}
	return true
}

// wsURL is socket i's URL: room lt-(i mod Rooms), user lt-i (dev mode), and
// a token when a JWT secret is given.
func (o *Options) wsURL(i int) string {
	base := "ws" + strings.TrimPrefix(o.targets[i%len(o.targets)], "http")
	u := fmt.Sprintf("%s/ws/%s/lt-%d?user=lt-%d&name=lt-%d", base, o.Class, i%o.Rooms, i, i)
	if o.JWTSecret != "" {
		u += "&token=" + mintToken(o.JWTSecret, fmt.Sprintf("lt-%d", i), o.Class, o.Duration+o.Warmup+time.Hour)
	}
	return u
}

// startAt is when sending starts: the instant the parent gave its workers,
// or a moment from now.
func (o *Options) startAt() time.Time {
	if !o.start.IsZero() {
		return o.start
	}
	return time.Now().Add(100 * time.Millisecond)
}

// window is when a scenario sends: from start, measured from measureFrom
// (after the warm-up) until end.
func (o *Options) window() (start, measureFrom, end time.Time) {
	start = o.startAt()
	measureFrom = start.Add(o.Warmup)
	return start, measureFrom, measureFrom.Add(o.Duration)
}

// Latency summarizes a histogram in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}

// newHistogram records microseconds from 1 µs to 1 minute, 3 significant digits.
func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

// Report is the outcome of a run.
type Report struct {
	Scenario       string   `json:"scenario"`
	Target         string   `json:"target"`
	Sockets        int      `json:"sockets"`
	ConnectErrors  int64    `json:"connect_errors"`
	ConnectSeconds float64  `json:"connect_seconds"`
	ConnectRate    float64  `json:"connects_per_second"`
	Connect        Latency  `json:"connect_latency"`
	Rate           float64  `json:"rate_target,omitempty"`
	Sent           int64    `json:"sent,omitempty"`
	Received       int64    `json:"received,omitempty"`
	Lost           int64    `json:"lost,omitempty"`
	Errors         int64    `json:"errors"`
	Achieved       float64  `json:"rate_achieved,omitempty"`
	Latency        *Latency `json:"latency,omitempty"`
	SendLag        *Latency `json:"send_lag,omitempty"`         // how late the harness itself sent: latency includes it
	Hibernated     float64  `json:"rooms_hibernated,omitempty"` // wake: the target's hibernated rooms before the storm
	Workers        int      `json:"workers"`

	connectHist, latencyHist, lagHist *hdrhistogram.Histogram // kept for merging workers' reports
	Before                            serverStats             `json:"server_before"`
	After                             serverStats             `json:"server_after"`
	RSSPerSocket                      float64                 `json:"server_rss_bytes_per_socket"`
	GoroutinesPer                     float64                 `json:"server_goroutines_per_socket"`
}

// Run executes o's scenario against its target and returns the report. It
// fails fast, with a clear error, when the target is down or refuses the
// first socket.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.init(); err != nil {
		return nil, err
	}
	if o.Workers > 1 && o.worker == nil {
		return runWorkers(ctx, o)
	}
	overrun := fmt.Errorf("loadtest: the run did not end within %s, its bound: the target stopped reading or answering, and its sockets were closed", o.bound())
	ctx, cancel := context.WithTimeoutCause(ctx, o.bound(), overrun)
	defer cancel()
	r, err := run(ctx, o)
	if context.Cause(ctx) == overrun {
		err = overrun
	}
	return r, err
}

func run(ctx context.Context, o Options) (*Report, error) {
	var before serverStats
	var err error
	if o.worker == nil {
		if before, err = o.scrape(ctx); err != nil {
			return nil, err
		}
	}
	probe, err := dial(ctx, o.wsURL(o.firstIndex), o.DialTimeout, o.localIP)
	if err != nil {
		return nil, refused(err)
	}
	probe.close()

	r := &Report{Scenario: o.Scenario, Target: o.Target, Before: before, Workers: 1}
	conns, err := connectAll(ctx, &o, r)
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	// Past the bound, a send blocked on a target that stopped reading
	// ends with its socket.
	defer context.AfterFunc(ctx, func() {
		for _, c := range conns {
			c.abort()
		}
	})()
	if err != nil {
		return r, err
	}
	if o.worker != nil {
		// All workers connect (and, for a wake storm, see the rooms
		// asleep) first; then they start sending together.
		if o.Scenario == "wake" {
			if err := awaitHibernation(ctx, &o, r); err != nil {
				return r, err
			}
		}
		if o.start, err = o.worker.ready(r); err != nil {
			return r, err
		}
	}
	if len(conns) == 0 && o.Scenario != "idle" {
		return r, errors.New("loadtest: no sockets open")
	}
	switch o.Scenario {
	case "idle":
		err = runIdle(ctx, &o, r)
	case "echo":
		err = runEcho(ctx, &o, r, conns)
	case "broadcast":
		err = runBroadcast(ctx, &o, r, conns)
	case "chat":
		err = runChat(ctx, &o, r, conns)
	case "churn":
		err = runChurn(ctx, &o, r, conns)
	case "wake":
		err = runWake(ctx, &o, r, conns)
	}
	if err != nil {
		return r, err
	}
	if o.worker != nil {
		return r, o.worker.finish(r) // the parent reads the server's figures while these sockets are open
	}
	return r, o.scrapeAfter(ctx, r)
}

// scrapeAfter reads the target's figures once the run is over and divides
// their change by the sockets.
func (o *Options) scrapeAfter(ctx context.Context, r *Report) error {
	var err error
	if r.After, err = o.scrape(ctx); err != nil {
		return err
	}
	if r.Sockets > 0 {
		r.RSSPerSocket = (r.After.RSSBytes - r.Before.RSSBytes) / float64(r.Sockets)
		r.GoroutinesPer = (r.After.Goroutines - r.Before.Goroutines) / float64(r.Sockets)
	}
	return nil
}

// connectAll opens o.Sockets sockets, ConnectConcurrency at a time, paced
// over o.Ramp when set. More than 1% failed dials abort the run.
func connectAll(ctx context.Context, o *Options, r *Report) ([]*wsConn, error) {
	conns := make([]*wsConn, o.Sockets)
	hist := newHistogram()
	var mu sync.Mutex
	var failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, o.ConnectConcurrency)
	var wg sync.WaitGroup
	start := time.Now()
	stopProgress := progress(o.Progress, func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprintf("connecting: %d/%d open, %d failed", hist.TotalCount(), o.Sockets, failed.Load())
	})
	for i := range o.Sockets {
		if o.Ramp > 0 {
			if d := time.Until(start.Add(o.Ramp * time.Duration(i) / time.Duration(o.Sockets))); d > 0 {
				time.Sleep(d)
			}
		}
		if ctx.Err() != nil || failed.Load() > int64(o.Sockets/100) {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t := time.Now()
			c, err := dial(ctx, o.wsURL(o.firstIndex+i), o.DialTimeout, o.localIP)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			conns[i] = c
			mu.Lock()
			hist.RecordValue(time.Since(t).Microseconds())
			mu.Unlock()
		}()
	}
	wg.Wait()
	stopProgress()
	r.ConnectSeconds = time.Since(start).Seconds()
	r.ConnectErrors = failed.Load()
	r.Connect, r.connectHist = summarize(hist), hist
	open := conns[:0]
	for _, c := range conns {
		if c != nil {
			open = append(open, c)
		}
	}
	r.Sockets = len(open)
	r.ConnectRate = float64(r.Sockets) / r.ConnectSeconds
	if failed.Load() > int64(o.Sockets/100) {
		return open, fmt.Errorf("loadtest: %d of %d dials failed, first: %v", failed.Load(), o.Sockets, firstErr.Load())
	}
	return open, ctx.Err()
}

// runIdle holds the sockets open for Settle, so the server's memory settles,
// then for what is left of Duration.
func runIdle(ctx context.Context, o *Options, r *Report) error {
	t := time.NewTimer(max(o.Settle, o.Duration))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// progress prints line() every second until the returned stop is called.
func progress(w io.Writer, line func() string) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintf(w, "\r\033[K")
				return
			case <-tick.C:
				fmt.Fprintf(w, "\r\033[K%s", line())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// setLatency records a scenario's delivery and send-lag histograms.
func (r *Report) setLatency(hist, lag *hdrhistogram.Histogram) {
	l, sl := summarize(hist), summarize(lag)
	r.Latency, r.SendLag = &l, &sl
	r.latencyHist, r.lagHist = hist, lag
}

// refused explains why the target refused the first socket: the statuses
// of DESIGN §1 say what to change.
func refused(err error) error {
	var st ws.StatusError
	if errors.As(err, &st) {
		switch int(st) {
		case 401:
			return fmt.Errorf("loadtest: the target refused the token (401): give -jwt-secret the target's secret: %w", err)
		case 403:
			return fmt.Errorf("loadtest: the target refused the socket (403: origin, or a token that does not cover the room): %w", err)
		case 404:
			return fmt.Errorf("loadtest: the target has no such room class (404): check -class: %w", err)
		case 503:
			return fmt.Errorf("loadtest: the target is not ready or is draining (503): %w", err)
		}
	}
	return fmt.Errorf("loadtest: target refused a socket: %w", err)
}
