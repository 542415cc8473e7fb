package testkit

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"
)

// StartProcess starts cmd and kills it (SIGKILL) when the test ends, if it
// still runs, and waits for it. A test that stops it earlier, by a signal
// and cmd.Wait, may.
func StartProcess(tb testing.TB, cmd *exec.Cmd) {
	tb.Helper()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// StartNode runs the roomgate binary bin with args, with env added to
// this process's environment, and returns once it answers GET /readyz on
// addr with 200; it is killed when the test ends. Its stderr is the
// test's. A binary built with -race stops at its first data race, so the
// test fails instead of the report going unnoticed in its output.
func StartNode(tb testing.TB, bin, addr string, env []string, args ...string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "GORACE=halt_on_error=1"), env...)
	cmd.Stderr = os.Stderr
	StartProcess(tb, cmd)
	WaitReady(tb, "http://"+addr+"/readyz", 20*time.Second)
	return cmd
}

// WaitReady polls GET url until it answers 200.
func WaitReady(tb testing.TB, url string, within time.Duration) {
	tb.Helper()
	Eventually(tb, within, func() error {
		resp, err := http.Get(url)
		if err != nil {
			return fmt.Errorf("GET %s: %w", url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	})
}
