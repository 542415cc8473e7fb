package gateway

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// decodeHeader must agree with gobwas/ws's ReadHeader on every input.
func checkDecodeHeader(t *testing.T, b []byte) {
	t.Helper()
	h, n, err := decodeHeader(b)
	r := bytes.NewReader(b)
	want, wantErr := ws.ReadHeader(r)
	wantN := len(b) - r.Len() // not ws.HeaderSize: a peer may use a longer length encoding than needed
	switch {
	case errors.Is(wantErr, io.EOF), errors.Is(wantErr, io.ErrUnexpectedEOF):
		if err != errShortHeader {
			t.Fatalf("decodeHeader(%x) = %v, want errShortHeader", b, err)
		}
	case wantErr != nil:
		if err == nil {
			t.Fatalf("decodeHeader(%x) accepted what ws.ReadHeader refuses: %v", b, wantErr)
		}
	default:
		if err != nil || h != want {
			t.Fatalf("decodeHeader(%x) = %+v, %v; ws.ReadHeader = %+v", b, h, err, want)
		}
		if n != wantN {
			t.Fatalf("decodeHeader(%x) length %d, want %d", b, n, wantN)
		}
	}
}

func TestDecodeHeaderMatchesGobwas(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, r.IntN(16))
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		checkDecodeHeader(t, b)
	}
}

func TestAppendHeaderMatchesGobwas(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xffff, 0x10000, 1 << 20} {
		for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong} {
			var want bytes.Buffer
			ws.WriteHeader(&want, ws.Header{Fin: true, OpCode: op, Length: int64(n)})
			if got := appendHeader(nil, op, n); !bytes.Equal(got, want.Bytes()) {
				t.Errorf("appendHeader(%v, %d) = %x, want %x", op, n, got, want.Bytes())
			}
		}
	}
}

func TestCloseBodyCutsAtRuneBoundary(t *testing.T) {
	reason := string(bytes.Repeat([]byte("é"), 100)) // 200 bytes
	b := closeBody(1008, reason)
	if len(b) > ws.MaxControlFramePayloadSize || !utf8.Valid(b[2:]) {
		t.Fatalf("close body of %d bytes, valid UTF-8 %v", len(b), utf8.Valid(b[2:]))
	}
}

// recorder is a frameSink that keeps what it gets.
type recorder struct{ events []string }

var opNames = map[ws.OpCode]string{ws.OpText: "Text", ws.OpBinary: "Binary", ws.OpClose: "Close", ws.OpPing: "Ping", ws.OpPong: "Pong"}

func (r *recorder) message(op ws.OpCode, data []byte) {
	r.events = append(r.events, "msg "+opNames[op]+" "+string(data))
}

func (r *recorder) control(op ws.OpCode, payload []byte) {
	r.events = append(r.events, "ctl "+opNames[op]+" "+string(payload))
}

// parseChunks feeds input to parseFrames in the given pieces, keeping the
// unconsumed tail between calls as a socket does, and returns the events and
// the first protocol error.
func parseChunks(limit int, chunks ...[]byte) ([]string, *protocolError) {
	var in inbound
	var rec recorder
	var buf []byte
	for _, c := range chunks {
		buf = append(buf, c...)
		consumed, _, _, perr := parseFrames(buf, &in, limit, &rec)
		if perr != nil {
			return rec.events, perr
		}
		buf = append(buf[:0], buf[consumed:]...)
	}
	return rec.events, nil
}

// clientFrames encodes messages as masked client frames, each split into
// up to parts fragments.
func clientFrames(msgs [][]byte, ops []ws.OpCode, parts int) []byte {
	var out bytes.Buffer
	for i, m := range msgs {
		n := max(1, min(parts, len(m)))
		step := (len(m) + n - 1) / max(n, 1)
		for j := 0; j == 0 || j*step < len(m); j++ {
			op := ops[i]
			if j > 0 {
				op = ws.OpContinuation
			}
			end := min(len(m), (j+1)*step)
			f := ws.NewFrame(op, end == len(m), bytes.Clone(m[j*step:end]))
			ws.WriteFrame(&out, ws.MaskFrameInPlace(f))
			if end == len(m) {
				break
			}
		}
	}
	return out.Bytes()
}

