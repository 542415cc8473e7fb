package main

// The standard suite's table: `benchtable suite -doc docs/benchmarks.md
// DIR/*.json` reads the reports of scripts/bench-suite (files
// SETUP-SCENARIO.json, SETUP node or cluster), checks them against the
// targets and writes the table between the suite's markers.

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

const (
	startMarker = "<!-- standard suite: start (written by make bench) -->"
	endMarker   = "<!-- standard suite: end -->"
)

func suite(args []string) {
	fs := flag.NewFlagSet("suite", flag.ExitOnError)
	doc := fs.String("doc", "", "markdown file whose suite section is replaced; empty: print the table")
	note := fs.String("note", "", "a line printed under the table, e.g. the commands")
	fs.Parse(args)
	reports := map[string][]report{} // SETUP-SCENARIO → its runs
	for _, path := range fs.Args() {
		r := readReport(path)
		key := strings.TrimSuffix(filepath.Base(path), ".json")
		if i := strings.LastIndexByte(key, '-'); i > 0 && strings.Trim(key[i+1:], "0123456789") == "" {
			key = key[:i] // SETUP-SCENARIO-RUN
		}
		reports[key] = append(reports[key], r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %s, Go %s; harness and servers on the same machine. Measured %s.\n\n",
		runtime.NumCPU(), cpuModel(), kernel(), strings.TrimPrefix(runtime.Version(), "go"), time.Now().UTC().Format("2006-01-02"))
	b.WriteString("The targets are set for one node (embedded store, harness on the same 2-core machine). " +
		"The baseline column is the bare floor: the same load against loadtest/baseline, which writes the same frames " +
		"with nothing of Roomgate (no rooms, no storage), in the same run; the ratio is one node ÷ baseline, so below 1× Roomgate is faster than the bare floor. " +
		"The cluster column is for comparison.\n\n")
	b.WriteString("| scenario | figure | target (one node) | one node, embedded store | baseline | ratio | three nodes on Redis |\n|---|---|---|---|---|---|---|\n")
	row := func(scenario, figure, target string, met func(float64) bool, f func(report) float64, format string) {
		cells := map[string]string{}
		values := map[string]float64{}
		for _, setup := range []string{"node", "floor", "cluster"} {
			runs, ok := reports[setup+"-"+scenario]
			if !ok {
				cells[setup] = "not run"
				if setup == "floor" {
					cells[setup] = "–" // the baseline has no such scenario
				}
				continue
			}
			v, all := medianOf(runs, f)
			values[setup] = v
			cell := fmt.Sprintf(format, v)
			if met != nil && setup == "node" { // the targets are set for one node
				if met(v) {
					cell += " ✓"
				} else {
					cell += " ✗ missed"
				}
			}
			if len(all) > 1 {
				each := make([]string, len(all))
				for i, x := range all {
					each[i] = strings.Fields(fmt.Sprintf(format, x))[0]
				}
				cell += " (" + strings.Join(each, " · ") + ")"
			}
			cells[setup] = cell
		}
		ratio := "–"
		if n, ok := values["node"]; ok {
			if fl, ok := values["floor"]; ok && fl > 0 && strings.HasSuffix(format, "ms") {
				ratio = fmt.Sprintf("%.1f×", n/fl)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", scenario, figure, target, cells["node"], cells["floor"], ratio, cells["cluster"])
	}
	row("idle", "server RSS per socket, 15,000 sockets", "≤ 1 KiB", func(v float64) bool { return v <= 1024 }, func(r report) float64 { return r.RSSPerSocket }, "%.0f B")
	row("idle", "server goroutines per socket", "0", func(v float64) bool { return v < 0.01 }, func(r report) float64 { return r.GoroutinesPer }, "%.3f")
	row("idle", "connects per second", "–", nil, func(r report) float64 { return r.ConnectRate }, "%.0f /s")
	row("echo", "p50, 1,000 sockets at 20,000 msg/s", "–", nil, func(r report) float64 { return lat(r).P50 }, "%.3f ms")
	row("echo", "p99", "< 1 ms", func(v float64) bool { return v < 1 }, func(r report) float64 { return lat(r).P99 }, "%.2f ms")
	row("echo", "messages lost", "0", func(v float64) bool { return v == 0 }, func(r report) float64 { return float64(r.Lost) }, "%.0f")
	row("chat", "p50, 100 rooms × 50 members, 2,000 msg/s in", "–", nil, func(r report) float64 { return lat(r).P50 }, "%.2f ms")
	row("chat", "p99 from send to every receiver", "< 10 ms", func(v float64) bool { return v < 10 }, func(r report) float64 { return lat(r).P99 }, "%.2f ms")
	row("chat", "deliveries per second", "100,000", nil, func(r report) float64 { return r.Achieved }, "%.0f /s")
	row("chat", "deliveries lost", "0", func(v float64) bool { return v == 0 }, func(r report) float64 { return float64(r.Lost) }, "%.0f")
	row("broadcast", "p50, one room of 5,000 sockets, one sender at 20 msg/s", "–", nil, func(r report) float64 { return lat(r).P50 }, "%.2f ms")
	row("broadcast", "p99 from send to receive", "< 20 ms", func(v float64) bool { return v < 20 }, func(r report) float64 { return lat(r).P99 }, "%.2f ms")
	row("broadcast", "deliveries lost", "0", func(v float64) bool { return v == 0 }, func(r report) float64 { return float64(r.Lost) }, "%.0f")
	row("wake", "rooms hibernated before the storm", "5,000", nil, func(r report) float64 { return r.Hibernated }, "%.0f")
	row("wake", "all 5,000 answered within", "≤ 2 s", func(v float64) bool { return v > 0 && v <= 2000 }, func(r report) float64 {
		if r.Received < r.Sent || r.Sent == 0 {
			return 0 // not all answered
		}
		return lat(r).Max
	}, "%.0f ms")
	row("wake", "answer p50", "–", nil, func(r report) float64 { return lat(r).P50 }, "%.1f ms")
	// A run with errors is not a measurement to trust, whatever its figures.
	for _, scenario := range []string{"idle", "echo", "chat", "broadcast", "wake"} {
		row(scenario, "errors (sockets refused, or closed or failing mid-run)", "0", func(v float64) bool { return v == 0 },
			func(r report) float64 { return float64(r.Errors + r.ConnectErrors) }, "%.0f")
	}
	if *note != "" {
		b.WriteString("\n" + *note + "\n")
	}
	sweep(&b, reports, "echo", "echo, 1,000 sockets", 1)
	sweep(&b, reports, "chat", "chat, 100 rooms × 50 members (deliveries are 50× the rate)", 10)
	if *doc == "" {
		fmt.Print(b.String())
		return
	}
	text, err := os.ReadFile(*doc)
	if err != nil {
		fail("%v", err)
	}
	s := string(text)
	i, j := strings.Index(s, startMarker), strings.Index(s, endMarker)
	if i < 0 || j < i {
		fail("%s has no suite markers", *doc)
	}
	s = s[:i+len(startMarker)] + "\n" + b.String() + s[j:]
	if err := os.WriteFile(*doc, []byte(s), 0o644); err != nil {
		fail("%v", err)
	}
}

// sweep writes how the scenario's p99 grows with its rate, on one node and
// on the baseline: the SETUP-SCENARIOsweep-RATE reports, and the standard
// rate's runs (their median). Where a target is missed at the standard
// rate, this says up to which rate it holds, and whether the bare floor
// holds it any further.
func sweep(b *strings.Builder, reports map[string][]report, scenario, what string, targetMs float64) {
	type point struct{ node, floor []report }
	points := map[float64]*point{}
	at := func(rate float64) *point {
		if points[rate] == nil {
			points[rate] = &point{}
		}
		return points[rate]
	}
	if len(reports["node-"+scenario+"sweep"])+len(reports["floor-"+scenario+"sweep"]) == 0 {
		return
	}
	for _, kind := range []string{scenario + "sweep", scenario} {
		for _, r := range reports["node-"+kind] {
			at(r.Rate).node = append(at(r.Rate).node, r)
		}
		for _, r := range reports["floor-"+kind] {
			at(r.Rate).floor = append(at(r.Rate).floor, r)
		}
	}
	rates := make([]float64, 0, len(points))
	for rate := range points {
		rates = append(rates, rate)
	}
	sort.Float64s(rates)
	p99 := func(r report) float64 { return lat(r).P99 }
	p50 := func(r report) float64 { return lat(r).P50 }
	cell := func(runs []report, f func(report) float64) (string, float64, bool) {
		if len(runs) == 0 {
			return "not run", 0, false
		}
		for _, r := range runs {
			if r.Errors+r.ConnectErrors+r.Lost > 0 {
				// A run that lost messages or sockets measures nothing.
				return fmt.Sprintf("%d errors, %d lost", r.Errors+r.ConnectErrors, r.Lost), 0, false
			}
		}
		v, _ := medianOf(runs, f)
		return fmt.Sprintf("%.2f ms", v), v, true
	}
	fmt.Fprintf(b, "\n**%s: p99 against the rate** (target p99 < %g ms; the standard rate is the last row, the median of its runs)\n\n", what, targetMs)
	b.WriteString("| messages/s in | one node p50 | one node p99 | baseline p50 | baseline p99 |\n|---|---|---|---|---|\n")
	holds := map[string]float64{} // setup → the highest rate whose p99 meets the target, every rate below meeting it too
	broken := map[string]bool{}
	for _, rate := range rates {
		pt := points[rate]
		row := []string{fmt.Sprintf("%.0f", rate)}
		for _, s := range []struct {
			name string
			runs []report
		}{{"node", pt.node}, {"floor", pt.floor}} {
			c50, _, _ := cell(s.runs, p50)
			c99, v, ok := cell(s.runs, p99)
			switch {
			case ok && v < targetMs:
				c99 += " ✓"
				if !broken[s.name] {
					holds[s.name] = rate
				}
			case len(s.runs) > 0: // missed, or a run with errors
				c99 += " ✗"
				broken[s.name] = true
			}
			row = append(row, c50, c99)
		}
		fmt.Fprintf(b, "| %s |\n", strings.Join(row, " | "))
	}
	say := func(setup string) string {
		if holds[setup] == 0 {
			return "at none of these rates"
		}
		return fmt.Sprintf("up to %.0f messages/s", holds[setup])
	}
	fmt.Fprintf(b, "\nThe target holds on one node %s, and on the bare baseline %s.\n", say("node"), say("floor"))
}
