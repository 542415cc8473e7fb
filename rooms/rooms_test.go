package rooms

import (
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		class bool
		room  bool
	}{
		{"chat", true, true},
		{"a", true, true},
		{"my-class-2", true, true},
		{"Chat", false, true},
		{"2chat", false, true},
		{"-chat", false, true},
		{"chat_room", false, true},
		{strings.Repeat("a", 64), true, true},
		{strings.Repeat("a", 65), false, true},
		{"Room.1_~-", false, true},
		{strings.Repeat("r", 128), false, true},
		{strings.Repeat("r", 129), false, false},
		{"", false, false},
		{"a b", false, false},
		{"a/b", false, false},
		{"a%20b", false, false},
		{"é", false, false},
	} {
		if got := ValidClass(tc.name); got != tc.class {
			t.Errorf("ValidClass(%q) = %v, want %v", tc.name, got, tc.class)
		}
		if got := ValidRoom(tc.name); got != tc.room {
			t.Errorf("ValidRoom(%q) = %v, want %v", tc.name, got, tc.room)
		}
	}
}

func TestSocketIDRoundTrip(t *testing.T) {
	for _, id := range []SocketID{0, 1, 0xdeadbeef, 1<<64 - 1} {
		got, err := ParseSocketID(id.String())
		if err != nil || got != id {
			t.Errorf("ParseSocketID(%q) = %v, %v; want %v", id.String(), got, err, id)
		}
	}
	for _, bad := range []string{"", "123", "zzzzzzzzzzzzzzzz", "00000000000000000"} {
		if _, err := ParseSocketID(bad); err == nil {
			t.Errorf("ParseSocketID(%q) accepted", bad)
		}
	}
}

// FuzzNames checks that the name rules never panic and that whatever they
// accept needs no escaping in a URL path.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"chat", "Room.1_~-", "", "a/b", "%2F", "é", strings.Repeat("x", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, ok := range []bool{ValidClass(s), ValidRoom(s)} {
			if ok && strings.ContainsAny(s, "/?#%& \x00") {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}
