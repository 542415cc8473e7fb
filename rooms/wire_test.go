package rooms

import (
	"encoding/binary"
	"reflect"
	"testing"
)

func TestLinkMsgRoundTrip(t *testing.T) {
	msgs := []linkMsg{
		{typ: tPing},
		{typ: tMessage, seq: 7, addr: Addr{Class: "chat", Room: "lobby"}, sock: 1<<40 | 12, op: Text, data: []byte(`{"type":"say"}`)},
		{typ: tConnect, seq: 1, addr: Addr{Class: "c", Room: "r"}, sock: 3, info: ConnectInfo{User: User{ID: "u", Name: "Ünïcode"}, Query: "since=4", RemoteAddr: "127.0.0.1:5"}},
		{typ: tDeliver, addr: Addr{Class: "c", Room: "r"}, token: 1 << 62, ids: []SocketID{1, 2, 1 << 63}, op: Binary, data: []byte{0, 0xff}},
		{typ: tReply, seq: 9, code: codeCloseError, token: 4401, text: "token expired"},
		{typ: tAsk, seq: 2, kind: askBroadcast, text: "tag", data: []byte{}},
	}
	var buf []byte
	for i := range msgs {
		buf = appendLinkMsg(buf, &msgs[i])
	}
	for i, want := range msgs {
		n := binary.BigEndian.Uint32(buf)
		got, err := decodeLinkMsg(buf[4 : 4+n])
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if len(want.data) == 0 {
			want.data = nil // empty and absent data are the same on the wire
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("message %d:\n got %+v\nwant %+v", i, got, want)
		}
		buf = buf[4+n:]
	}
}

func TestErrorsCrossTheLink(t *testing.T) {
	for _, err := range []error{ErrOverloaded, errMoved, ErrUnavailable, ErrRefused, &CloseError{Code: 4401, Reason: "token expired"}} {
		var m linkMsg
		encodeErr(&m, err)
		got := decodeErr(&m)
		code, reason := closeCodeOf(err)
		if gc, gr := closeCodeOf(got); gc != code || gr != reason {
			t.Errorf("%v came back as %v: close %d %q, want %d %q", err, got, gc, gr, code, reason)
		}
	}
}

// FuzzDecodeLinkMsg feeds arbitrary frame bodies to the link decoder: it
// must refuse what is malformed without panicking or allocating beyond the
// frame, and what it accepts must encode back to the same body.
func FuzzDecodeLinkMsg(f *testing.F) {
	for _, m := range []linkMsg{
		{typ: tPing},
		{typ: tMessage, seq: 1, addr: Addr{Class: "chat", Room: "a"}, sock: 5, op: Text, data: []byte("hi")},
		{typ: tDeliver, ids: []SocketID{1, 2, 3}, data: []byte("x")},
		{typ: tConnect, info: ConnectInfo{User: User{ID: "u", Name: "n"}}},
	} {
		f.Add(appendLinkMsg(nil, &m)[4:])
	}
	f.Add([]byte{})
	f.Add([]byte{byte(tDeliver), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := decodeLinkMsg(body)
		if err != nil {
			return
		}
		again := appendLinkMsg(nil, &m)[4:]
		m2, err := decodeLinkMsg(again)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-encoded frame decodes differently: %+v vs %+v (%v)", m, m2, err)
		}
	})
}
