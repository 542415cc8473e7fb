package rooms

import (
	"encoding/binary"
	"errors"
	"fmt"
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
		{typ: tAsk, seq: 2, addr: Addr{Class: "c", Room: "r"}, kind: askBroadcast, text: "tag", op: Text, data: []byte{}},
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

// A frame that names a room outside the naming rules, or carries a
// message that is neither text nor binary, is malformed.
func TestLinkFramesAreChecked(t *testing.T) {
	for _, m := range []linkMsg{
		{typ: tMessage, addr: Addr{Class: "chat", Room: "a}b"}, op: Text},
		{typ: tConnect, addr: Addr{Class: "Chat", Room: "a"}},
		{typ: tDeliver, addr: Addr{Class: "chat", Room: "a"}, op: 9},
		{typ: tMessage, addr: Addr{}, op: Text},
		{typ: tAsk, addr: Addr{Class: "chat", Room: "a"}, kind: askKinds},
		{typ: tAsk, addr: Addr{Class: "chat", Room: "a"}},
		{typ: tAsk, addr: Addr{Class: "chat", Room: "a"}, kind: askBroadcast, op: 9},
	} {
		if _, err := decodeLinkMsg(appendLinkMsg(nil, &m)[4:]); err == nil {
			t.Errorf("%+v was accepted", m)
		}
	}
}

func TestErrorsCrossTheLink(t *testing.T) {
	// Each error comes back as the same sentinel (so the edge maps it to
	// the same close code and status as a local room would), a CloseError
	// with its own code and reason.
	for _, tc := range []struct{ err, is error }{
		{ErrOverloaded, ErrOverloaded},
		{errMoved, ErrDraining},
		{ErrUnavailable, ErrUnavailable},
		{fmt.Errorf("%w: not you", ErrRefused), ErrRefused},
		{ErrSocketNotFound, ErrSocketNotFound},
		{errNotOwner, errNotOwner},
	} {
		var m linkMsg
		encodeErr(&m, tc.err)
		if got := decodeErr(&m); !errors.Is(got, tc.is) {
			t.Errorf("%v came back as %v, which is not %v", tc.err, got, tc.is)
		}
	}
	var m linkMsg
	encodeErr(&m, &CloseError{Code: 4401, Reason: "token expired"})
	var ce *CloseError
	if got := decodeErr(&m); !errors.As(got, &ce) || ce.Code != 4401 || ce.Reason != "token expired" {
		t.Errorf("a CloseError came back as %v", got)
	}
	if decodeErr(&linkMsg{}) != nil {
		t.Error("no error came back as one")
	}
}

// FuzzDecodeLinkMsg feeds arbitrary frame bodies to the link decoder: it
// must refuse what is malformed without panicking or allocating beyond the
// frame, and what it accepts must encode back to the same body.
func FuzzDecodeLinkMsg(f *testing.F) {
	for _, m := range []linkMsg{
		{typ: tPing},
		{typ: tMessage, seq: 1, addr: Addr{Class: "chat", Room: "a"}, sock: 5, op: Text, data: []byte("hi")},
		{typ: tDeliver, addr: Addr{Class: "c", Room: "r"}, ids: []SocketID{1, 2, 3}, op: Binary, data: []byte("x")},
		{typ: tConnect, addr: Addr{Class: "c", Room: "r"}, info: ConnectInfo{User: User{ID: "u", Name: "n"}}},
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
