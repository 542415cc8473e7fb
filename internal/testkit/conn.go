package testkit

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// ioWait bounds every read ReadData, ExpectClose and ExpectEOF make, so a
// server that says nothing fails the test instead of hanging it.
const ioWait = 10 * time.Second

// FreeAddr returns a loopback address ("127.0.0.1:port") that was free a
// moment ago, for a process the test starts to listen on. A test that
// listens itself should listen on 127.0.0.1:0 instead.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(tb)))
}

// FreePort is FreeAddr's port.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Dial opens a WebSocket to url (ws://host:port/path) as a client, closed
// when the test ends.
func Dial(tb testing.TB, url string) net.Conn {
	tb.Helper()
	c, err := DialContext(context.Background(), url)
	if err != nil {
		tb.Fatalf("dial %s: %v", url, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// DialContext is Dial for a caller that handles the error itself, such as
// a client that reconnects; the caller closes the connection.
func DialContext(ctx context.Context, url string) (net.Conn, error) {
	c, br, _, err := ws.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	if br != nil {
		// Frames that came in the same read as the 101 (a greeting, or a
		// refusal's close frame) wait in br.
		return &bufferedConn{Conn: c, r: br}, nil
	}
	return c, nil
}

// bufferedConn reads what the handshake's reader buffered before the
// connection itself.
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ReadData reads the next data message a server sent on c, answering its
// pings. A close frame comes back as a wsutil.ClosedError. It waits 10 s
// at most.
func ReadData(tb testing.TB, c net.Conn) ([]byte, ws.OpCode, error) {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(ioWait))
	defer c.SetReadDeadline(time.Time{})
	return wsutil.ReadServerData(c)
}

// ExpectClose reads until the server's close frame, answers it as a client
// must, and checks its code. It parses frames itself: gobwas/ws's client
// helpers refuse codes newer than their table, such as 1012, which
// browsers accept.
func ExpectClose(tb testing.TB, c net.Conn, want int) {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(ioWait))
	defer c.SetReadDeadline(time.Time{})
	for {
		f, err := ws.ReadFrame(c)
		if err != nil {
			tb.Fatalf("waiting for close %d: %v", want, err)
		}
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		code, reason := ws.ParseCloseFrameData(f.Payload)
		ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewCloseFrame(f.Payload[:min(len(f.Payload), 2)])))
		if int(code) != want {
			tb.Fatalf("close code = %d (%q), want %d", code, reason, want)
		}
		return
	}
}

// ExpectEOF checks that the server closes the TCP connection, within 10 s.
func ExpectEOF(tb testing.TB, c net.Conn) {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(ioWait))
	_, err := io.Copy(io.Discard, c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		tb.Fatalf("waiting for EOF: %v", err)
	}
}
