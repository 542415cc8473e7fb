// Package storagetest is the conformance suite every storage.Store passes,
// and every storage.Coordinator: call Run, or RunCoordinator, from the
// implementation's tests with a factory for fresh ones.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/roomgate/roomgate/storage"
)

// Run runs the suite; newStore returns an empty store, closed by the caller's cleanup.
func Run(t *testing.T, newStore func(t *testing.T) storage.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s storage.Store)
	}{
		{"put get delete", testPutGetDelete},
		{"list", testList},
		{"delete all", testDeleteAll},
		{"batch is atomic with its alarm", testBatchAlarm},
		{"alarms in time order", testAlarms},
		{"room index and stats", testRooms},
		{"a commit reports the room's bytes", testCommitBytes},
		{"fencing token", testFencing},
		{"members", testMembers},
		{"concurrent commits of many rooms", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, newStore(t)) })
	}
}

var ctx = context.Background()

func commit(t *testing.T, s storage.Store, r storage.Room, b storage.Batch) {
	t.Helper()
	if err := storage.CommitAndWait(ctx, s, r, &b); err != nil {
		t.Fatalf("commit %v: %v", r, err)
	}
}

func puts(kv ...string) []storage.KV {
	var out []storage.KV
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, storage.KV{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return out
}

func keys(kvs []storage.KV) []string {
	out := []string{}
	for _, kv := range kvs {
		out = append(out, kv.Key)
	}
	return out
}

func testPutGetDelete(t *testing.T, s storage.Store) {
	r := storage.Room{Class: "chat", Name: "a"}
	commit(t, s, r, storage.Batch{Puts: puts("k1", "v1", "k2", "v2")})
	got, err := s.Get(ctx, r, "k1", "missing", "k2")
	if err != nil {
		t.Fatal(err)
	}
	if string(got[0]) != "v1" || got[1] != nil || string(got[2]) != "v2" {
		t.Fatalf("Get = %q", got)
	}
	commit(t, s, r, storage.Batch{Puts: puts("k1", "v1b"), Deletes: []string{"k2"}})
	got, _ = s.Get(ctx, r, "k1", "k2")
	if string(got[0]) != "v1b" || got[1] != nil {
		t.Fatalf("after overwrite and delete: %q", got)
	}
	other, _ := s.Get(ctx, storage.Room{Class: "chat", Name: "b"}, "k1")
	if other[0] != nil {
		t.Fatal("a key leaked into another room")
	}
	// Empty and binary values survive as they are.
	commit(t, s, r, storage.Batch{Puts: []storage.KV{{Key: "empty", Value: []byte{}}, {Key: "bin", Value: []byte{0, 0xff, 0}}}})
	got, _ = s.Get(ctx, r, "empty", "bin")
	if got[0] == nil || len(got[0]) != 0 || string(got[1]) != "\x00\xff\x00" {
		t.Fatalf("empty and binary values: %q", got)
	}
}

func testList(t *testing.T, s storage.Store) {
	r := storage.Room{Class: "chat", Name: "list"}
	commit(t, s, r, storage.Batch{Puts: puts("a", "1", "b/1", "2", "b/2", "3", "b/3", "4", "c", "5", "b\xff", "6")})
	tests := []struct {
		name string
		o    storage.ListOptions
		want []string
	}{
		{"all", storage.ListOptions{}, []string{"a", "b/1", "b/2", "b/3", "b\xff", "c"}},
		{"prefix", storage.ListOptions{Prefix: "b/"}, []string{"b/1", "b/2", "b/3"}},
		{"prefix reverse", storage.ListOptions{Prefix: "b/", Reverse: true}, []string{"b/3", "b/2", "b/1"}},
		{"prefix limit", storage.ListOptions{Prefix: "b/", Limit: 2}, []string{"b/1", "b/2"}},
		{"prefix reverse limit", storage.ListOptions{Prefix: "b/", Reverse: true, Limit: 2}, []string{"b/3", "b/2"}},
		{"start", storage.ListOptions{Start: "b/2"}, []string{"b/2", "b/3", "b\xff", "c"}},
		{"end", storage.ListOptions{End: "b/2"}, []string{"a", "b/1"}},
		{"start end", storage.ListOptions{Start: "b/1", End: "b/3"}, []string{"b/1", "b/2"}},
		{"start end reverse", storage.ListOptions{Start: "b/1", End: "b/3", Reverse: true}, []string{"b/2", "b/1"}},
		{"prefix with start", storage.ListOptions{Prefix: "b/", Start: "b/2"}, []string{"b/2", "b/3"}},
		{"prefix with end past it", storage.ListOptions{Prefix: "b/", End: "z"}, []string{"b/1", "b/2", "b/3"}},
		{"reverse all", storage.ListOptions{Reverse: true, Limit: 2}, []string{"c", "b\xff"}},
		{"nothing", storage.ListOptions{Prefix: "zz"}, []string{}},
		{"empty range", storage.ListOptions{Start: "c", End: "a"}, []string{}},
	}
	for _, tc := range tests {
		got, err := s.List(ctx, r, tc.o)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(keys(got), tc.want) {
			t.Errorf("%s: List(%+v) = %q, want %q", tc.name, tc.o, keys(got), tc.want)
		}
	}
	got, _ := s.List(ctx, r, storage.ListOptions{Prefix: "c"})
	if len(got) != 1 || string(got[0].Value) != "5" {
		t.Errorf("List value: %+v", got)
	}
}

func testDeleteAll(t *testing.T, s storage.Store) {
	r := storage.Room{Class: "chat", Name: "wipe"}
	commit(t, s, r, storage.Batch{Puts: puts("a", "1", "b", "2")})
	// DeleteAll comes first in its batch: the puts beside it survive.
	commit(t, s, r, storage.Batch{DeleteAll: true, Puts: puts("c", "3")})
	got, _ := s.List(ctx, r, storage.ListOptions{})
	if !reflect.DeepEqual(keys(got), []string{"c"}) {
		t.Fatalf("after DeleteAll+put: %q", keys(got))
	}
	commit(t, s, r, storage.Batch{DeleteAll: true})
	if _, ok, _ := s.Stat(ctx, r); ok {
		t.Fatal("a room with no keys and no alarm is still in the index")
	}
	// A key put twice beside a DeleteAll counts once, at its last value.
	commit(t, s, r, storage.Batch{Puts: puts("x", "1")})
	commit(t, s, r, storage.Batch{DeleteAll: true, Puts: puts("k", "1", "k", "22")})
	if st, _, _ := s.Stat(ctx, r); st.Keys != 1 || st.Bytes != int64(len("k")+len("22")) {
		t.Fatalf("after DeleteAll and a key put twice: %d keys, %d bytes; want 1 key, 3 bytes", st.Keys, st.Bytes)
	}
}

// testCommitBytes checks the size a commit reports against Stat's, through
// puts, overwrites, deletes, a wipe and batches that touch no key.
func testCommitBytes(t *testing.T, s storage.Store) {
	r := storage.Room{Class: "chat", Name: "sized"}
	for _, step := range []struct {
		name string
		b    storage.Batch
	}{
		{"puts", storage.Batch{Puts: puts("a", "1", "bb", "22")}},
		{"an overwrite, longer", storage.Batch{Puts: puts("a", "11111")}},
		{"an overwrite, shorter, and a delete", storage.Batch{Puts: puts("bb", "2"), Deletes: []string{"a"}}},
		{"a delete of nothing", storage.Batch{Deletes: []string{"nope"}}},
		{"members only", storage.Batch{Members: []storage.Member{{ID: 1, Data: []byte("rec")}}}},
		{"an alarm only", storage.Batch{Alarm: &storage.AlarmChange{At: time.Now().Add(time.Hour)}}},
		{"nothing", storage.Batch{}},
		{"a wipe and a put", storage.Batch{DeleteAll: true, Puts: puts("c", "333")}},
		{"a wipe", storage.Batch{DeleteAll: true}},
	} {
		b := step.b
		b.Bytes = -1
		if err := storage.CommitAndWait(ctx, s, r, &b); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		st, _, err := s.Stat(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if b.Bytes != st.Bytes {
			t.Fatalf("after %s: the commit reported %d bytes, Stat %d", step.name, b.Bytes, st.Bytes)
		}
	}
}

func testBatchAlarm(t *testing.T, s storage.Store) {
	r := storage.Room{Class: "counter", Name: "x"}
	at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	commit(t, s, r, storage.Batch{Puts: puts("n", "1"), Alarm: &storage.AlarmChange{At: at}})
	st, ok, err := s.Stat(ctx, r)
	if err != nil || !ok || !st.Alarm.Equal(at) || st.Keys != 1 {
		t.Fatalf("Stat = %+v %v %v", st, ok, err)
	}
	// A room with only an alarm stays in the index.
	commit(t, s, r, storage.Batch{DeleteAll: true})
	if st, ok, _ := s.Stat(ctx, r); !ok || st.Keys != 0 || !st.Alarm.Equal(at) {
		t.Fatalf("alarm-only room: %+v %v", st, ok)
	}
	commit(t, s, r, storage.Batch{Alarm: &storage.AlarmChange{}})
	if _, ok, _ := s.Stat(ctx, r); ok {
		t.Fatal("room without keys or alarm is still indexed")
	}
	if _, ok, _ := s.NextAlarm(ctx); ok {
		t.Fatal("deleted alarm is still next")
	}
}

func testAlarms(t *testing.T, s storage.Store) {
	now := time.Now()
	rooms := []storage.Room{{Class: "c", Name: "late"}, {Class: "c", Name: "early"}, {Class: "c", Name: "future"}}
	commit(t, s, rooms[0], storage.Batch{Alarm: &storage.AlarmChange{At: now.Add(-time.Second)}})
	commit(t, s, rooms[1], storage.Batch{Alarm: &storage.AlarmChange{At: now.Add(-time.Minute)}})
	commit(t, s, rooms[2], storage.Batch{Alarm: &storage.AlarmChange{At: now.Add(time.Hour)}})
	due, err := s.DueAlarms(ctx, now, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 2 || due[0].Room != rooms[1] || due[1].Room != rooms[0] {
		t.Fatalf("DueAlarms = %+v", due)
	}
	if next, ok, _ := s.NextAlarm(ctx); !ok || !next.Equal(now.Add(-time.Minute)) {
		t.Fatalf("NextAlarm = %v %v", next, ok)
	}
	// Set replaces: moving "early" into the future takes it off the due list.
	commit(t, s, rooms[1], storage.Batch{Alarm: &storage.AlarmChange{At: now.Add(2 * time.Hour)}})
	due, _ = s.DueAlarms(ctx, now, 10)
	if len(due) != 1 || due[0].Room != rooms[0] {
		t.Fatalf("after replacing an alarm: %+v", due)
	}
	if due, _ := s.DueAlarms(ctx, now.Add(3*time.Hour), 2); len(due) != 2 {
		t.Fatalf("limit: %d alarms", len(due))
	}
}

func testRooms(t *testing.T, s storage.Store) {
	for _, r := range []storage.Room{{Class: "chat", Name: "b"}, {Class: "chat", Name: "a"}, {Class: "chat", Name: "ab"}, {Class: "canvas", Name: "z"}, {Class: "chat-x", Name: "a"}} {
		commit(t, s, r, storage.Batch{Puts: puts("key", "value")})
	}
	names := func(sts []storage.Stat) []string {
		out := []string{}
		for _, st := range sts {
			out = append(out, st.Room.String())
		}
		return out
	}
	all, err := s.Rooms(ctx, "", "", storage.Room{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"canvas/z", "chat/a", "chat/ab", "chat/b", "chat-x/a"}; !reflect.DeepEqual(names(all), want) {
		t.Fatalf("Rooms = %q, want %q", names(all), want)
	}
	chat, _ := s.Rooms(ctx, "chat", "a", storage.Room{}, 0)
	if want := []string{"chat/a", "chat/ab"}; !reflect.DeepEqual(names(chat), want) {
		t.Fatalf("class and prefix: %q, want %q", names(chat), want)
	}
	// Pages of two, each starting after the last room of the previous page.
	var paged []string
	after := storage.Room{}
	for {
		page, err := s.Rooms(ctx, "", "", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, names(page)...)
		after = page[len(page)-1].Room
	}
	if !reflect.DeepEqual(paged, names(all)) {
		t.Fatalf("pages = %q, want %q", paged, names(all))
	}
	st, ok, _ := s.Stat(ctx, storage.Room{Class: "chat", Name: "a"})
	if !ok || st.Keys != 1 || st.Bytes != int64(len("key")+len("value")) {
		t.Fatalf("Stat = %+v", st)
	}
	commit(t, s, storage.Room{Class: "chat", Name: "a"}, storage.Batch{Puts: puts("key", "v", "k2", "12345")})
	st, _, _ = s.Stat(ctx, storage.Room{Class: "chat", Name: "a"})
	if st.Keys != 2 || st.Bytes != int64(len("key")+1+len("k2")+5) {
		t.Fatalf("Stat after overwrite = %+v", st)
	}
}

func testFencing(t *testing.T, s storage.Store) {
	r := storage.Room{Class: "chat", Name: "fenced"}
	commit(t, s, r, storage.Batch{Puts: puts("k", "owner 5"), Token: 5})
	commit(t, s, r, storage.Batch{Puts: puts("k", "owner 5 again"), Token: 5})
	err := storage.CommitAndWait(ctx, s, r, &storage.Batch{Puts: puts("k", "stale owner"), Token: 4})
	if !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("stale token: %v, want ErrFenced", err)
	}
	commit(t, s, r, storage.Batch{Puts: puts("k", "owner 6"), Token: 6})
	if err := storage.CommitAndWait(ctx, s, r, &storage.Batch{Puts: puts("k", "owner 5 late"), Token: 5}); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("superseded token: %v, want ErrFenced", err)
	}
	got, _ := s.Get(ctx, r, "k")
	if string(got[0]) != "owner 6" {
		t.Fatalf("value %q, want the newest owner's", got[0])
	}
}

func testConcurrent(t *testing.T, s storage.Store) {
	const rooms, commits = 50, 40
	var wg sync.WaitGroup
	errs := make(chan error, rooms)
	for i := range rooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := storage.Room{Class: "load", Name: fmt.Sprint(i)}
			for j := range commits {
				b := storage.Batch{Puts: []storage.KV{{Key: fmt.Sprintf("k%03d", j), Value: []byte(fmt.Sprint(j))}}}
				if err := storage.CommitAndWait(ctx, s, r, &b); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range rooms {
		st, ok, _ := s.Stat(ctx, storage.Room{Class: "load", Name: fmt.Sprint(i)})
		if !ok || st.Keys != commits {
			t.Fatalf("room %d: %+v", i, st)
		}
	}
}

func testMembers(t *testing.T, s storage.Store) {
	r := storage.Room{Class: "chat", Name: "m"}
	commit(t, s, r, storage.Batch{Members: []storage.Member{{ID: 7, Data: []byte("seven")}, {ID: 2, Data: []byte("two")}}})
	got, err := s.Members(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	want := []storage.Member{{ID: 2, Data: []byte("two")}, {ID: 7, Data: []byte("seven")}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Members = %+v, want %+v", got, want)
	}
	st, ok, err := s.Stat(ctx, r)
	if err != nil || !ok || st.Members != 2 || st.Keys != 0 {
		t.Fatalf("Stat of a room with only members = %+v, %v, %v", st, ok, err)
	}
	listed, _ := s.Rooms(ctx, "chat", "", storage.Room{}, 0)
	if len(listed) != 1 || listed[0].Members != 2 {
		t.Fatalf("room index = %+v, want the room with 2 members", listed)
	}

	// DeleteAll wipes keys, not members: the sockets are still open.
	commit(t, s, r, storage.Batch{Puts: puts("k", "v"), Members: []storage.Member{{ID: 7, Data: []byte("seven again")}}})
	commit(t, s, r, storage.Batch{DeleteAll: true})
	got, _ = s.Members(ctx, r)
	if len(got) != 2 || string(got[1].Data) != "seven again" {
		t.Fatalf("after DeleteAll: %+v", got)
	}

	// Removing a member that is not there changes nothing.
	commit(t, s, r, storage.Batch{Members: []storage.Member{{ID: 2}, {ID: 99}}})
	if st, _, _ := s.Stat(ctx, r); st.Members != 1 {
		t.Fatalf("Members count = %d, want 1", st.Members)
	}
	commit(t, s, r, storage.Batch{Members: []storage.Member{{ID: 7}}})
	if _, ok, _ := s.Stat(ctx, r); ok {
		t.Fatal("a room with nothing left is still in the index")
	}
	if got, _ := s.Members(ctx, r); len(got) != 0 {
		t.Fatalf("Members after removing all = %+v", got)
	}
	if got, _ := s.Members(ctx, storage.Room{Class: "chat", Name: "none"}); len(got) != 0 {
		t.Fatalf("Members of an unknown room = %+v", got)
	}
}
