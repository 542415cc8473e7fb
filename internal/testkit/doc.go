// Package testkit holds the helpers the tests of every package share, so
// that each exists once: polling until a condition holds, free loopback
// addresses, dialing a WebSocket and reading its frames as a client, and
// running a process (a roomgate node, a test binary in another role) for
// the length of a test.
//
// Tests do not sleep to synchronize: they poll with Eventually or WaitFor
// for the state they need, or wait with WaitBlocked for a goroutine to
// reach a lock. A sleep is left only where time itself must pass (a
// negative check, pacing), with a comment saying so.
//
// testkit imports no project package, so the tests of any package, the
// package's own (internal) tests included, may import it without a cycle.
// Every helper takes a testing.TB, calls tb.Helper and releases what it
// opened with tb.Cleanup.
package testkit
