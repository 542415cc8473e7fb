package loadtest

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/gobwas/ws"
)

// wsConn is one harness socket with the buffers it reuses, so the harness's
// own allocations stay out of the measurement.
type wsConn struct {
	c    net.Conn
	r    io.Reader
	wbuf []byte
	rbuf []byte
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
	var r io.Reader = c
	if br != nil {
		r = io.MultiReader(br, c) // frames that arrived with the handshake response
	}
	return &wsConn{c: c, r: bufio.NewReaderSize(r, 4096)}, nil
}

// write sends one masked client frame.
func (w *wsConn) write(op ws.OpCode, payload []byte) error {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(payload))}
	w.wbuf = w.wbuf[:0]
	w.wbuf = appendClientHeader(w.wbuf, h)
	start := len(w.wbuf)
	w.wbuf = append(w.wbuf, payload...)
	ws.Cipher(w.wbuf[start:], h.Mask, 0)
	_, err := w.c.Write(w.wbuf)
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
// Fragmented messages are not expected from the server and are an error.
func (w *wsConn) read() (ws.OpCode, []byte, error) {
	for {
		h, err := ws.ReadHeader(w.r)
		if err != nil {
			return 0, nil, err
		}
		if h.Length > 64<<20 {
			return 0, nil, fmt.Errorf("server frame of %d bytes", h.Length)
		}
		if int64(cap(w.rbuf)) < h.Length {
			w.rbuf = make([]byte, h.Length)
		}
		p := w.rbuf[:h.Length]
		if _, err := io.ReadFull(w.r, p); err != nil {
			return 0, nil, err
		}
		switch h.OpCode {
		case ws.OpText, ws.OpBinary:
			if !h.Fin {
				return 0, nil, errors.New("fragmented server message")
			}
			return h.OpCode, p, nil
		case ws.OpPing:
			if err := w.write(ws.OpPong, p); err != nil {
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

func (w *wsConn) close() {
	w.write(ws.OpClose, []byte{0x03, 0xe8}) // 1000
	w.c.Close()
}
