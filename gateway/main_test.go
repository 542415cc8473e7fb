package gateway

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests. It also lets this
// test binary double as the client process of the hibernation test: 10,000
// server sockets and their 10,000 client sockets do not fit one process's
// 20,000 descriptors.
func TestMain(m *testing.M) {
	if os.Getenv("ROOMGATE_TEST_CLIENTS") != "" {
		os.Exit(runClients())
	}
	goleak.VerifyTestMain(m)
}
