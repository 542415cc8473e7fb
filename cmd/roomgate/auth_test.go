package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/gobwas/ws"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/loadtest"
)

const tokenSecret = "cmd-test-secret-cmd-test-secret-0123"

// mintCLI runs `roomgate token` with args and env and returns the token.
func mintCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"token"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("roomgate token %v: %v\n%s", args, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// welcome opens a chat socket with path and returns who the room says it is.
func welcome(t *testing.T, addr, path string) (id, name string) {
	t.Helper()
	c := testkit.Dial(t, "ws://"+addr+path)
	b, _, err := testkit.ReadData(t, c)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Type string
		You  struct{ ID, Name string }
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Type != "welcome" {
		t.Fatalf("first message %s: %v", b, err)
	}
	return m.You.ID, m.You.Name
}

// refusal dials path and returns the HTTP status of the refusal.
func refusal(t *testing.T, addr, path string) int {
	t.Helper()
	_, _, _, err := ws.Dial(context.Background(), "ws://"+addr+path)
	var se ws.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("dial %s: %v, want a refusal", path, err)
	}
	return int(se)
}

func adminGet(t *testing.T, url, tok string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestTokenOpensASocket: a token minted by `roomgate token` with the
// secret of a node opens a socket there as its user; none, or one for
// other rooms, does not; only an admin token calls the admin API.
func TestTokenOpensASocket(t *testing.T) {
	env := []string{"ROOMGATE_JWT_SECRET=" + tokenSecret}
	addr := testkit.FreeAddr(t)
	start(t, addr, env, "-addr", addr, "-data", t.TempDir())
	tok := mintCLI(t, env, "-sub", "alice", "-name", "Alice", "-rooms", "chat/*", "-ttl", "1h", "-claim", "role=admin", "-claim-json", "level=3")
	if id, name := welcome(t, addr, "/ws/chat/lobby?token="+tok+"&user=mallory"); id != "alice" || name != "Alice" {
		t.Fatalf("the room sees %q %q, want alice Alice", id, name)
	}
	if st := refusal(t, addr, "/ws/chat/lobby?user=alice"); st != 401 {
		t.Fatalf("no token: %d, want 401", st)
	}
	if st := refusal(t, addr, "/ws/echo/x?token="+tok); st != 403 {
		t.Fatalf("a chat token for echo: %d, want 403", st)
	}
	other := mintCLI(t, []string{"ROOMGATE_JWT_SECRET=" + strings.Repeat("x", 40)}, "-sub", "alice", "-rooms", "*")
	if st := refusal(t, addr, "/ws/chat/lobby?token="+other); st != 401 {
		t.Fatalf("a token signed with another secret: %d, want 401", st)
	}

	classes := "http://" + addr + "/v1/classes"
	if st := adminGet(t, classes, ""); st != 401 {
		t.Fatalf("admin API without a token, from loopback: %d, want 401", st)
	}
	if st := adminGet(t, classes, tok); st != 403 {
		t.Fatalf("admin API with a user token: %d, want 403", st)
	}
	admin := mintCLI(t, env, "-sub", "ops", "-admin", "-ttl", "5m")
	if st := adminGet(t, classes, admin); st != 200 {
		t.Fatalf("admin API with an admin token: %d, want 200", st)
	}
	if st := adminGet(t, "http://"+addr+"/metrics", ""); st != 200 {
		t.Fatalf("/metrics: %d, want 200", st)
	}
}

// TestTokenFromAKeyPairAndJWKS: a node that trusts a public key, and one
// that trusts a JWKS served by the test, both admit a token minted with
// the private key.
func TestTokenFromAKeyPairAndJWKS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	privDER, _ := x509.MarshalPKCS8PrivateKey(key)
	pubDER, _ := x509.MarshalPKIXPublicKey(key.Public())
	privFile, pubFile := filepath.Join(dir, "key.pem"), filepath.Join(dir, "pub.pem")
	os.WriteFile(privFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600)
	os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)

	addr := startNode(t, "-jwt-public-key", pubFile, "-jwt-issuer", "https://id.example")
	tok := mintCLI(t, nil, "-sub", "bob", "-rooms", "chat/x", "-jwt-private-key", privFile, "-jwt-issuer", "https://id.example")
	if id, name := welcome(t, addr, "/ws/chat/x?token="+tok); id != "bob" || name != "bob" {
		t.Fatalf("the room sees %q %q, want bob bob", id, name)
	}
	noIssuer := mintCLI(t, nil, "-sub", "bob", "-rooms", "chat/x", "-jwt-private-key", privFile)
	if st := refusal(t, addr, "/ws/chat/x?token="+noIssuer); st != 401 {
		t.Fatalf("a token without the issuer: %d, want 401", st)
	}

	jwk, err := jwkset.NewJWKFromKey(key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k1", ALG: jwkset.AlgES256}})
	if err != nil {
		t.Fatal(err)
	}
	set := jwkset.NewMemoryStorage()
	set.KeyWrite(context.Background(), jwk)
	body, _ := set.JSONPublic(context.Background())
	var mu sync.Mutex
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Write(body)
	}))
	t.Cleanup(jwks.Close)
	addr = startNode(t, "-jwt-jwks-url", jwks.URL) // ready only once the keys are fetched
	tok = mintCLI(t, nil, "-sub", "carol", "-rooms", "chat/*", "-jwt-private-key", privFile, "-kid", "k1")
	if id, _ := welcome(t, addr, "/ws/chat/y?token="+tok); id != "carol" {
		t.Fatalf("the room sees %q, want carol", id)
	}
}

