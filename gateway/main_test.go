package gateway

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// TestRunWaitsForHTTPHandlers: a page handler runs on a goroutine net/http
// started for the gateway, so Run returns only once it has finished, even
// when it takes a while to notice that its request's context ended.
func TestRunWaitsForHTTPHandlers(t *testing.T) {
	entered := make(chan struct{})
	var finished atomic.Bool
	ts := startServer(t, Options{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		time.Sleep(100 * time.Millisecond) // winding down: Run's drain takes far less without sockets
		finished.Store(true)
	})})
	c, err := net.Dial("tcp", strings.TrimPrefix(ts.http, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /page HTTP/1.1\r\nHost: roomgate\r\n\r\n")
	<-entered
	ts.stop(t)
	if !finished.Load() {
		t.Error("Run returned while a page handler was still running")
	}
}
