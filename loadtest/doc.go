// Package loadtest is Roomgate's load harness, run as `roomgate loadtest`.
//
// It speaks only the public wire protocol (DESIGN §1): WebSocket frames to
// /ws/{class}/{room} and the Prometheus text at /metrics. It imports no
// other Roomgate package, so it can load any deployment, or any server that
// speaks the same protocol, such as the goroutine-per-connection baseline in
// loadtest/baseline that the benchmarks compare against.
//
// Latency is measured open-loop: every message has an intended send time on
// a fixed schedule, and latency runs from that time, not from when the
// harness got around to sending. A stalled server therefore shows up as
// latency instead of silently lowering the send rate (no coordinated
// omission). Results are HDR histograms.
//
// Run is safe to call from one goroutine at a time; every run is bounded by
// its Options and by ctx.
package loadtest
