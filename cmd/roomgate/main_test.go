package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/loadtest"
)

// binary is roomgate, built once for the subprocess tests so signals and
// exits are real.
var binary string

func TestMain(m *testing.M) {
	loadtest.ServeWorker() // the test binary doubles as the harness's worker processes
	dir, err := os.MkdirTemp("", "roomgate-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "roomgate")
	out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build roomgate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// start runs roomgate with args and env and waits until it answers /readyz
// on addr. It is built with -race: a data race stops it at once.
func start(tb testing.TB, addr string, env []string, args ...string) *exec.Cmd {
	tb.Helper()
	return testkit.StartNode(tb, binary, addr, env, args...)
}

// startNode starts one node on its own data directory and returns its
// address once it is ready.
func startNode(t *testing.T, flags ...string) string {
	t.Helper()
	addr := testkit.FreeAddr(t)
	start(t, addr, nil, append([]string{"-addr", addr, "-data", t.TempDir()}, flags...)...)
	return addr
}

func TestSIGTERMClosesSocketsWith1012AndExits(t *testing.T) {
	addr := testkit.FreeAddr(t)
	cmd := start(t, addr, nil, "-addr", addr, "-data", t.TempDir())
	c := testkit.Dial(t, "ws://"+addr+"/ws/echo/term")
	wsutil.WriteClientText(c, []byte("before"))
	if got, err := wsutil.ReadServerText(c); err != nil || string(got) != "before" {
		t.Fatalf("echo: %q %v", got, err)
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	testkit.ExpectClose(t, c, 1012) // DESIGN §1: node draining, reconnect
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("roomgate did not exit within 10 s of SIGTERM")
	}
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}

func TestEnvironmentAndFlagPrecedence(t *testing.T) {
	addr := testkit.FreeAddr(t)
	// The environment sets the address and a small message limit...
	start(t, addr, []string{"ROOMGATE_ADDR=" + addr, "ROOMGATE_MAX_MESSAGE_BYTES=200"}, "-data", t.TempDir())
	c := testkit.Dial(t, "ws://"+addr+"/ws/echo/env")
	wsutil.WriteClientText(c, []byte(strings.Repeat("x", 201)))
	_, err := wsutil.ReadServerText(c)
	var ce wsutil.ClosedError
	if !errors.As(err, &ce) || ce.Code != 1009 {
		t.Fatalf("201 bytes with ROOMGATE_MAX_MESSAGE_BYTES=200: %v, want close 1009", err)
	}

	// ...and a flag beats the environment.
	addr2 := testkit.FreeAddr(t)
	start(t, addr2, []string{"ROOMGATE_ADDR=127.0.0.1:1", "ROOMGATE_MAX_MESSAGE_BYTES=200"}, "-addr", addr2, "-max-message-bytes", "1000", "-data", t.TempDir())
	c2 := testkit.Dial(t, "ws://"+addr2+"/ws/echo/flag")
	wsutil.WriteClientText(c2, []byte(strings.Repeat("x", 500)))
	if got, err := wsutil.ReadServerText(c2); err != nil || len(got) != 500 {
		t.Fatalf("500 bytes with -max-message-bytes 1000: %d bytes, %v", len(got), err)
	}
}

func TestBadFlagsAndCommands(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, nil, "unknown command"},
		{"bad number", []string{"-max-message-bytes", "many"}, nil, "invalid value"},
		{"bad env", nil, []string{"ROOMGATE_MAX_MESSAGE_BYTES=many"}, "ROOMGATE_MAX_MESSAGE_BYTES"},
		{"limit below a control frame", []string{"-max-message-bytes", "10"}, nil, "MaxMessageBytes"},
		{"negative room quota", []string{"-max-room-bytes", "-1"}, nil, "negative option"},
		{"bad room creation rate", nil, []string{"ROOMGATE_ROOM_CREATES_PER_IP=fast"}, "ROOMGATE_ROOM_CREATES_PER_IP"},
		{"stray argument", []string{"serve", "extra"}, nil, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			cmd.Dir = t.TempDir() // the default -data is ./data
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("got %v and %q, want a failure mentioning %q", err, out, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "roomgate ") {
		t.Fatalf("version: %q %v", out, err)
	}
}