// FuzzParseFrames feeds arbitrary bytes to the frame parser, whole and in
// two halves: it must never panic, must report the same events and error
// both ways, and must never deliver a message over the limit or invalid
// UTF-8 text.
func FuzzParseFrames(f *testing.F) {
	f.Add(clientFrames([][]byte{[]byte("hello")}, []ws.OpCode{ws.OpText}, 1), 3)
	f.Add(clientFrames([][]byte{[]byte("fragmented text"), {1, 2, 3}}, []ws.OpCode{ws.OpText, ws.OpBinary}, 3), 7)
	f.Add(clientFrames([][]byte{bytes.Repeat([]byte("x"), 300)}, []ws.OpCode{ws.OpBinary}, 1), 2)
	f.Add(masked(ws.OpPing, true, []byte("ping")), 1)
	f.Add(masked(ws.OpClose, true, []byte{3, 232, 'o', 'k'}), 4)
	f.Add(masked(ws.OpText, true, []byte{0xff}), 0)
	f.Add(rawFrame(ws.Header{Fin: true, OpCode: ws.OpText, Length: 2}, []byte("hi")), 1)
	f.Add([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, 5)
	f.Add([]byte{0x81, 0xfe, 0x01, 0x00}, 2)
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		const limit = 256
		split = min(max(split, 0), len(data))
		whole, errWhole := parseChunks(limit, data)
		halves, errHalves := parseChunks(limit, data[:split], data[split:])
		if (errWhole == nil) != (errHalves == nil) || (errWhole != nil && errWhole.code != errHalves.code) {
			t.Fatalf("whole: %v, in halves: %v", errWhole, errHalves)
		}
		if len(whole) != len(halves) {
			t.Fatalf("whole gave %d events, halves %d", len(whole), len(halves))
		}
		for i := range whole {
			if whole[i] != halves[i] {
				t.Fatalf("event %d: whole %q, halves %q", i, whole[i], halves[i])
			}
		}
		for _, e := range whole {
			if len(e) > len("msg Binary ")+limit {
				t.Fatalf("message over the %d-byte limit: %d bytes", limit, len(e))
			}
			if bytes.HasPrefix([]byte(e), []byte("msg Text ")) && !utf8.ValidString(e) {
				t.Fatalf("invalid UTF-8 text delivered: %q", e)
			}
		}
	})
}

// FuzzFrameRoundTrip encodes messages as client frames, fragmented, and
// checks the parser gives back exactly those messages: decode(encode(x)) == x.
func FuzzFrameRoundTrip(f *testing.F) {
	f.Add([]byte("hello"), []byte{1, 2, 3}, uint8(1), uint8(3))
	f.Add([]byte(""), []byte{}, uint8(5), uint8(0))
	f.Add(bytes.Repeat([]byte("long "), 40), []byte{0}, uint8(2), uint8(9))
	f.Fuzz(func(t *testing.T, text, binary []byte, parts, split uint8) {
		if !utf8.Valid(text) {
			text = []byte(string([]rune(string(text))))
		}
		wire := clientFrames([][]byte{text, binary}, []ws.OpCode{ws.OpText, ws.OpBinary}, int(parts))
		cut := min(int(split)*7, len(wire))
		events, perr := parseChunks(1<<20, wire[:cut], wire[cut:])
		if perr != nil {
			t.Fatalf("valid frames refused: %v", perr.reason)
		}
		want := []string{"msg Text " + string(text), "msg Binary " + string(binary)}
		if len(events) != 2 || events[0] != want[0] || events[1] != want[1] {
			t.Fatalf("got %q, want %q", events, want)
		}
	})
}

// FuzzDecodeHeader checks decodeHeader against ws.ReadHeader.
func FuzzDecodeHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4})
	f.Add([]byte{0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4})
	f.Add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4})
	f.Add([]byte{0x88})
	f.Fuzz(func(t *testing.T, b []byte) { checkDecodeHeader(t, b) })
}

// FuzzParseWSPath checks the request-target parser and the name rules: no
// panic, and whatever is accepted is a clean /ws/{class}/{room}.
func FuzzParseWSPath(f *testing.F) {
	for _, s := range []string{"/ws/echo/lobby", "/ws/chat/room-1?since=5", "/ws/a/b/c", "/ws//x", "/ws/echo/", "/wsx/echo/a", "/ws/echo/a%20b?token=x", "/ws/" + string(make([]byte, 70)) + "/r"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		class, room, query, ok := parseWSPath(target)
		if !ok {
			return
		}
		if got := "/ws/" + class + "/" + room; !bytes.HasPrefix([]byte(target), []byte(got)) {
			t.Fatalf("parseWSPath(%q) = %q %q %q", target, class, room, query)
		}
		if validName(class, room) {
			for _, c := range class + room {
				if c == '/' || c == '?' || c == '%' || c > 0x7e {
					t.Fatalf("accepted name with %q: %q / %q", c, class, room)
				}
			}
		}
	})
}
