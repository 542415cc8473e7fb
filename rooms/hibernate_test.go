package rooms

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/filestore"
)

// TestMemoryPressureEvictsTheLeastRecentlyUsed: past MaxActiveRooms, the
// rooms idle longest leave first, down to 90% of the cap.
func TestMemoryPressureEvictsTheLeastRecentlyUsed(t *testing.T) {
	fx := newFixture(t, Options{HibernateAfter: time.Hour, MaxActiveRooms: 10}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		return c.SendText(msg)
	})
	room := func(i int) Addr { return Addr{Class: "probe", Room: fmt.Sprintf("r%02d", i)} }
	for i := range 20 {
		s := newSocket()
		if err := fx.rt.Connect(context.Background(), room(i), s, ConnectInfo{}); err != nil {
			t.Fatal(err)
		}
		fx.rt.Message(context.Background(), room(i), s, Frame{Op: Text, Data: []byte("x")})
		s.next(t)
		// Distinct last-use times, further apart than the jitter with
		// which the rooms park: a sweep evicts the parked ones, least
		// recently used first, so they must park in this order.
		time.Sleep(2 * time.Millisecond)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		if n := fx.rt.nrooms.Load(); n > 9 {
			return fmt.Errorf("%d rooms in memory, want 9", n)
		}
		return nil
	})
	for i := range 20 {
		if active := fx.rt.active(room(i)) != nil; active != (i >= 11) {
			t.Errorf("room %d in memory: %v", i, active)
		}
	}
	info, err := fx.rt.Room(context.Background(), room(0))
	if err != nil || info.State != "hibernated" || info.Connections != 1 {
		t.Fatalf("an evicted room: %+v, %v", info, err)
	}
}

// failingStore fails every commit while fail is set.
type failingStore struct {
	storage.Store
	fail atomic.Bool
}

func (f *failingStore) Commit(ctx context.Context, r storage.Room, b *storage.Batch, done func(error)) {
	if f.fail.Load() {
		done(errors.New("disk on fire"))
		return
	}
	f.Store.Commit(ctx, r, b, done)
}

// newFailingStore opens an embedded store, and a failingStore on it.
func newFailingStore(t *testing.T) (*filestore.Store, *failingStore) {
	t.Helper()
	fs, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return fs, &failingStore{Store: fs}
}

// closeCounter counts OnClose calls; "set" sets every socket's attachment
// and then fails when asked to.
type closeCounter struct{ closes *atomic.Int32 }

func (h *closeCounter) OnClose(context.Context, *Room, *Conn, CloseInfo) error {
	h.closes.Add(1)
	return nil
}

func (h *closeCounter) OnMessage(ctx context.Context, r *Room, c *Conn, f Frame) error {
	switch string(f.Data) {
	case "set then fail":
		for _, o := range r.Conns("") {
			o.SetAttachment([]byte("changed"))
		}
		return errors.New("failed after SetAttachment")
	case "set and write":
		for _, o := range r.Conns("") {
			o.SetAttachment([]byte("changed"))
		}
		return r.Storage().Put("k", []byte("v"))
	case "get":
		return c.SendText("att=" + string(c.Attachment()))
	}
	return nil
}

// TestFailuresKeepMembershipTrue: a failed commit does not lose a socket's
// leaving, and a failed handler does not keep attachments it changed.
func TestFailuresKeepMembershipTrue(t *testing.T) {
	fs, store := newFailingStore(t)
	fx := newFixture(t, Options{Store: store, HibernateAfter: 50 * time.Millisecond}, nil)
	closes := new(atomic.Int32)
	fx.rt.Register("cc", func() Handler { return &closeCounter{closes} })
	a := Addr{Class: "cc", Room: "x"}
	stay, leave := newSocket(), newSocket()
	for _, s := range []*testSocket{stay, leave} {
		if err := fx.rt.Connect(context.Background(), a, s, ConnectInfo{}); err != nil {
			t.Fatal(err)
		}
	}

	fx.rt.Message(context.Background(), a, stay, Frame{Op: Text, Data: []byte("set then fail")})
	if got := stay.next(t); !strings.HasPrefix(got, "closed 1011") {
		t.Fatalf("the failing socket got %q", got)
	}
	fx.rt.Message(context.Background(), a, leave, Frame{Op: Text, Data: []byte("get")})
	if got := leave.next(t); got != "att=" {
		t.Fatalf("after a failed event the attachment reads %q, want it unchanged", got)
	}

	// Hibernate, so both records are saved; then a close whose record
	// deletion fails to commit.
	testkit.WaitFor(t, 10*time.Second, "the room to hibernate", func() bool { return fx.rt.active(a) == nil })
	if ms, _ := fs.Members(context.Background(), a.storageRoom()); len(ms) != 2 {
		t.Fatalf("%d records saved on hibernation, want 2", len(ms))
	}
	store.fail.Store(true)
	fx.rt.Closed(a, leave, 1000, "bye")
	commitFailures := fx.rt.m.failures.WithLabelValues("commit")
	testkit.WaitFor(t, 10*time.Second, "the save to fail", func() bool { return testutil.ToFloat64(commitFailures) >= 1 })
	store.fail.Store(false)
	fx.rt.Closed(a, stay, 1011, "")
	testkit.WaitFor(t, 10*time.Second, "the room to hibernate again", func() bool {
		ms, _ := fs.Members(context.Background(), a.storageRoom())
		return fx.rt.active(a) == nil && len(ms) == 0
	})
	if ms, _ := fs.Members(context.Background(), a.storageRoom()); len(ms) != 0 {
		t.Fatalf("%d membership records left after both sockets closed", len(ms))
	}
	if n := closes.Load(); n != 2 {
		t.Fatalf("OnClose ran %d times, want 2", n)
	}
	if got := testutil.ToFloat64(fx.rt.m.rooms.WithLabelValues("hibernated")); got != 0 {
		t.Fatalf("hibernated gauge = %v, want 0", got)
	}
}

