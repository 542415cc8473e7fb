package gateway

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/internal/testkit"
)

// startTLSServer runs a gateway that serves TLS with a fresh self-signed
// certificate, and returns a client config that trusts exactly it.
func startTLSServer(t *testing.T, o Options) (*testServer, *tls.Config) {
	t.Helper()
	certPEM, keyPEM := testkit.SelfSignedCert(t, "gateway-test")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	o.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	return startServer(t, o), testkit.TrustOnly(t, certPEM)
}

func addrOfTS(ts *testServer) string { return strings.TrimPrefix(ts.http, "http://") }

// TestTLSServesWSSAndHTTPS: one listener serves WebSockets over TLS (small
// and large messages, through the socket pair and back) and HTTPS for the
// other routes, where the REST API still sees the loopback client, not
// the pair. HTTP/2 is not offered, since net/http serves the pair.
func TestTLSServesWSSAndHTTPS(t *testing.T) {
	ts, client := startTLSServer(t, Options{})
	c, _ := testkit.DialTLS(t, "wss://"+addrOfTS(ts)+"/ws/echo/secure", client)
	for _, msg := range [][]byte{[]byte("hello over tls"), bytes.Repeat([]byte{7}, 3*readBufferSize+5)} {
		if err := wsutil.WriteClientBinary(c, msg); err != nil {
			t.Fatal(err)
		}
		got, _, err := testkit.ReadData(t, c)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes: got %d bytes, %v", len(msg), len(got), err)
		}
	}

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: client, ForceAttemptHTTP2: true}}
	defer hc.CloseIdleConnections()
	for _, path := range []string{"/healthz", "/v1/classes"} {
		resp, err := hc.Get("https://" + addrOfTS(ts) + path)
		if err != nil {
			t.Fatalf("GET %s over TLS: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/1.1" {
			t.Errorf("GET %s over TLS: %s %s, want 200 over HTTP/1.1", path, resp.Proto, resp.Status)
		}
	}

	// The client closes: the close frame comes back, then the server ends
	// the connection, and the socket is reported closed.
	if err := ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "done")))); err != nil {
		t.Fatal(err)
	}
	testkit.ExpectEOF(t, c)
	testkit.WaitFor(t, 5*time.Second, "the socket to be reported closed", func() bool { return ts.openCount.Load() == 0 })
}

// TestTLSDrainClosesWith1012: draining reaches a TLS socket's client as a
// 1012 close frame, and Run returns once it answered: no pump is left
// behind (goleak checks the whole package).
func TestTLSDrainClosesWith1012(t *testing.T) {
	ts, client := startTLSServer(t, Options{})
	c, _ := testkit.DialTLS(t, "wss://"+addrOfTS(ts)+"/ws/echo/drain", client)
	wsutil.WriteClientText(c, []byte("before"))
	if got, _, err := testkit.ReadData(t, c); err != nil || string(got) != "before" {
		t.Fatalf("echo: %q %v", got, err)
	}
	ts.cancel()
	testkit.ExpectClose(t, c, closeDraining)
	ts.stop(t)
}

// TestTLSPlainHTTPIsAFailedHandshake: a plain HTTP request to the TLS
// listener gets no answer, and counts as a failed handshake.
func TestTLSPlainHTTPIsAFailedHandshake(t *testing.T) {
	ts, _ := startTLSServer(t, Options{})
	c, err := net.Dial("tcp", addrOfTS(ts))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, _ := io.ReadAll(c); bytes.Contains(b, []byte("HTTP/1.1")) {
		t.Fatalf("plain HTTP on the TLS port was answered: %q", b)
	}
	testkit.WaitFor(t, 5*time.Second, "the failed handshake to be counted", func() bool { return ts.badInput("handshake") == 1 })
}

// TestTLSSlowConsumerIsClosed: a TLS client that sends and never reads
// fills the pump, then the pair, then the socket's bounded queue, and is
// closed as a slow consumer, as on TCP: the pair keeps backpressure.
func TestTLSSlowConsumerIsClosed(t *testing.T) {
	ts, client := startTLSServer(t, Options{MaxQueueBytes: 64 << 10})
	c, _ := testkit.DialTLS(t, "wss://"+addrOfTS(ts)+"/ws/echo/slow", client)
	done := make(chan struct{})
	go func() {
		defer close(done)
		msg := bytes.Repeat([]byte("x"), 16<<10)
		c.SetWriteDeadline(time.Now().Add(20 * time.Second))
		for range 2000 { // 32 MiB: more than every buffer on the way holds
			if wsutil.WriteClientBinary(c, msg) != nil {
				return
			}
		}
	}()
	testkit.WaitFor(t, 20*time.Second, "a slow_consumer close", func() bool { return ts.badInput("slow_consumer") == 1 })
	c.Close()
	<-done
}

// TestTLSProtocolErrorFailsTheConnection: a frame that breaks the protocol
// fails a TLS connection as it fails a TCP one: the close frame, then the
// end of the stream once the client hangs up, the pump passing on the
// gateway's half-close.
func TestTLSProtocolErrorFailsTheConnection(t *testing.T) {
	ts, client := startTLSServer(t, Options{})
	c, _ := testkit.DialTLS(t, "wss://"+addrOfTS(ts)+"/ws/echo/broken", client)
	if err := ws.WriteFrame(c, ws.NewTextFrame([]byte("unmasked"))); err != nil {
		t.Fatal(err)
	}
	testkit.ExpectClose(t, c, 1002)
	testkit.ExpectEOF(t, c)
	c.Close() // the gateway reads on until the client hangs up
	testkit.WaitFor(t, 5*time.Second, "the socket to be reported closed", func() bool { return ts.openCount.Load() == 0 })
}
