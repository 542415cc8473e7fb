package testkit

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// pollEvery is how often Eventually, WaitFor and WaitBlocked look again.
const pollEvery = 10 * time.Millisecond

// Eventually calls f until it returns nil, and fails the test with f's
// last error when within passes first. f is called at once, then every
// 10 ms.
func Eventually(tb testing.TB, within time.Duration, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(pollEvery)
	}
}

// WaitFor is Eventually for a condition with nothing to report but
// whether it holds: what names it in the failure.
func WaitFor(tb testing.TB, within time.Duration, what string, ok func() bool) {
	tb.Helper()
	Eventually(tb, within, func() error {
		if !ok() {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		return nil
	})
}

// WaitBlocked waits until some goroutine running fn (a part of a function
// name as a stack trace prints it, such as "(*cluster).place") is blocked
// in state (as a stack trace's header prints it, such as
// "sync.Mutex.Lock" or "chan receive"). It is for the moment a test must
// act while another goroutine waits on a lock, which nothing else shows.
func WaitBlocked(tb testing.TB, within time.Duration, fn, state string) {
	tb.Helper()
	Eventually(tb, within, func() error {
		for _, g := range bytes.Split(stacks(), []byte("\n\n")) {
			header, body, _ := strings.Cut(string(g), "\n")
			if strings.Contains(header, "["+state) && strings.Contains(body, fn) {
				return nil
			}
		}
		return fmt.Errorf("no goroutine in %s is blocked in %s", fn, state)
	})
}

// stacks is every goroutine's stack trace.
func stacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}
