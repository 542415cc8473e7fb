package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/internal/testkit"
)

// logTail keeps a process's stderr for the test to search, and passes it
// on to the test's own.
type logTail struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	return os.Stderr.Write(p)
}

func (l *logTail) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

// startTLSNode runs roomgate with -tls-cert and -tls-key and waits until
// it answers /readyz over HTTPS.
func startTLSNode(t *testing.T, addr, certFile, keyFile string, client *tls.Config) (*exec.Cmd, *logTail) {
	t.Helper()
	logs := &logTail{}
	cmd := exec.Command(binary, "-addr", addr, "-data", t.TempDir(), "-tls-cert", certFile, "-tls-key", keyFile)
	cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	cmd.Stderr = logs
	testkit.StartProcess(t, cmd)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: client}, Timeout: 5 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	testkit.Eventually(t, 20*time.Second, func() error {
		resp, err := hc.Get("https://" + addr + "/readyz")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /readyz: %s", resp.Status)
		}
		return nil
	})
	return cmd, logs
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	// Write and rename, as a certificate manager does, so the node never
	// reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func echo(t *testing.T, c io.ReadWriter, msg string) {
	t.Helper()
	if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
	c.(interface{ SetReadDeadline(time.Time) error }).SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := wsutil.ReadServerText(c)
	if err != nil || string(got) != msg {
		t.Fatalf("echo of %q: %q, %v", msg, got, err)
	}
}

// TestTLSCertificateReloadsOnSIGHUP: a node serves WSS with -tls-cert and
// -tls-key; the files are replaced and SIGHUP sent; new handshakes get the
// new certificate while a socket opened before stays open and echoes. A
// reload that fails is logged and keeps the certificate in use.
func TestTLSCertificateReloadsOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	firstCert, firstKey := testkit.SelfSignedCert(t, "first")
	secondCert, secondKey := testkit.SelfSignedCert(t, "second")
	writeFile(t, certFile, firstCert)
	writeFile(t, keyFile, firstKey)
	client := testkit.TrustOnly(t, firstCert, secondCert)
	addr := testkit.FreeAddr(t)
	node, logs := startTLSNode(t, addr, certFile, keyFile, client)

	old, peer := testkit.DialTLS(t, "wss://"+addr+"/ws/echo/kept", client)
	if peer.Subject.CommonName != "first" {
		t.Fatalf("the node presents %q, want the first certificate", peer.Subject.CommonName)
	}
	echo(t, old, "before the reload")

	writeFile(t, certFile, secondCert)
	writeFile(t, keyFile, secondKey)
	node.Process.Signal(syscall.SIGHUP)
	testkit.WaitFor(t, 10*time.Second, "the reload to be logged", func() bool { return logs.count("tls certificate reloaded") == 1 })
	fresh, peer := testkit.DialTLS(t, "wss://"+addr+"/ws/echo/fresh", client)
	if peer.Subject.CommonName != "second" {
		t.Fatalf("after SIGHUP a new handshake gets %q, want the second certificate", peer.Subject.CommonName)
	}
	echo(t, fresh, "new certificate")
	echo(t, old, "after the reload") // the socket from before is still open

	// A broken file: the reload fails, and the node keeps the second pair.
	writeFile(t, certFile, []byte("not a certificate"))
	node.Process.Signal(syscall.SIGHUP)
	testkit.WaitFor(t, 10*time.Second, "the failed reload to be logged", func() bool { return logs.count("tls certificate reload failed") == 1 })
	if _, peer := testkit.DialTLS(t, "wss://"+addr+"/ws/echo/after-failure", client); peer.Subject.CommonName != "second" {
		t.Fatalf("after a failed reload a new handshake gets %q, want the second certificate still", peer.Subject.CommonName)
	}
	echo(t, old, "after the failed reload")
	echo(t, fresh, "after the failed reload")
	if err := node.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the node is gone after SIGHUP: %v", err)
	}
}

// TestTLSFlagsAreChecked: the pair goes together, must load, and is not
// yet combined with -redis, whose node-to-node links dial plain HTTP.
func TestTLSFlagsAreChecked(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := testkit.SelfSignedCert(t, "flags")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, certPEM)
	writeFile(t, keyFile, keyPEM)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"cert without key", []string{"-tls-cert", certFile}, "go together"},
		{"key without cert", []string{"-tls-key", keyFile}, "go together"},
		{"key that is no key", []string{"-tls-cert", certFile, "-tls-key", certFile}, "-tls-cert/-tls-key"},
		{"missing file", []string{"-tls-cert", filepath.Join(dir, "none.pem"), "-tls-key", keyFile}, "no such file"},
		{"with redis", []string{"-tls-cert", certFile, "-tls-key", keyFile, "-redis", "redis://127.0.0.1:1"}, "-redis"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, append([]string{"-addr", "127.0.0.1:0"}, tc.args...)...)
			cmd.Dir = t.TempDir() // the default -data is ./data
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("got %v and %q, want a failure mentioning %q", err, out, tc.want)
			}
		})
	}
}

// TestBrowserChatOverTLS: the chat page served over HTTPS connects its
// socket over WSS (client.js follows the page's scheme) to the same
// listener, and two tabs talk.
func TestBrowserChatOverTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := testkit.SelfSignedCert(t, "browser")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, certPEM)
	writeFile(t, keyFile, keyPEM)
	addr := testkit.FreeAddr(t)
	startTLSNode(t, addr, certFile, keyFile, testkit.TrustOnly(t, certPEM))
	// The certificate is self-signed; the browser is told to take it.
	b := browser(t, chromedp.Flag("ignore-certificate-errors", true))
	alice := tab(t, b, "https://"+addr+"/chat/?room=secure&name=alice")
	bob := tab(t, b, "https://"+addr+"/chat/?room=secure&name=bob")
	run(t, alice, waitJS(`document.querySelector('[data-testid=members]').innerText.includes('bob')`))
	run(t, alice, say("over tls"))
	run(t, bob, waitJS(`document.querySelector('[data-testid=messages]').innerText.includes('alice: over tls')`))
}
