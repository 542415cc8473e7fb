package rooms

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roomgate/roomgate/internal/testkit"
)

// quotaProbe writes what it is told: "put KEY N" (N bytes), "many N"
// (keys a and b, N bytes each, all or none), "del KEY", "wipe N" (DeleteAll,
// then w with N bytes), and answers "ok", "limit" or the error.
func quotaProbe(ctx context.Context, r *Room, c *Conn, msg string) error {
	s := r.Storage()
	f := strings.Fields(msg)
	n := 0
	if len(f) > 1 {
		n, _ = strconv.Atoi(f[len(f)-1])
	}
	var err error
	switch f[0] {
	case "put":
		err = s.Put(f[1], make([]byte, n))
	case "many":
		err = s.PutMany(map[string][]byte{"a": make([]byte, n), "b": make([]byte, n)})
	case "del":
		err = s.Delete(f[1])
	case "wipe":
		if err = s.DeleteAll(); err == nil {
			err = s.Put("w", make([]byte, n))
		}
	case "get":
		v, gerr := s.Get(ctx, f[1])
		return c.SendText(fmt.Sprintf("%d %v", len(v), gerr))
	}
	switch {
	case errors.Is(err, ErrLimit):
		return c.SendText("limit")
	case err != nil:
		return err
	}
	return c.SendText("ok")
}

// TestStorageQuota: a room's writes past MaxRoomBytes fail with ErrLimit
// and are counted; overwrites that do not grow the room and deletes always
// pass; the count survives a new instance (it reads the room's size once)
// and a DeleteAll starts it again. Before, a room grew without a bound:
// 513 MB of chat in 16 s across four rooms (issue 14).
func TestStorageQuota(t *testing.T) {
	const limit = 10000
	fx := newFixture(t, Options{MaxRoomBytes: limit}, quotaProbe)
	s := fx.connect(t)
	expect := func(fx *fixture, s *testSocket, msg, want string) {
		t.Helper()
		fx.say(t, s, msg)
		if got := s.next(t); got != want {
			t.Fatalf("%s: got %q, want %q", msg, got, want)
		}
	}
	committed := func(want int64) {
		t.Helper()
		testkit.Eventually(t, 5*time.Second, func() error {
			st, _, err := fx.store.Stat(context.Background(), probeRoom.storageRoom())
			if err != nil || st.Bytes != want {
				return fmt.Errorf("stored %d bytes (%v), want %d", st.Bytes, err, want)
			}
			return nil
		})
	}
	expect(fx, s, "put k1 6000", "ok")
	expect(fx, s, "put k2 6000", "limit")
	expect(fx, s, "put k1 6000", "ok") // replaces a value as large: never refused
	expect(fx, s, "put k1 3000", "ok")
	committed(3002)
	expect(fx, s, "put k2 6000", "ok") // 3,002 + 6,002 fits
	expect(fx, s, "put k3 1000", "limit")
	expect(fx, s, "many 1000", "limit") // all or none
	expect(fx, s, "get a", "0 <nil>")
	expect(fx, s, "del k2", "ok")
	committed(3002)
	expect(fx, s, "put k3 1000", "ok")
	committed(4004)
	if n := testutil.ToFloat64(fx.rt.m.limited.WithLabelValues("storage_quota")); n != 3 {
		t.Errorf("roomgate_room_limited_total{kind=storage_quota} = %v, want 3", n)
	}

	// Another runtime on the same store builds a new instance, which reads
	// the room's size before its first write.
	fx2 := newFixture(t, Options{MaxRoomBytes: limit, Store: fx.store}, quotaProbe)
	s2 := fx2.connect(t)
	expect(fx2, s2, "put k4 6000", "limit") // 4,004 + 6,002
	expect(fx2, s2, "put k4 5000", "ok")
	expect(fx2, s2, "wipe 9000", "ok") // nothing stored counts after a DeleteAll
	expect(fx2, s2, "put k5 2000", "limit")
}
