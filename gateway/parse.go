package gateway

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// inbound is a socket's unfinished input. It exists only between a read that
// ended inside a frame or a fragmented message and the read that completes
// it, so an idle socket holds none (DESIGN §3.4).
type inbound struct {
	buf    []byte    // read but not yet parsed: at most one partial frame
	frag   []byte    // payload of the fragmented message so far
	fragOp ws.OpCode // opcode of its first frame; 0 outside a fragmented message
}

// frameSink receives what parseFrames finds. Payloads are unmasked in place
// and valid only during the call.
type frameSink interface {
	message(op ws.OpCode, data []byte)
	control(op ws.OpCode, payload []byte)
}

// protocolError fails the connection with a close code; kind labels the
// roomgate_bad_input_total counter.
type protocolError struct {
	code   int
	kind   string
	reason string
}

var (
	errMaskRequired = &protocolError{closeProtocolError, "protocol", "client frames must be masked"}
	errBadFrame     = &protocolError{closeProtocolError, "protocol", "malformed frame"}
	errBadUTF8      = &protocolError{closeInvalidPayload, "utf8", "text is not valid UTF-8"}
	errTooBig       = &protocolError{closeTooBig, "too_big", "message too big"}
	errBadClose     = &protocolError{closeProtocolError, "protocol", "malformed close frame"}
	errBadCloseUTF8 = &protocolError{closeInvalidPayload, "utf8", "close reason is not valid UTF-8"}
)

// parseFrames consumes the complete frames at the start of b, reassembling
// fragmented messages in in.frag, and returns how many bytes it consumed.
// want is the total size of the partial frame left at b[consumed:] when its
// header is known (0 otherwise), so the caller can grow its buffer as bytes
// arrive, never ahead of them. limit bounds a message's payload (1009); it is
// checked against the declared length as soon as a header arrives, before
// the payload is buffered. frames counts every frame consumed.
func parseFrames(b []byte, in *inbound, limit int, sink frameSink) (consumed, want, frames int, perr *protocolError) {
	for {
		h, hlen, err := decodeHeader(b[consumed:])
		if err == errShortHeader {
			return consumed, 0, frames, nil
		}
		if err != nil {
			return consumed, 0, frames, errBadFrame
		}
		state := ws.StateServerSide
		if in.fragOp != 0 {
			state = state.Set(ws.StateFragmented)
		}
		if err := ws.CheckHeader(h, state); err != nil {
			if err == ws.ErrProtocolMaskRequired {
				return consumed, 0, frames, errMaskRequired
			}
			return consumed, 0, frames, errBadFrame
		}
		if !h.OpCode.IsControl() && h.Length > int64(limit-len(in.frag)) {
			return consumed, 0, frames, errTooBig
		}
		end := consumed + hlen + int(h.Length)
		if end > len(b) {
			return consumed, end - consumed, frames, nil
		}
		payload := b[consumed+hlen : end]
		ws.Cipher(payload, h.Mask, 0)
		consumed = end
		frames++

		if h.OpCode.IsControl() {
			if h.OpCode == ws.OpClose {
				if perr := checkClose(payload); perr != nil {
					return consumed, 0, frames, perr
				}
			}
			sink.control(h.OpCode, payload)
			continue
		}

		op := h.OpCode
		if op == ws.OpContinuation || !h.Fin {
			if op != ws.OpContinuation {
				in.fragOp = op
			}
			in.frag = append(in.frag, payload...)
			if !h.Fin {
				continue
			}
			op, payload = in.fragOp, in.frag
		}
		if op == ws.OpText && !utf8.Valid(payload) {
			return consumed, 0, frames, errBadUTF8
		}
		sink.message(op, payload)
		if in.fragOp != 0 {
			in.frag, in.fragOp = nil, 0
		}
	}
}

// checkClose validates a close frame's payload: empty, or a code that may
// appear on the wire followed by a UTF-8 reason (RFC 6455 §7.4).
func checkClose(payload []byte) *protocolError {
	switch {
	case len(payload) == 0:
		return nil
	case len(payload) == 1, !validCloseCode(int(binary.BigEndian.Uint16(payload))):
		return errBadClose
	case !utf8.Valid(payload[2:]):
		return errBadCloseUTF8
	}
	return nil
}
