package testkit

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fatalTB records a helper's failure instead of ending the test, so the
// failing path can be checked. Fatalf stops the helper's goroutine as the
// real one does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// failure runs helper on a fatalTB in a goroutine of its own and returns
// what it failed with, "" when it passed.
func failure(t *testing.T, helper func(tb testing.TB)) string {
	t.Helper()
	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); helper(tb) }()
	<-done
	return tb.msg
}

func TestEventually(t *testing.T) {
	calls := 0
	Eventually(t, 5*time.Second, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("f called %d times, want 3: until it returned nil", calls)
	}
	msg := failure(t, func(tb testing.TB) {
		Eventually(tb, 30*time.Millisecond, func() error { return errors.New("never") })
	})
	if msg != "after 30ms: never" {
		t.Fatalf("failure %q, want the deadline and f's last error", msg)
	}
	if msg := failure(t, func(tb testing.TB) { WaitFor(tb, 30*time.Millisecond, "the sky to fall", func() bool { return false }) }); msg != "after 30ms: timed out waiting for the sky to fall" {
		t.Fatalf("WaitFor's failure %q", msg)
	}
}

func TestWaitBlocked(t *testing.T) {
	var mu sync.Mutex
	mu.Lock()
	locked := make(chan struct{})
	go lockTwice(&mu, locked)
	WaitBlocked(t, 5*time.Second, "testkit.lockTwice", "sync.Mutex.Lock")
	mu.Unlock()
	<-locked
	if msg := failure(t, func(tb testing.TB) { WaitBlocked(tb, 30*time.Millisecond, "testkit.lockTwice", "sync.Mutex.Lock") }); !strings.Contains(msg, "no goroutine in testkit.lockTwice") {
		t.Fatalf("with nothing blocked: %q", msg)
	}
}

func lockTwice(mu *sync.Mutex, locked chan struct{}) {
	mu.Lock()
	mu.Unlock()
	close(locked)
}
