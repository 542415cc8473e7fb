package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TLS is terminated in front of the gateway rather than inside it. The
// gateway's sockets live on raw descriptors in its own epoll (detach), and
// a TLS connection's descriptor carries ciphertext: reading it needs
// crypto/tls, which needs a goroutine blocked in Read. So each TLS
// connection gets a Unix socket pair: the gateway serves one end exactly
// like a TCP connection (handshake, detach, epoll, bounded queue, close
// handshake), and a pump with two goroutines copies between the other end
// and the tls.Conn. That keeps one code path for every socket, at the
// price a proxy would charge anyway: per TLS socket two goroutines, a
// read buffer, crypto/tls's record buffers and two more descriptors. Most
// deployments terminate TLS at a proxy (DESIGN §1) and pay none of it.
//
// Backpressure survives the pair: a client that reads nothing blocks the
// pump's tls.Conn.Write, the pair's buffer fills, and the gateway sees
// EAGAIN and queues, up to MaxQueueBytes, as it would on TCP.

// tlsListener accepts TCP connections and returns, for each, the gateway's
// end of its pair at once: the TLS handshake runs on the pump, within the
// gateway's own handshake deadline, so a slow TLS client holds a pending
// handshake slot like a slow HTTP client does.
type tlsListener struct {
	net.Listener // TCP
	config       *tls.Config
	handshake    time.Duration // the TLS handshake's deadline
	grace        time.Duration // after the gateway's end closed, for the client to close its own
	log          *slog.Logger

	mu    sync.Mutex
	conns map[net.Conn]struct{} // TCP connections still pumped, for shutdown
	pumps sync.WaitGroup
}

func newTLSListener(ln net.Listener, config *tls.Config, o *Options) *tlsListener {
	config = config.Clone()
	// net/http sees the pair, not the tls.Conn, so it cannot speak HTTP/2:
	// offer only HTTP/1.1, which also carries the WebSocket upgrade.
	config.NextProtos = []string{"http/1.1"}
	return &tlsListener{
		Listener: ln,
		config:   config,
		// A second more than the gateway's deadline, which started later:
		// a client too slow for both is counted as a handshake timeout.
		handshake: o.HandshakeTimeout + time.Second,
		grace:     o.CloseTimeout,
		log:       o.Logger,
		conns:     make(map[net.Conn]struct{}),
	}
}

// Accept implements net.Listener. It does not block on the client.
func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	inner, outer, err := socketPair()
	if err != nil {
		c.Close()
		return nil, err // out of descriptors: the accept loop backs off
	}
	l.mu.Lock()
	l.conns[c] = struct{}{}
	l.pumps.Add(1)
	l.mu.Unlock()
	go l.pump(tls.Server(c, l.config), outer)
	return &pairConn{UnixConn: inner, local: c.LocalAddr(), remote: c.RemoteAddr()}, nil
}

// pump runs the TLS handshake, then copies both ways until both are done.
// Each direction passes its end on, as TCP would: the client's EOF shuts
// down the pair's write side (the gateway reads EOF), and the gateway's
// close or shutdown sends close_notify and a FIN, after which the client
// has grace to finish before the connection is cut.
func (l *tlsListener) pump(tc *tls.Conn, pipe *net.UnixConn) {
	defer func() {
		tc.Close()
		pipe.Close()
		l.mu.Lock()
		delete(l.conns, tc.NetConn())
		l.mu.Unlock()
		l.pumps.Done()
	}()
	tc.SetDeadline(time.Now().Add(l.handshake))
	if err := tc.Handshake(); err != nil {
		// Scanners and clients that do not trust the certificate end
		// here; the gateway counts the closed pair as a failed handshake.
		l.log.LogAttrs(context.Background(), slog.LevelDebug, "tls handshake", slog.String("remote", tc.RemoteAddr().String()), slog.Any("err", err))
		return
	}
	tc.SetDeadline(time.Time{})
	up := make(chan struct{})
	go func() {
		defer close(up)
		buf := make([]byte, 4<<10)
		// Wrapped, so that neither side's ReadFrom or WriteTo replaces buf.
		io.CopyBuffer(struct{ io.Writer }{pipe}, struct{ io.Reader }{tc}, buf)
		pipe.CloseWrite()
	}()
	closed, err := copyOut(tc, pipe)
	if err == nil {
		tc.SetWriteDeadline(time.Now().Add(l.grace))
		tc.CloseWrite() // close_notify
		if tcp, ok := tc.NetConn().(*net.TCPConn); ok {
			tcp.CloseWrite()
		}
		// After a shutdown the gateway reads on until the client hangs up
		// (a failed connection, RFC 6455 §7.1.7); after a close there is
		// no one left to read, and TCP would end here too.
		tc.SetReadDeadline(time.Now().Add(l.grace))
	}
	if err != nil || closed {
		tc.NetConn().Close() // stop reading the client too
	}
	<-up
}