// A commit that fails takes the attachments its events set with it, as it
// takes their storage writes: the instance is as before those events.
func TestFailedCommitRollsBackAttachments(t *testing.T) {
	_, store := newFailingStore(t)
	fx := newFixture(t, Options{Store: store}, nil)
	fx.rt.Register("cc", func() Handler { return &closeCounter{new(atomic.Int32)} })
	a := Addr{Class: "cc", Room: "x"}
	writer, reader := newSocket(), newSocket()
	for _, s := range []*testSocket{writer, reader} {
		if err := fx.rt.Connect(context.Background(), a, s, ConnectInfo{}); err != nil {
			t.Fatal(err)
		}
	}
	store.fail.Store(true)
	fx.rt.Message(context.Background(), a, writer, Frame{Op: Text, Data: []byte("set and write")})
	if got := writer.next(t); !strings.HasPrefix(got, "closed 1011") {
		t.Fatalf("the socket whose event failed to commit got %q", got)
	}
	store.fail.Store(false)
	fx.rt.Message(context.Background(), a, reader, Frame{Op: Text, Data: []byte("get")})
	if got := reader.next(t); got != "att=" {
		t.Fatalf("after a failed commit the attachment reads %q, want it as before", got)
	}
}

// TestCorruptMembershipClosesItsSocket: a record that does not decode
// cannot be handed to the room; its socket is closed instead of staying
// open and unheard, and the record goes.
func TestCorruptMembershipClosesItsSocket(t *testing.T) {
	fx := newFixture(t, Options{}, func(ctx context.Context, r *Room, c *Conn, msg string) error { return nil })
	s := newSocket()
	bad := storage.Batch{Members: []storage.Member{{ID: uint64(s.id), Data: []byte{0xff, 1, 2}}}}
	if err := storage.CommitAndWait(context.Background(), fx.store, probeRoom.storageRoom(), &bad); err != nil {
		t.Fatal(err)
	}
	fx.say(t, s, "hello")
	if got := s.next(t); !strings.HasPrefix(got, "closed 1011") {
		t.Fatalf("the socket of a corrupt record got %q, want a 1011 close", got)
	}
	if got := testutil.ToFloat64(fx.rt.m.failures.WithLabelValues("membership")); got != 1 {
		t.Fatalf(`roomgate_room_failures_total{reason="membership"} = %v, want 1`, got)
	}
	testkit.WaitFor(t, 5*time.Second, "the corrupt record to go", func() bool {
		ms, _ := fx.store.Members(context.Background(), probeRoom.storageRoom())
		return len(ms) == 0
	})
}

// A busy room is saved only when it falls idle; the sockets that came and
// went meanwhile must not stay on its list of unsaved records.
func TestBusyRoomForgetsSocketsThatLeft(t *testing.T) {
	fx := newFixture(t, Options{HibernateAfter: time.Hour}, func(ctx context.Context, r *Room, c *Conn, msg string) error {
		return c.SendText(fmt.Sprint(len(r.inst.unsaved)))
	})
	stay := fx.connect(t)
	for range 3000 {
		s := fx.connect(t)
		fx.rt.Closed(probeRoom, s, 1000, "")
	}
	fx.say(t, stay, "how many?")
	got := stay.next(t)
	if n, _ := strconv.Atoi(got); n > 2*1+64 {
		t.Fatalf("%s sockets on the unsaved list of a room with one socket", got)
	}
}
