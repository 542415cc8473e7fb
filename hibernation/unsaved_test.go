package hibernation

import "testing"

type sock struct {
	id   int
	gone bool
}

func due(s *sock) bool { return !s.gone }

// Sockets that come and go in a busy room do not pile up on its list:
// it stays within twice the members plus 64.
func TestUnsavedCompacts(t *testing.T) {
	var u Unsaved[*sock]
	stay := &sock{id: 0}
	u.Add(stay, 1, due)
	for i := 1; i <= 3000; i++ {
		s := &sock{id: i}
		u.Add(s, 2, due) // two members while it is in the room
		s.gone = true    // it left before the room was saved
		if len(u) > 2*2+64 {
			t.Fatalf("%d sockets on the list of a room with one member", len(u))
		}
	}
	if u[0] != stay {
		t.Fatalf("the member that stayed was dropped: first is %d", u[0].id)
	}
	for _, s := range u[1 : len(u)-1] {
		if !s.gone {
			t.Fatalf("socket %d kept and not gone", s.id)
		}
	}
}

func TestUnsavedReset(t *testing.T) {
	tests := []struct {
		name     string
		n        int
		keepsCap bool
	}{
		{"small list keeps its array", 10, true},
		{"a burst's array is dropped", 1000, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var u Unsaved[*sock]
			for i := range tc.n {
				u.Add(&sock{id: i}, tc.n, due)
			}
			kept := u[:cap(u)]
			u.Reset()
			if len(u) != 0 || (cap(u) > 0) != tc.keepsCap {
				t.Fatalf("after Reset: len %d, cap %d; want 0 and the array kept: %v", len(u), cap(u), tc.keepsCap)
			}
			for i, s := range kept {
				if s != nil {
					t.Fatalf("entry %d still points at socket %d", i, s.id)
				}
			}
		})
	}
}
