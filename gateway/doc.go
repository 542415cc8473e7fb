// Package gateway is Roomgate's edge: it accepts connections, upgrades
// WebSockets with gobwas/ws, reads and writes their frames, and serves the
// HTTP routes around them (/healthz, /readyz, /metrics, and whatever
// Options.Handler serves). It holds a rooms.Router and never parses a
// room's messages.
//
// # Usage
//
//	srv, err := gateway.New(gateway.Options{Router: rt, Metrics: reg})
//	if err != nil { ... }
//	err = srv.Run(ctx) // serves until ctx ends, then drains
//
// # Design
//
// An upgraded socket's descriptor leaves Go's network poller (see detach)
// and joins one of the gateway's edge-triggered epoll instances. Idle, a
// socket is a small struct and a table slot: no goroutine, no buffer. A
// bounded pool of workers waits in epoll_wait; the kernel wakes one when a
// socket is ready, and that worker reads, parses and delivers the socket's
// complete messages with a pooled buffer. Writes go straight to the kernel
// and queue only what it refuses, in a per-socket queue bounded by
// MaxQueueBytes. docs/gateway.md walks through it.
//
// # Concurrency
//
// New, Run and Addr may be called from any goroutine; Run once. The
// rooms.Socket handed to the Router is safe for concurrent use. The Router's
// methods are called from many goroutines, but for one socket never at once
// and always in order: Connect, then each Message, then Closed.
//
// # Goroutines
//
// New starts none. Run starts them all and returns once all have exited:
// the accept loop, the janitor, net/http's Serve and drain under an
// errgroup (drain waits for the two it starts); one worker per epoll
// instance; and, counted by the Server, one per handshake (hsWait), per
// plain-HTTP connection (httpServing) and per close timer that fires
// (closeTimers). An idle socket has none, unless Options.TLS is set: then
// each connection has a pump of two goroutines (tls.go), which Run waits
// for last.
//
// # Lock order
//
// The gateway's locks nest one way only: a socket's wmu (socket.go) may be
// held while taking a poller's mu (poller.go), because ending a socket
// under wmu queues its reader (terminateLocked, kickReader, push).
// Otherwise:
//   - poller.mu, fdTable.mu (fdtable.go), Server.hsMu (server.go) and
//     ipShard.mu (iptable.go) are leaves: nothing else is locked while
//     one is held.
//   - no goroutine holds two sockets' wmu at once.
//   - no gateway lock is held while calling the Router, Admin, Ready or
//     Options.Handler. The Router may call a socket's methods, which take
//     its wmu, with its own locks held, so the whole order is: the rooms
//     runtime's locks, then socket.wmu, then poller.mu.
//
// Prometheus collectors take their own locks under wmu; they are leaves.
package gateway
