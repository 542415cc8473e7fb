package loadtest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// wsConn is one harness socket with the buffers it reuses, so the harness's
// own allocations stay out of the measurement. Bytes read but not yet
// parsed wait in in[head:]; the blocking read and the epoll readers
// (readers.go) share that buffer and the frame parser (next).
type wsConn struct {
	c    net.Conn
	wbuf []byte
	in   []byte
	head int
	fd   int // the socket's descriptor, for the epoll readers
}

// dial opens a WebSocket to url within timeout, from local when it is set.
func dial(ctx context.Context, url string, timeout time.Duration, local net.IP) (*wsConn, error) {
	d := ws.Dialer{Timeout: timeout}
	if local != nil {
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: local}}
		d.NetDial = nd.DialContext
	}
	c, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	w := &wsConn{c: c, in: make([]byte, 0, 512), fd: -1}
	if br != nil { // frames that arrived with the handshake response
		b, _ := br.Peek(br.Buffered())
		w.in = append(w.in, b...)
		ws.PutReader(br)
	}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) { w.fd = int(fd) })
		}
	}
	return w, nil
}

// write sends one masked client frame.
func (w *wsConn) write(op ws.OpCode, payload []byte) error { return w.writeWith(&w.wbuf, op, payload) }

// writeWith sends one masked frame built in *buf. The sender and the
// reader (which answers pings) each build in their own buffer; the
// connection itself takes concurrent whole writes.
func (w *wsConn) writeWith(buf *[]byte, op ws.OpCode, payload []byte) error {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(payload))}
	b := appendClientHeader((*buf)[:0], h)
	start := len(b)
	b = append(b, payload...)
	ws.Cipher(b[start:], h.Mask, 0)
	*buf = b
	_, err := w.c.Write(b)
	return err
}

func appendClientHeader(b []byte, h ws.Header) []byte {
	b0 := byte(0x80) | byte(h.OpCode)
	switch n := h.Length; {
	case n < 126:
		b = append(b, b0, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, b0, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, b0, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, h.Mask[:]...)
}

// errClosed is a close frame from the server; code says why.
type errClosed struct{ code int }

func (e errClosed) Error() string { return fmt.Sprintf("closed by server with %d", e.code) }

// read returns the next data frame's payload, valid until the next read.
// It blocks; the epoll readers call next themselves.
func (w *wsConn) read() (ws.OpCode, []byte, error) {
	for {
		op, p, err := w.next()
		if err != nil || p != nil {
			return op, p, err
		}
		if err := w.fill(); err != nil {
			return 0, nil, err
		}
	}
}

// fill reads what the socket has into the buffer, blocking until it has
// something.
func (w *wsConn) fill() error {
	w.compact()
	n, err := w.c.Read(w.in[len(w.in):cap(w.in)])
	w.in = w.in[:len(w.in)+n]
	if n > 0 {
		return nil
	}
	return err
}

// compact moves the unparsed bytes to the front, growing the buffer when
// it is full.
func (w *wsConn) compact() {
	if w.head > 0 {
		n := copy(w.in, w.in[w.head:])
		w.in, w.head = w.in[:n], 0
	}
	if len(w.in) == cap(w.in) {
		w.in = append(w.in, make([]byte, cap(w.in))...)[:len(w.in)]
	}
}

// next parses the next complete frame in the buffer: a data frame's
// payload, nil when more bytes are needed, or an error (a close frame is
// errClosed). Pings are answered here.
func (w *wsConn) next() (ws.OpCode, []byte, error) {
	for {
		b := w.in[w.head:]
		if len(b) < 2 {
			return 0, nil, nil
		}
		fin, op := b[0]&0x80 != 0, ws.OpCode(b[0]&0x0f)
		masked, n, hl := b[1]&0x80 != 0, int64(b[1]&0x7f), 2
		switch n {
		case 126:
			if len(b) < 4 {
				return 0, nil, nil
			}
			n, hl = int64(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			if len(b) < 10 {
				return 0, nil, nil
			}
			n, hl = int64(binary.BigEndian.Uint64(b[2:])), 10
		}
		if n > 64<<20 {
			return 0, nil, fmt.Errorf("server frame of %d bytes", n)
		}
		if masked {
			hl += 4
		}
		if int64(len(b)) < int64(hl)+n {
			if need := hl + int(n); need > cap(w.in) {
				grown := make([]byte, len(b), need+512)
				copy(grown, b)
				w.in, w.head = grown, 0
			}
			return 0, nil, nil
		}
		p := b[hl : int64(hl)+n]
		if masked {
			ws.Cipher(p, [4]byte(b[hl-4:hl]), 0)
		}
		w.head += hl + int(n)
		switch op {
		case ws.OpText, ws.OpBinary:
			if !fin {
				return 0, nil, errors.New("fragmented server message")
			}
			return op, p, nil
		case ws.OpPing:
			var pong []byte
			if err := w.writeWith(&pong, ws.OpPong, p); err != nil {
				return 0, nil, err
			}
		case ws.OpClose:
			code := 1005
			if len(p) >= 2 {
				code = int(binary.BigEndian.Uint16(p))
			}
			return 0, nil, errClosed{code}
		}
	}
}

// close says goodbye (1000) and closes; a target that stopped reading
// gets a second to take the close frame.
func (w *wsConn) close() {
	w.c.SetWriteDeadline(time.Now().Add(time.Second))
	w.write(ws.OpClose, []byte{0x03, 0xe8}) // 1000
	w.c.Close()
}

// abort closes the socket without a word: it ends a write blocked on a
// target that stopped reading.
func (w *wsConn) abort() { w.c.Close() }
