package gateway

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkRPCOverREST is POST /v1/rooms/stub/bench/rpc/increment, a
// method that writes a key, through one room on the embedded store, from
// one HTTP/1.1 client or 32 in parallel, with keep-alive (dev mode: no
// token to verify). Each answer leaves once the call's write is synced.
// Target: 5,000 calls/s on 2 cores.
func BenchmarkRPCOverREST(b *testing.B) {
	for _, callers := range []int{1, 32} {
		b.Run(map[int]string{1: "sequential", 32: "32-callers"}[callers], func(b *testing.B) { benchmarkRPCOverREST(b, callers) })
	}
}

func benchmarkRPCOverREST(b *testing.B, callers int) {
	ts := rpcServer(b, Options{})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers, MaxConnsPerHost: callers}}
	defer client.CloseIdleConnections()
	url := ts.http + "/v1/rooms/stub/bench/rpc/increment"
	post := func() error {
		req, _ := http.NewRequest("POST", url, strings.NewReader("1"))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	if err := post(); err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var all []time.Duration
	b.SetParallelism(max(1, callers/2)) // × GOMAXPROCS (2 here) goroutines
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	if callers == 1 {
		for b.Loop() {
			t0 := time.Now()
			if err := post(); err != nil {
				b.Fatal(err)
			}
			all = append(all, time.Since(t0))
		}
	} else {
		b.RunParallel(func(pb *testing.PB) {
			var own []time.Duration
			for pb.Next() {
				t0 := time.Now()
				if err := post(); err != nil {
					b.Error(err)
					return
				}
				own = append(own, time.Since(t0))
			}
			mu.Lock()
			all = append(all, own...)
			mu.Unlock()
		})
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "calls/s")
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	}
}
