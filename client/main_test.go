package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/client"
	"github.com/roomgate/roomgate/internal/testkit"
)

// binary is roomgate, built once: the client is tested against a real
// node over real HTTP, as a backend would call it.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "roomgate-client-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "roomgate")
	// Not -race: the node's races are its own tests' to find (cmd/roomgate
	// builds it so), and on a shared machine the build is the slow part.
	out, err := exec.Command("go", "build", "-o", binary, "github.com/roomgate/roomgate/cmd/roomgate").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build roomgate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// secret signs the tokens of a node started with a key (at least 32 bytes).
const secret = "client-test-secret-0123456789abcdef"

// node is a roomgate process the test started.
type node struct {
	addr string // 127.0.0.1:port
	url  string // http://127.0.0.1:port
	key  bool   // started with -jwt-secret
}

// startNode runs a node on a free port with its own data directory, in
// dev mode or, with key, checking tokens signed with secret.
func startNode(t *testing.T, key bool) *node {
	t.Helper()
	addr := testkit.FreeAddr(t)
	var env []string
	if key {
		env = []string{"ROOMGATE_JWT_SECRET=" + secret}
	}
	testkit.StartNode(t, binary, addr, env, "-addr", addr, "-data", t.TempDir(), "-log-level", "warn")
	return &node{addr: addr, url: "http://" + addr, key: key}
}

// token mints a token with roomgate token and args, signed with secret.
func token(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"token", "-ttl", "10m"}, args...)...)
	cmd.Env = append(os.Environ(), "ROOMGATE_JWT_SECRET="+secret)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("roomgate token %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// newClient returns a client of n; with a key, an admin's.
func (n *node) client(t *testing.T) *client.Client {
	t.Helper()
	var o client.Options
	if n.key {
		o.Token = token(t, "-sub", "ops", "-admin")
	}
	return mustNew(t, n.url, o)
}

func mustNew(t *testing.T, url string, o client.Options) *client.Client {
	t.Helper()
	c, err := client.New(url, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dial opens a socket to class/room as user (dev mode) or with tok.
func (n *node) dial(t *testing.T, class, room, user, tok string) net.Conn {
	t.Helper()
	q := "?user=" + user + "&name=" + user
	if tok != "" {
		q = "?token=" + tok
	}
	return testkit.Dial(t, "ws://"+n.addr+"/ws/"+class+"/"+room+q)
}

// next reads frames from c until one that match accepts, and returns it.
func next(t *testing.T, c net.Conn, what string, match func(data []byte, op ws.OpCode) bool) []byte {
	t.Helper()
	for {
		data, op, err := testkit.ReadData(t, c)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(data, op) {
			return data
		}
	}
}

// nextType reads chat frames until one of type typ.
func nextType(t *testing.T, c net.Conn, typ string) map[string]any {
	t.Helper()
	var v map[string]any
	next(t, c, typ, func(data []byte, op ws.OpCode) bool {
		v = nil
		return json.Unmarshal(data, &v) == nil && v["type"] == typ
	})
	return v
}

// say sends a chat message and waits for it to come back, committed.
func say(t *testing.T, c net.Conn, text string) {
	t.Helper()
	msg, _ := json.Marshal(map[string]string{"type": "say", "text": text})
	if err := wsutil.WriteClientText(c, msg); err != nil {
		t.Fatal(err)
	}
	next(t, c, "message "+text, func(data []byte, op ws.OpCode) bool {
		return bytes.Contains(data, []byte(`"text":"`+text+`"`))
	})
}

// ctx is a test's context, bounded so a hung call fails the test.
func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
