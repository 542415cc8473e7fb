package rooms

import (
	"encoding/binary"
	"errors"
)

// The node-to-node link protocol. A link is one TCP connection between two
// nodes, upgraded from HTTP on the gateway's listener; both sides send
// frames of [u32 length][body]. Every body carries the same fields in the
// same order, empty ones costing a byte each: one codec, no per-type
// layouts to get wrong.

// linkType says what a link frame is.
type linkType uint8

const (
	// edge → owner
	tConnect linkType = iota + 1 // a socket asks to join (data: its claims): answered by tReply
	tMessage                     // a client message: answered by tAck once its event is done
	tClosed                      // a socket is gone: answered by tAck
	tAsk                         // an admin call (kick, broadcast, delete, request) or an RPC call: answered by tReply
	// owner → edge
	tDeliver // a frame for the sockets in ids
	tClose   // close socket sock
	tAuto    // set socket sock's auto-response (data: request, text: response)
	tProbe   // which of ids does the edge still hold: answered by tReply with the held ones
	// both ways
	tAck
	tReply
	tPing
	linkTypes // one past the last
)

// askKind is the admin call a tAsk carries.
type askKind uint8

const (
	askKick askKind = iota + 1
	askBroadcast
	askDelete
	askRequest
	// askRPC is a call: text the method, data the argument, info.Query
	// the chain of rooms waiting for it, token the nanoseconds the
	// caller still waits. A node of the previous release refuses the
	// frame as malformed (it resets the link and the call fails): call
	// rooms of a mixed cluster only once every node runs this one.
	askRPC
	askKinds // one past the last
)

// linkMsg is one link frame, decoded.
type linkMsg struct {
	typ   linkType
	seq   uint64 // pairs a request with its tAck or tReply
	addr  Addr
	token uint64 // the owner's fencing token, on owner → edge frames
	sock  SocketID
	op    Opcode
	kind  askKind
	code  int         // close code, or an error's code in tAck and tReply
	text  string      // close reason, error message
	info  ConnectInfo // info.Claims travels in data: see tConnect
	ids   []SocketID
	data  []byte
}

// maxLinkFrame bounds one frame: a message of the largest allowed size, or
// an HTTP request for a room, with room to spare. A peer that sends more is
// broken, and the link is closed.
const maxLinkFrame = 64 << 20

// maxLinkIDs bounds the sockets one frame addresses (a broadcast to one
// edge), so a frame cannot make the decoder allocate 8 bytes per byte.
const maxLinkIDs = 1 << 20

var errLinkFrame = errors.New("rooms: malformed link frame")

// appendLinkMsg appends m's frame, length first, to b.
func appendLinkMsg(b []byte, m *linkMsg) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, byte(m.typ))
	b = binary.AppendUvarint(b, m.seq)
	b = appendString(b, m.addr.Class)
	b = appendString(b, m.addr.Room)
	b = binary.AppendUvarint(b, m.token)
	b = binary.AppendUvarint(b, uint64(m.sock))
	b = append(b, byte(m.op), byte(m.kind))
	b = binary.AppendUvarint(b, uint64(m.code))
	b = appendString(b, m.text)
	b = appendString(b, m.info.User.ID)
	b = appendString(b, m.info.User.Name)
	b = appendString(b, m.info.Query)
	b = appendString(b, m.info.RemoteAddr)
	b = binary.AppendUvarint(b, uint64(len(m.ids)))
	for _, id := range m.ids {
		b = binary.AppendUvarint(b, uint64(id))
	}
	b = binary.AppendUvarint(b, uint64(len(m.data)))
	b = append(b, m.data...)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeLinkMsg parses one frame body (without its length). data and the
// strings are copies: the caller's buffer is reused for the next frame.
func decodeLinkMsg(body []byte) (linkMsg, error) {
	d := wireDecoder{b: body}
	var m linkMsg
	m.typ = linkType(d.byte())
	m.seq = d.uvarint()
	m.addr.Class = d.string()
	m.addr.Room = d.string()
	m.token = d.uvarint()
	m.sock = SocketID(d.uvarint())
	m.op = Opcode(d.byte())
	m.kind = askKind(d.byte())
	m.code = int(d.uvarint() & 0xffff_ffff)
	m.text = d.string()
	m.info.User.ID = d.string()
	m.info.User.Name = d.string()
	m.info.Query = d.string()
	m.info.RemoteAddr = d.string()
	if n := d.uvarint(); n > 0 && !d.bad {
		if n > uint64(len(d.b)) || n > maxLinkIDs { // each id takes at least a byte
			return linkMsg{}, errLinkFrame
		}
		m.ids = make([]SocketID, n)
		for i := range m.ids {
			m.ids[i] = SocketID(d.uvarint())
		}
	}
	if data := d.bytes(); data != nil {
		m.data = append([]byte(nil), data...)
	}
	if d.bad || len(d.b) != 0 || m.typ == 0 || m.typ >= linkTypes {
		return linkMsg{}, errLinkFrame
	}
	switch m.typ {
	case tConnect, tMessage, tClosed, tAsk, tDeliver:
		// A room named outside the rules would even break its hash tag
		// in Redis; a peer that sends one is broken.
		if !ValidClass(m.addr.Class) || !ValidRoom(m.addr.Room) {
			return linkMsg{}, errLinkFrame
		}
	}
	if (m.typ == tMessage || m.typ == tDeliver) && m.op != Text && m.op != Binary {
		return linkMsg{}, errLinkFrame
	}
	if m.typ == tAsk && (m.kind == 0 || m.kind >= askKinds || m.kind == askBroadcast && m.op != Text && m.op != Binary) {
		return linkMsg{}, errLinkFrame
	}
	return m, nil
}

type wireDecoder struct {
	b   []byte
	bad bool
}

func (d *wireDecoder) byte() byte {
	if len(d.b) == 0 {
		d.bad = true
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *wireDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *wireDecoder) bytes() []byte {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.b)) {
		d.bad = true
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *wireDecoder) string() string { return string(d.bytes()) }
