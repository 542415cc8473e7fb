package rooms

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs a node for the crash tests when asked to (they kill it),
// and otherwise the tests, failing the package if a goroutine outlives
// them: every goroutine the runtime and its cluster start is waited for
// when Run returns.
func TestMain(m *testing.M) {
	if dir := os.Getenv("ROOMGATE_TEST_NODE"); dir != "" {
		os.Exit(runNode(dir))
	}
	goleak.VerifyTestMain(m)
}
