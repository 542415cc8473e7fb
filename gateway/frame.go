package gateway

import (
	"encoding/binary"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// The frame codec works on byte slices instead of gobwas/ws's io.Reader API
// because a socket here is read without blocking: a read may end in the middle
// of a header, and decodeHeader must say "not yet" instead of waiting. The
// tests check it against ws.ReadHeader byte for byte.

// errShortHeader means b does not yet hold a whole header.
var errShortHeader = errors.New("gateway: incomplete frame header")

// decodeHeader parses the frame header at the start of b and returns it with
// its length in bytes. It returns errShortHeader when more bytes are needed
// and ws.ErrHeaderLengthMSB for a 64-bit length with its top bit set.
func decodeHeader(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, errShortHeader
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	l := b[1] & 0x7f
	n = 2
	switch l {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h.Masked {
		n += 4
	}
	if len(b) < n {
		return h, 0, errShortHeader
	}
	switch l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		if b[2]&0x80 != 0 {
			return h, 0, ws.ErrHeaderLengthMSB
		}
		h.Length = int64(binary.BigEndian.Uint64(b[2:]))
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[n-4:n])
	}
	return h, n, nil
}

// maxServerHeader is the longest header a server frame (never masked) needs.
const maxServerHeader = 10

// appendHeader appends the header of an unmasked, final server frame.
func appendHeader(dst []byte, op ws.OpCode, length int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case length < 126:
		return append(dst, b0, byte(length))
	case length <= 0xffff:
		return append(dst, b0, 126, byte(length>>8), byte(length))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(length))
	}
}

// maxCloseReason is what fits a control frame after the 2-byte code (RFC 6455 §5.5).
const maxCloseReason = ws.MaxControlFramePayloadSize - 2

// closeBody is the payload of a close frame. A code that may not go on the
// wire becomes 1011; a reason is made valid UTF-8 and cut at a rune
// boundary to fit a control frame.
func closeBody(code int, reason string) []byte {
	if !validCloseCode(code) {
		code = closeInternal
	}
	reason = strings.ToValidUTF8(reason, "")
	if len(reason) > maxCloseReason {
		reason = reason[:maxCloseReason]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	b := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(b, uint16(code))
	return append(b, reason...)
}

// Close codes the gateway sends (DESIGN §1).
const (
	closeNormal         = 1000
	closeProtocolError  = 1002
	closeNoStatus       = 1005 // never sent: reported when the peer's close frame had no code
	closeAbnormal       = 1006 // never sent: reported when the connection dropped
	closeInvalidPayload = 1007
	closePolicy         = 1008
	closeTooBig         = 1009
	closeInternal       = 1011
	closeDraining       = 1012 // "service restart" in IANA's registry: DESIGN §1's node draining, reconnect
)

// validCloseCode reports whether code may appear in a close frame: the codes
// RFC 6455 and IANA define for the wire, and the 3000–4999 application range.
// gobwas/ws's check predates 1012–1014, which drain and proxies use.
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	default:
		return code >= 3000 && code <= 4999
	}
}
