package roomgate_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a goroutine outlives the tests: a Server's
// Run waits for everything it started, and a failed New leaves nothing
// running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