// TestAuthFlagsFailAtStart: a bad key or a flag that makes no sense
// alone stops the node at once, naming the flag.
func TestAuthFlagsFailAtStart(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	priv := filepath.Join(dir, "key.pem")
	os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"short secret", []string{"-jwt-secret", "hunter2"}, nil, "-jwt-secret"},
		{"short secret from the environment", nil, []string{"ROOMGATE_JWT_SECRET=hunter2"}, "-jwt-secret"},
		{"missing public key file", []string{"-jwt-public-key", filepath.Join(dir, "nope.pem")}, nil, "-jwt-public-key"},
		{"a private key as the public key", []string{"-jwt-public-key", priv}, nil, "-jwt-public-key"},
		{"JWKS in clear", []string{"-jwt-jwks-url", "http://id.example/.well-known/jwks.json"}, nil, "-jwt-jwks-url"},
		{"issuer without a key", []string{"-jwt-issuer", "https://id.example"}, nil, "-jwt-issuer"},
		{"audience without a key", []string{"-jwt-audience", "roomgate"}, nil, "-jwt-audience"},
		{"token without -sub", []string{"token", "-jwt-secret", tokenSecret}, nil, "-sub"},
		{"token without a key", []string{"token", "-sub", "a"}, nil, "-jwt-secret"},
		{"token with two keys", []string{"token", "-sub", "a", "-jwt-secret", tokenSecret, "-jwt-private-key", priv}, nil, "-jwt-private-key"},
		{"token with a short secret", []string{"token", "-sub", "a", "-jwt-secret", "x"}, nil, "-jwt-secret"},
		{"token claiming sub", []string{"token", "-sub", "a", "-jwt-secret", tokenSecret, "-claim", "sub=b"}, nil, "-claim"},
		{"token with a bad pattern", []string{"token", "-sub", "a", "-jwt-secret", tokenSecret, "-rooms", "chat/l*"}, nil, "-rooms"},
		{"token with bad JSON", []string{"token", "-sub", "a", "-jwt-secret", tokenSecret, "-claim-json", "n={"}, nil, "-claim-json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if len(args) == 0 || args[0] != "token" {
				args = append([]string{"-addr", testkit.FreeAddr(t), "-data", t.TempDir()}, args...)
			}
			cmd := exec.Command(binary, args...)
			cmd.Env = append(os.Environ(), tc.env...)
			done := make(chan struct{})
			var out []byte
			var err error
			go func() { out, err = cmd.CombinedOutput(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("still running after 20s: %s", out)
			}
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("got %v and %q, want a failure naming %s", err, out, tc.want)
			}
		})
	}
}

// TestAuthDevModeWarns: a node without a key says loudly what that means.
func TestAuthDevModeWarns(t *testing.T) {
	addr := testkit.FreeAddr(t)
	cmd := exec.Command(binary, "-addr", addr, "-data", t.TempDir())
	var stderr syncWriter
	cmd.Stderr = &stderr
	testkit.StartProcess(t, cmd)
	testkit.WaitReady(t, "http://"+addr+"/readyz", 20*time.Second)
	testkit.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(stderr.String(), "DEV MODE") {
			return errors.New("no dev mode warning in the log")
		}
		return nil
	})
	if !strings.Contains(stderr.String(), "level=WARN") {
		t.Fatalf("the warning is not a warning:\n%s", stderr.String())
	}

	secretAddr := testkit.FreeAddr(t)
	quiet := exec.Command(binary, "-addr", secretAddr, "-data", t.TempDir(), "-jwt-secret", tokenSecret)
	var quietErr syncWriter
	quiet.Stderr = &quietErr
	testkit.StartProcess(t, quiet)
	testkit.WaitReady(t, "http://"+secretAddr+"/readyz", 20*time.Second)
	testkit.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(quietErr.String(), "roomgate listening") {
			return errors.New("not started")
		}
		return nil
	})
	if log := quietErr.String(); strings.Contains(log, "DEV MODE") || strings.Contains(log, tokenSecret) {
		t.Fatalf("a node with a secret warns of dev mode or logs its secret:\n%s", log)
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestLoadtestJWT: the harness's -jwt-secret mints a token per socket that
// a node with the same secret admits.
func TestLoadtestJWT(t *testing.T) {
	addr := startNode(t, "-jwt-secret", tokenSecret)
	r, err := loadtest.Run(context.Background(), loadtest.Options{
		Scenario: "echo", Target: "http://" + addr, Sockets: 20, Rate: 100,
		Warmup: 200 * time.Millisecond, Duration: 500 * time.Millisecond, JWTSecret: tokenSecret,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors != 0 || r.Received == 0 {
		t.Fatalf("echo with tokens: received %d, errors %d", r.Received, r.Errors)
	}
	if _, err := loadtest.Run(context.Background(), loadtest.Options{
		Scenario: "echo", Target: "http://" + addr, Sockets: 2, Rate: 10, Duration: 200 * time.Millisecond,
		JWTSecret: strings.Repeat("w", 32), DialTimeout: time.Second,
	}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a wrong secret: %v, want a 401 refusal", err)
	}
}
