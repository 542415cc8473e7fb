// Command benchtable turns `roomgate loadtest -json` reports into the
// markdown tables of docs/benchmarks.md (and, with "suite", the standard
// suite's table, see suite.go). Files are named
// SERVER-SCENARIO-RUN.json; the first server named is the one measured,
// "baseline" the one it is compared with.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

type latency struct {
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p99_9_ms"`
	Max  float64 `json:"max_ms"`
}

type report struct {
	Rate          float64  `json:"rate_target"`
	Sockets       int      `json:"sockets"`
	ConnectErrors int64    `json:"connect_errors"`
	ConnectRate   float64  `json:"connects_per_second"`
	Sent          int64    `json:"sent"`
	Received      int64    `json:"received"`
	Achieved      float64  `json:"rate_achieved"`
	Hibernated    float64  `json:"rooms_hibernated"`
	Lost          int64    `json:"lost"`
	Errors        int64    `json:"errors"`
	Latency       *latency `json:"latency"`
	RSSPerSocket  float64  `json:"server_rss_bytes_per_socket"`
	GoroutinesPer float64  `json:"server_goroutines_per_socket"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "suite" {
		suite(os.Args[2:])
		return
	}
	runs := map[string][]report{} // "server scenario" → runs
	for _, path := range os.Args[1:] {
		parts := strings.SplitN(strings.TrimSuffix(filepath.Base(path), ".json"), "-", 3)
		if len(parts) != 3 {
			fail("bad file name %s: want SERVER-SCENARIO-RUN.json", path)
		}
		key := parts[0] + " " + parts[1]
		runs[key] = append(runs[key], readReport(path))
	}
	median := func(key string, f func(report) float64) (float64, []float64) { return medianOf(runs[key], f) }
	row := func(name, unit, scenario string, lowerBetter bool, f func(report) float64) {
		us, usAll := median("roomgate "+scenario, f)
		base, baseAll := median("baseline "+scenario, f)
		ratio := "–"
		better := 0.0 // how many times better roomgate is
		switch {
		case lowerBetter && us > 0:
			better = base / us
		case !lowerBetter && base > 0:
			better = us / base
		}
		if better > 0 {
			ratio = fmt.Sprintf("%.2f× better", better)
			if better < 1 {
				ratio = fmt.Sprintf("%.2f× worse", 1/better)
			}
		}
		fmt.Printf("| %s | %s %s | %s %s | %s | %s / %s |\n", name, num(us), unit, num(base), unit, ratio, list(usAll), list(baseAll))
	}
	fmt.Printf("Machine: %d CPUs (%s), Go %s, %s. Median of %d runs; all runs in the last column.\n\n",
		runtime.NumCPU(), cpuModel(), strings.TrimPrefix(runtime.Version(), "go"), kernel(), len(runs["roomgate idle"]))
	fmt.Println("| figure | roomgate | baseline (gobwas/ws, goroutine per connection) | ratio | runs: roomgate / baseline |")
	fmt.Println("|---|---|---|---|---|")
	row("idle: server RSS per socket, 10,000 sockets", "B", "idle", true, func(r report) float64 { return r.RSSPerSocket })
	row("idle: server goroutines per socket", "", "idle", true, func(r report) float64 { return r.GoroutinesPer })
	row("idle: connects per second", "/s", "idle", false, func(r report) float64 { return r.ConnectRate })
	row("echo p50, 1,000 sockets at 20,000 msg/s", "ms", "echo", true, func(r report) float64 { return lat(r).P50 })
	row("echo p99", "ms", "echo", true, func(r report) float64 { return lat(r).P99 })
	row("echo p99.9", "ms", "echo", true, func(r report) float64 { return lat(r).P999 })
	row("echo messages lost", "", "echo", true, func(r report) float64 { return float64(r.Lost) })
}

// readReport reads one `roomgate loadtest -json` report.
func readReport(path string) report {
	b, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		fail("%s: %v", path, err)
	}
	return r
}

// medianOf returns the median of f over runs, and every value in order.
func medianOf(runs []report, f func(report) float64) (float64, []float64) {
	var v []float64
	for _, r := range runs {
		v = append(v, f(r))
	}
	sort.Float64s(v)
	if len(v) == 0 {
		return 0, nil
	}
	return v[len(v)/2], v
}

func lat(r report) latency {
	if r.Latency == nil {
		return latency{}
	}
	return *r.Latency
}

func num(v float64) string {
	switch {
	case v > -0.0005 && v < 0.0005:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func list(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = num(x)
	}
	return strings.Join(s, ", ")
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return "Linux " + strings.TrimSpace(string(b))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "benchtable: "+format+"\n", args...)
	os.Exit(1)
}
