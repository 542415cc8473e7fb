package roomgate_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/internal/testkit"
)

// appMain is DESIGN §4's main in an application of its own: a poll class
// beside the built-ins.
const appMain = `package main

import (
	"context"
	"strconv"
	"strings"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/rooms"
)

// Poll counts votes: a client sends an option's name, and every socket in
// the room gets the tally.
type Poll struct{ tally map[string]int }

func (p *Poll) OnStart(ctx context.Context, r *rooms.Room) error {
	p.tally = map[string]int{}
	kvs, err := r.Storage().List(ctx, rooms.ListOptions{Prefix: "vote/"})
	for _, kv := range kvs {
		p.tally[strings.TrimPrefix(kv.Key, "vote/")], _ = strconv.Atoi(string(kv.Value))
	}
	return err
}

func (p *Poll) OnConnect(ctx context.Context, r *rooms.Room, c *rooms.Conn) error {
	return c.SendJSON(p.tally)
}

func (p *Poll) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	option := string(f.Data)
	p.tally[option]++
	if err := r.Storage().Put("vote/"+option, []byte(strconv.Itoa(p.tally[option]))); err != nil {
		return err
	}
	return r.BroadcastJSON(p.tally)
}

func main() {
	roomgate.Main(
		roomgate.Builtins(),
		roomgate.Class("poll", func() rooms.Handler { return new(Poll) }),
	)
}
`

// TestOwnBinaryOutsideTheModule is issue 15's "done when": a program in a
// fresh module, with a replace to this checkout, builds with DESIGN §4's
// main and serves its class beside the built-ins, with the roomgate
// binary's flags, REST API and commands.
func TestOwnBinaryOutsideTheModule(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a program of its own")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	root, err := filepath.Abs(".") // the package's directory is the module root
	if err != nil {
		t.Fatal(err)
	}
	goVersion := goDirective(t, filepath.Join(root, "go.mod"))
	app := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(app, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/app\n\ngo "+goVersion+"\n\n"+
		"require github.com/roomgate/roomgate v0.0.0-00010101000000-000000000000\n\n"+
		"replace github.com/roomgate/roomgate => "+root+"\n")
	// Roomgate's own checksums: tidy then needs no checksum database.
	sums, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	write("go.sum", string(sums))
	write("main.go", appMain)

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	gocmd := func(env []string, args ...string) error {
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir = app
		cmd.Env = append(os.Environ(), append([]string{"GOWORK=off", "GOFLAGS=-mod=mod"}, env...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return err
	}
	// The module cache holds what Roomgate's own build needed; the module
	// proxy is the fallback.
	if gocmd([]string{"GOPROXY=off"}, "mod", "tidy") != nil {
		if err := gocmd(nil, "mod", "tidy"); err != nil {
			t.Fatal("go mod tidy failed, offline and through the proxy")
		}
	}
	bin := filepath.Join(app, "app")
	start := time.Now()
	if err := gocmd(nil, "build", "-o", bin, "."); err != nil {
		t.Fatal("go build failed")
	}
	t.Logf("built in %v", time.Since(start).Round(time.Millisecond))

	addr := testkit.FreeAddr(t)
	testkit.StartNode(t, bin, addr, []string{"ROOMGATE_MAX_MESSAGE_BYTES=4096"}, "-addr", addr, "-data", t.TempDir())

	poll := testkit.Dial(t, "ws://"+addr+"/ws/poll/lunch")
	read := func() string {
		t.Helper()
		poll.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := wsutil.ReadServerText(poll)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		return string(b)
	}
	if got := read(); got != "{}" {
		t.Fatalf("poll on connect: %s, want {}", got)
	}
	for _, want := range []string{`{"soup":1}`, `{"soup":2}`} {
		wsutil.WriteClientText(poll, []byte("soup"))
		if got := read(); got != want {
			t.Fatalf("poll after a vote: %s, want %s", got, want)
		}
	}
	roundTrip(t, testkit.Dial(t, "ws://"+addr+"/ws/echo/lunch"), "beside the built-ins", "beside the built-ins")

	if code, body := get(t, "http://"+addr+"/v1/classes"); code != 200 || !strings.Contains(body, `"poll"`) || !strings.Contains(body, `"chat"`) {
		t.Errorf("GET /v1/classes: %d %s, want poll beside chat", code, body)
	}
	// ROOMGATE_MAX_MESSAGE_BYTES reached the gateway: a larger message closes.
	big := testkit.Dial(t, "ws://"+addr+"/ws/echo/big")
	wsutil.WriteClientText(big, []byte(strings.Repeat("x", 5000)))
	testkit.ExpectClose(t, big, 1009)

	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil || string(out) != "roomgate dev\n" {
		t.Errorf("app version: %q %v, want \"roomgate dev\" (a replace by a directory)", out, err)
	}
	if out, err := exec.CommandContext(ctx, bin, "frobnicate").CombinedOutput(); exitCode(err) != 2 || !strings.Contains(string(out), "unknown command") {
		t.Errorf("app frobnicate: exit %d, %q; want 2 and the usage", exitCode(err), out)
	}
}

// goDirective reads the go line of a go.mod.
func goDirective(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s has no go line", path)
	return ""
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
