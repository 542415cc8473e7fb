package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// More sockets than one process may hold (about 19,000 here) are spread
// over worker processes: copies of the running executable, started with
// workerEnv set. Each opens its share of the sockets (one room numbering for
// all), reports when connected, starts sending at an instant the parent
// gives all of them, and sends back its report and its histograms, which
// the parent merges exactly (HDR histograms add bucket by bucket).

const workerEnv = "ROOMGATE_LOADTEST_WORKER"

// ServeWorker makes this process a worker when its parent started it as
// one, and then exits; otherwise it returns at once. Programs that run the
// harness call it first thing in main (and tests in TestMain).
func ServeWorker() {
	if os.Getenv(workerEnv) != "1" {
		return
	}
	if err := serveWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest worker:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// workerSpec is what a parent tells a worker.
type workerSpec struct {
	Options    Options `json:"options"`
	FirstIndex int     `json:"first_index"`
	Members    int     `json:"members"`
	LocalIP    string  `json:"local_ip,omitempty"`
}

// workerMsg is one line between parent and worker.
type workerMsg struct {
	Start  int64         `json:"start,omitempty"`  // parent → worker: start sending at this Unix time (ns)
	Ready  *workerResult `json:"ready,omitempty"`  // worker → parent: connected
	Result *workerResult `json:"result,omitempty"` // worker → parent: done
	Err    string        `json:"error,omitempty"`
}

type workerResult struct {
	Report  Report                 `json:"report"`
	Connect *hdrhistogram.Snapshot `json:"connect"`
	Latency *hdrhistogram.Snapshot `json:"latency,omitempty"`
	Lag     *hdrhistogram.Snapshot `json:"lag,omitempty"`
}

// workerIO is a worker's side of the conversation.
type workerIO struct {
	enc *json.Encoder
	dec *json.Decoder
}

func serveWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	w := &workerIO{enc: json.NewEncoder(out), dec: json.NewDecoder(in)}
	var spec workerSpec
	if err := w.dec.Decode(&spec); err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	o := spec.Options
	o.worker, o.firstIndex, o.members, o.Workers = w, spec.FirstIndex, spec.Members, 1
	if spec.LocalIP != "" {
		o.localIP = net.ParseIP(spec.LocalIP)
	}
	_, err := Run(ctx, o)
	if err != nil {
		w.enc.Encode(workerMsg{Err: err.Error()})
	}
	return err
}

func (w *workerIO) ready(r *Report) (time.Time, error) {
	if err := w.enc.Encode(workerMsg{Ready: &workerResult{Report: *r, Connect: r.connectHist.Export()}}); err != nil {
		return time.Time{}, err
	}
	var m workerMsg
	if err := w.dec.Decode(&m); err != nil || m.Start == 0 {
		return time.Time{}, fmt.Errorf("no start from the parent: %v", err)
	}
	return time.Unix(0, m.Start), nil
}

// finish reports and then holds the sockets open until the parent, having
// read the server's figures, closes the conversation.
func (w *workerIO) finish(r *Report) error {
	res := &workerResult{Report: *r, Connect: r.connectHist.Export()}
	if r.latencyHist != nil {
		res.Latency, res.Lag = r.latencyHist.Export(), r.lagHist.Export()
	}
	if err := w.enc.Encode(workerMsg{Result: res}); err != nil {
		return err
	}
	var m workerMsg
	w.dec.Decode(&m) // EOF: the parent is done
	return nil
}

// worker is the parent's handle on one worker process.
type worker struct {
	cmd *exec.Cmd
	enc *json.Encoder
	dec *json.Decoder
	in  io.Closer
}

func (wk *worker) next() (*workerResult, error) {
	var m workerMsg
	if err := wk.dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("worker ended: %w", err)
	}
	switch {
	case m.Err != "":
		return nil, errors.New(m.Err)
	case m.Ready != nil:
		return m.Ready, nil
	case m.Result != nil:
		return m.Result, nil
	}
	return nil, errors.New("worker said nothing")
}

