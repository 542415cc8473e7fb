package rooms

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/storage/redisstore/redistest"
)

// staff lets in only sockets whose token says role "admin", and answers
// any message with the claims it sees.
type staff struct{}

func (staff) OnConnect(ctx context.Context, r *Room, c *Conn) error {
	if role, _ := c.Claims()["role"].(string); role != "admin" {
		return fmt.Errorf("%w: staff only", ErrRefused)
	}
	return nil
}

func (staff) OnMessage(ctx context.Context, r *Room, c *Conn, f Frame) error {
	cl := c.Claims()
	return c.SendText(fmt.Sprintf("%v/%v", cl["role"], cl["level"]))
}

var (
	adminClaims  = []byte(`{"level":3,"role":"admin"}`)
	memberClaims = []byte(`{"role":"member"}`)
)

// TestClaimsReachTheClassAndSurviveHibernation: a class authorizes by a
// claim in OnConnect, and a woken instance sees the same claims, read
// back from the socket's membership record.
func TestClaimsReachTheClassAndSurviveHibernation(t *testing.T) {
	fx := newFixture(t, Options{HibernateAfter: 50 * time.Millisecond}, nil)
	fx.rt.Register("staff", func() Handler { return staff{} })
	room := Addr{Class: "staff", Room: "office"}
	connect := func(claims []byte) (*testSocket, error) {
		s := newSocket()
		return s, fx.rt.Connect(context.Background(), room, s, ConnectInfo{User: User{ID: "u"}, Claims: claims})
	}
	for _, claims := range [][]byte{memberClaims, nil} {
		if _, err := connect(claims); !errors.Is(err, ErrRefused) {
			t.Fatalf("connect with claims %s: %v, want ErrRefused", claims, err)
		}
	}
	s, err := connect(adminClaims)
	if err != nil {
		t.Fatal(err)
	}
	say := func() string {
		t.Helper()
		if err := fx.rt.Message(context.Background(), room, s, Frame{Op: Text, Data: []byte("who")}); err != nil {
			t.Fatal(err)
		}
		return s.next(t)
	}
	if got := say(); got != "admin/3" {
		t.Fatalf("claims in OnMessage: %q", got)
	}
	testkit.WaitFor(t, 5*time.Second, "the room to hibernate", func() bool { return fx.rt.active(room) == nil })
	if got := say(); got != "admin/3" {
		t.Fatalf("claims after the room woke: %q", got)
	}
}

// TestClaimsCrossTheLink: a socket at one edge joins a room owned by
// another node with its claims.
func TestClaimsCrossTheLink(t *testing.T) {
	redis := redistest.Start(t)
	reg := func(rt *Runtime) {
		rt.Register("staff", func() Handler { return staff{} })
		rt.Attach(sockets)
	}
	a := clusterNode(t, redis.URL(), "a", reg)
	b := clusterNode(t, redis.URL(), "b", reg)
	room := Addr{Class: "staff", Room: "remote"}
	here := newSocket()
	if err := a.Connect(context.Background(), room, here, ConnectInfo{User: User{ID: "boss"}, Claims: adminClaims}); err != nil {
		t.Fatal(err) // the room now runs on a
	}
	if err := b.Connect(context.Background(), room, newSocket(), ConnectInfo{User: User{ID: "m"}, Claims: memberClaims}); !errors.Is(err, ErrRefused) {
		t.Fatalf("a member through b: %v, want ErrRefused", err)
	}
	there := newSocket()
	if err := b.Connect(context.Background(), room, there, ConnectInfo{User: User{ID: "boss2"}, Claims: adminClaims}); err != nil {
		t.Fatalf("an admin through b: %v", err)
	}
	if info, err := b.Room(context.Background(), room); err != nil || info.Owner != "a" || info.Connections != 2 {
		t.Fatalf("room seen from b: %+v, %v; want owned by a with 2 sockets", info, err)
	}
}
