package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

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

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs roomgate with args and env and waits until it answers /readyz.
func start(tb testing.TB, addr string, env []string, args ...string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(binary, args...)
	// A data race stops the node at once (it is built with -race), so the
	// test fails instead of the report going unnoticed in its stderr.
	cmd.Env = append(append(os.Environ(), "GORACE=halt_on_error=1"), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("roomgate on %s not ready: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startNode starts one node on its own data directory and returns its
// address once it is ready.
func startNode(t *testing.T, flags ...string) string {
	t.Helper()
	addr := freeAddr(t)
	start(t, addr, nil, append([]string{"-addr", addr, "-data", t.TempDir()}, flags...)...)
	return addr
}

func TestSIGTERMClosesSocketsWith1012AndExits(t *testing.T) {
	addr := freeAddr(t)
	cmd := start(t, addr, nil, "-addr", addr, "-data", t.TempDir())
	c, _, _, err := ws.Dial(context.Background(), "ws://"+addr+"/ws/echo/term")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wsutil.WriteClientText(c, []byte("before"))
	if got, err := wsutil.ReadServerText(c); err != nil || string(got) != "before" {
		t.Fatalf("echo: %q %v", got, err)
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	// Read frames by hand: gobwas/ws's client helpers reject 1012, which
	// browsers accept (DESIGN §1: node draining, reconnect).
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := ws.ReadFrame(c)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := ws.ParseCloseFrameData(f.Payload); f.Header.OpCode != ws.OpClose || code != 1012 {
		t.Fatalf("after SIGTERM got %v %d, want close 1012", f.Header.OpCode, code)
	}
	ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewCloseFrame(f.Payload[:2])))
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
	addr := freeAddr(t)
	// The environment sets the address and a small message limit...
	start(t, addr, []string{"ROOMGATE_ADDR=" + addr, "ROOMGATE_MAX_MESSAGE_BYTES=200"}, "-data", t.TempDir())
	c, _, _, err := ws.Dial(context.Background(), "ws://"+addr+"/ws/echo/env")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wsutil.WriteClientText(c, []byte(strings.Repeat("x", 201)))
	_, err = wsutil.ReadServerText(c)
	var ce wsutil.ClosedError
	if !errors.As(err, &ce) || ce.Code != 1009 {
		t.Fatalf("201 bytes with ROOMGATE_MAX_MESSAGE_BYTES=200: %v, want close 1009", err)
	}

	// ...and a flag beats the environment.
	addr2 := freeAddr(t)
	start(t, addr2, []string{"ROOMGATE_ADDR=127.0.0.1:1", "ROOMGATE_MAX_MESSAGE_BYTES=200"}, "-addr", addr2, "-max-message-bytes", "1000", "-data", t.TempDir())
	c2, _, _, err := ws.Dial(context.Background(), "ws://"+addr2+"/ws/echo/flag")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
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