// runWorkers runs o over o.Workers processes and merges their reports.
func runWorkers(ctx context.Context, o Options) (*Report, error) {
	before, err := o.scrape(ctx)
	if err != nil {
		return nil, err
	}
	probe, err := dial(ctx, o.wsURL(0), o.DialTimeout, nil)
	if err != nil {
		return nil, refused(err)
	}
	probe.close()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	workers := make([]*worker, o.Workers)
	defer func() {
		for _, wk := range workers {
			if wk != nil {
				wk.in.Close()
				wk.cmd.Wait()
			}
		}
	}()
	first := 0
	for i := range workers {
		spec := workerSpec{Options: o, FirstIndex: first, Members: o.members}
		spec.Options.Sockets = o.Sockets / o.Workers
		if i < o.Sockets%o.Workers {
			spec.Options.Sockets++
		}
		spec.Options.Rate = o.Rate / float64(o.Workers)
		if o.SourceIPs > 0 { // init checked the targets are on loopback
			spec.LocalIP = fmt.Sprintf("127.0.0.%d", 2+i%o.SourceIPs)
		}
		first += spec.Options.Sockets
		cmd := exec.CommandContext(ctx, exe)
		cmd.Env = append(os.Environ(), workerEnv+"=1")
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("loadtest: start worker: %w", err)
		}
		wk := &worker{cmd: cmd, enc: json.NewEncoder(stdin), dec: json.NewDecoder(stdout), in: stdin}
		workers[i] = wk
		if err := wk.enc.Encode(spec); err != nil {
			return nil, fmt.Errorf("loadtest: worker %d: %w", i, err)
		}
	}
	stopProgress := progress(o.Progress, func() string { return fmt.Sprintf("%s: %d workers running", o.Scenario, len(workers)) })
	defer stopProgress()
	for i, wk := range workers {
		if _, err := wk.next(); err != nil {
			return nil, fmt.Errorf("loadtest: worker %d: %w", i, err)
		}
	}
	start := time.Now().Add(200 * time.Millisecond)
	for _, wk := range workers {
		wk.enc.Encode(workerMsg{Start: start.UnixNano()})
	}
	results := make([]*workerResult, len(workers))
	for i, wk := range workers {
		if results[i], err = wk.next(); err != nil {
			return nil, fmt.Errorf("loadtest: worker %d: %w", i, err)
		}
	}
	r, err := mergeResults(o, results)
	if err != nil {
		return nil, err
	}
	r.Before = before
	return r, o.scrapeAfter(ctx, r)
}

// mergeResults adds the workers' counts and histograms into one report.
func mergeResults(o Options, results []*workerResult) (*Report, error) {
	r := &Report{Scenario: o.Scenario, Target: o.Target, Rate: o.Rate, Workers: len(results)}
	connect, latency, lag := newHistogram(), newHistogram(), newHistogram()
	for _, res := range results {
		w := res.Report
		r.Sockets += w.Sockets
		r.ConnectErrors += w.ConnectErrors
		r.ConnectSeconds = max(r.ConnectSeconds, w.ConnectSeconds)
		r.Sent += w.Sent
		r.Received += w.Received
		r.Lost += w.Lost
		r.Errors += w.Errors
		r.Achieved += w.Achieved
		r.Hibernated = max(r.Hibernated, w.Hibernated)
		for _, m := range []struct {
			into *hdrhistogram.Histogram
			s    *hdrhistogram.Snapshot
		}{{connect, res.Connect}, {latency, res.Latency}, {lag, res.Lag}} {
			if m.s != nil {
				if dropped := m.into.Merge(hdrhistogram.Import(m.s)); dropped != 0 {
					return nil, fmt.Errorf("loadtest: %d values did not fit the merged histogram", dropped)
				}
			}
		}
	}
	if r.ConnectSeconds > 0 {
		r.ConnectRate = float64(r.Sockets) / r.ConnectSeconds
	}
	r.Connect, r.connectHist = summarize(connect), connect
	if results[0].Latency != nil {
		r.setLatency(latency, lag)
	}
	if o.Scenario == "wake" && r.Latency.Max > 0 {
		r.Achieved = float64(r.Received) / (r.Latency.Max / 1000)
	}
	return r, nil
}
