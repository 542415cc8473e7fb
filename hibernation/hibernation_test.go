package hibernation

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestMemberRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		m    Member
	}{
		{"empty", Member{ID: 1}},
		{"full", Member{ID: 42, Edge: "node-a", UserID: "u1", UserName: "Ada", Query: "since=5&x=%20",
			ConnectedAt: time.Date(2026, 11, 23, 1, 2, 3, 4, time.UTC).UnixNano(),
			Tags:        []string{"red", "team-1"}, Attachment: []byte{0, 1, 2, 255}}},
		{"negative time and long fields", Member{ID: 1<<64 - 1, ConnectedAt: -5, UserName: string(bytes.Repeat([]byte("é"), 300)),
			Attachment: bytes.Repeat([]byte{7}, 16<<10)}},
		{"claims", Member{ID: 7, UserID: "alice", Claims: []byte(`{"role":"admin"}`)}},
		{"claims and everything", Member{ID: 8, Edge: "e", UserID: "u", UserName: "n", Query: "a=b", ConnectedAt: 1,
			Tags: []string{"t"}, Attachment: []byte("x"), Claims: []byte(`{"plan":"pro","role":"member"}`)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.m.ID, tc.m.Encode())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.m) {
				t.Fatalf("Decode(Encode(m)) = %+v, want %+v", got, tc.m)
			}
		})
	}
}

// TestOldRecordsDecode: records written before claims existed (format 1)
// still decode, and a record without claims is still written as one, so
// a node of the previous version reads it too.
func TestOldRecordsDecode(t *testing.T) {
	// A format 1 record as the previous version wrote it: connected at 9,
	// edge "n", user "u" named "Ada", query "q=1", tag "t", attachment "a".
	old := []byte{1, 18, 1, 'n', 1, 'u', 3, 'A', 'd', 'a', 3, 'q', '=', '1', 1, 1, 't', 1, 'a'}
	want := Member{ID: 3, ConnectedAt: 9, Edge: "n", UserID: "u", UserName: "Ada", Query: "q=1", Tags: []string{"t"}, Attachment: []byte("a")}
	got, err := Decode(3, old)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Decode(format 1) = %+v, %v; want %+v", got, err, want)
	}
	if again := want.Encode(); !bytes.Equal(again, old) {
		t.Fatalf("a record without claims encodes as %v, want the format 1 bytes %v", again, old)
	}
}

func TestDecodeRefusesBadRecords(t *testing.T) {
	good := (&Member{UserID: "u", Tags: []string{"a"}, Attachment: []byte("x")}).Encode()
	tests := []struct {
		name string
		rec  []byte
	}{
		{"empty", nil},
		{"unknown format", append([]byte{9}, good[1:]...)},
		{"cut short", good[:len(good)-1]},
		{"trailing bytes", append(append([]byte(nil), good...), 0)},
		{"huge tag count", []byte{format, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"length past the end", []byte{format, 0, 50, 'a'}},
		{"format 2 without claims", append([]byte{formatClaims}, good[1:]...)},
		{"format 2 with empty claims", append(append([]byte{formatClaims}, good[1:]...), 0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(1, tc.rec); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Decode = %v, want ErrCorrupt", err)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add((&Member{Edge: "n", UserID: "u", UserName: "n", Query: "q=1", ConnectedAt: 9, Tags: []string{"t"}, Attachment: []byte("a")}).Encode())
	f.Add((&Member{}).Encode())
	f.Add((&Member{UserID: "u", Claims: []byte(`{"role":"x"}`)}).Encode())
	f.Add([]byte{format, 0, 0, 0, 0, 0, 2, 1, 'a'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, rec []byte) {
		m, err := Decode(3, rec)
		if err != nil {
			return
		}
		again, err := Decode(3, m.Encode())
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-encoded record decodes to %+v, %v; want %+v", again, err, m)
		}
	})
}

func TestPolicy(t *testing.T) {
	p := Policy{After: 10 * time.Second, MaxActive: 100}
	now := time.Now()
	if p.Idle(now.Add(-9*time.Second), now) || !p.Idle(now.Add(-10*time.Second), now) {
		t.Fatal("Idle disagrees with After")
	}
	for _, tc := range []struct{ active, want int }{{50, 0}, {100, 0}, {101, 11}, {300, 210}} {
		if got := p.Excess(tc.active); got != tc.want {
			t.Errorf("Excess(%d) = %d, want %d", tc.active, got, tc.want)
		}
	}
	if got := (Policy{}).Excess(1 << 20); got != 0 {
		t.Errorf("no cap: Excess = %d, want 0", got)
	}
	c := []Candidate[string]{{"c", 30}, {"a", 10}, {"d", 40}, {"b", 20}}
	got := LeastRecent(c, 2)
	if len(got) != 2 || got[0].Room != "a" || got[1].Room != "b" {
		t.Fatalf("LeastRecent = %+v, want a, b", got)
	}
	if got := LeastRecent(c, 10); len(got) != 4 {
		t.Fatalf("LeastRecent past the end = %d rooms", len(got))
	}
}