// tlsWriteStall bounds how long the pump waits for a TLS client to take
// one chunk of output. The gateway's own bounds see the pair, not the
// client: once the gateway has closed its end, a client that never reads
// would otherwise hold the pump and its connection forever.
const tlsWriteStall = 30 * time.Second

// copyOut copies what the gateway writes on its end of the pair to the
// client. It waits for input without a buffer, borrowing one from the
// pool only to read what is there, so an idle socket pins none. It
// returns a nil error once the gateway closed its end (closed) or shut
// down its writes.
func copyOut(tc *tls.Conn, pipe *net.UnixConn) (closed bool, err error) {
	raw, err := pipe.SyscallConn()
	if err != nil {
		return false, err
	}
	for {
		var buf []byte
		var n int
		var rerr error
		err := raw.Read(func(fd uintptr) bool {
			b := getReadBuffer()
			for {
				n, rerr = unix.Read(int(fd), b[:cap(b)])
				if rerr != unix.EINTR {
					break
				}
			}
			if rerr == unix.EAGAIN {
				putReadBuffer(b)
				return false // nothing yet: wait for input, holding no buffer
			}
			buf = b
			return true
		})
		if err == nil {
			err = rerr
		}
		if err != nil || n <= 0 {
			putReadBuffer(buf)
			if errors.Is(err, unix.ECONNRESET) {
				return true, nil
			}
			if err != nil {
				return false, err
			}
			return hungUp(raw), nil
		}
		tc.SetWriteDeadline(time.Now().Add(tlsWriteStall))
		_, err = tc.Write(buf[:n])
		putReadBuffer(buf)
		if err != nil {
			return false, err
		}
	}
}

// hungUp reports whether the other end of a Unix stream socket is closed,
// not only shut down for writing: the kernel then reports POLLHUP.
func hungUp(raw syscall.RawConn) bool {
	hup := false
	raw.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if n, _ := unix.Poll(pfd, 0); n > 0 {
			hup = pfd[0].Revents&unix.POLLHUP != 0
		}
	})
	return hup
}

// shutdown waits, up to grace, for the pumps to finish on their own (the
// gateway has closed every socket by now, so they are passing on the last
// bytes and close_notify), then cuts the connections left and waits again.
func (l *tlsListener) shutdown() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.pumps.Wait()
	}()
	select {
	case <-done:
		return
	case <-time.After(l.grace):
	}
	l.mu.Lock()
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	<-done
}

// pairConn is the gateway's end of a TLS connection's pair. It reports the
// TCP connection's addresses, so admission, logs and the per-IP limits see
// the client, and it is a syscall.Conn, so an upgraded socket detaches as
// a TCP one does.
type pairConn struct {
	*net.UnixConn
	local, remote net.Addr
}

func (c *pairConn) LocalAddr() net.Addr  { return c.local }
func (c *pairConn) RemoteAddr() net.Addr { return c.remote }

// socketPair returns the two ends of a new Unix stream socket pair.
func socketPair() (inner, outer *net.UnixConn, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	if inner, err = fileConn(fds[0]); err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	if outer, err = fileConn(fds[1]); err != nil {
		inner.Close()
		return nil, nil, err
	}
	return inner, outer, nil
}

// fileConn wraps fd in a *net.UnixConn and closes fd: net.FileConn
// registers a duplicate with Go's network poller.
func fileConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "tls-pair")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}
