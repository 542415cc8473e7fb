// Lock ports Durable Objects' lock / leader election pattern: one object
// per lock name (idFromName) grants it to one holder at a time for a TTL,
// with a fencing token that grows with every grant, and an alarm that
// frees a lock whose holder stopped renewing. Here the alarm is a named
// schedule, "expire", re-armed by renew and cancelled by release.
package main

import (
	"context"
	"encoding/json"
	"time"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/rooms"
)

// Lock is the class: one room per lock, its lease kept in storage.
type Lock struct{}

// lease is the room's one key. Token is the last token granted, kept when
// the lock is free so that the next grant's is greater.
type lease struct {
	Holder string `json:"holder"` // "" when free
	Token  int64  `json:"token"`
	TTL    int64  `json:"ttl_ms"`
}

// Args are every method's argument: acquire reads Holder and TTL, renew
// and release Holder and Token.
type Args struct {
	Holder string `json:"holder"`
	Token  int64  `json:"token"`
	TTL    int64  `json:"ttl_ms"`
}

var errLost = &rooms.UserError{Status: 409, Code: "lost", Message: "not the holder of this lease"}

func (Lock) OnMessage(context.Context, *rooms.Room, *rooms.Conn, rooms.Frame) error { return nil }

func (Lock) Methods() []rooms.RPCMethod {
	return []rooms.RPCMethod{
		rooms.Method("acquire", acquire),
		rooms.Method("renew", renew),
		rooms.Method("release", release),
	}
}

func acquire(ctx context.Context, r *rooms.Room, a Args) (int64, error) {
	if a.Holder == "" || a.TTL < 1 || a.TTL > 3_600_000 {
		return 0, &rooms.UserError{Code: "bad_args", Message: "a holder and a ttl_ms of 1 to 3600000"}
	}
	l, err := load(ctx, r)
	if err != nil {
		return 0, err
	}
	if l.Holder != "" {
		return 0, &rooms.UserError{Status: 409, Code: "held", Message: "held by " + l.Holder}
	}
	l = lease{Holder: a.Holder, Token: l.Token + 1, TTL: a.TTL}
	return l.Token, arm(r, l)
}

func renew(ctx context.Context, r *rooms.Room, a Args) (int64, error) {
	l, err := load(ctx, r)
	if err == nil && (l.Holder != a.Holder || l.Token != a.Token) {
		err = errLost
	}
	if err != nil {
		return 0, err
	}
	return l.Token, arm(r, l)
}

func release(ctx context.Context, r *rooms.Room, a Args) (bool, error) {
	l, err := load(ctx, r)
	if err == nil && (l.Holder != a.Holder || l.Token != a.Token) {
		err = errLost
	}
	if err != nil {
		return false, err
	}
	l.Holder = ""
	if err := save(r, l); err != nil {
		return false, err
	}
	return true, r.CancelSchedule("expire")
}

// OnAlarm runs only when the lease lapsed: renew replaces the "expire"
// schedule and release cancels it, each in the event that changes the lease.
func (Lock) OnAlarm(ctx context.Context, r *rooms.Room, info rooms.AlarmInfo) error {
	l, err := load(ctx, r)
	if err != nil || l.Holder == "" {
		return err
	}
	l.Holder = ""
	return save(r, l)
}

// arm stores the lease and sets its expiry a TTL from now.
func arm(r *rooms.Room, l lease) error {
	if err := save(r, l); err != nil {
		return err
	}
	return r.Schedule("expire", time.Now().Add(time.Duration(l.TTL)*time.Millisecond), nil)
}

func load(ctx context.Context, r *rooms.Room) (l lease, err error) {
	v, err := r.Storage().Get(ctx, "lease")
	if err == nil && v != nil {
		err = json.Unmarshal(v, &l)
	}
	return l, err
}

func save(r *rooms.Room, l lease) error {
	b, _ := json.Marshal(l)
	return r.Storage().Put("lease", b)
}

func main() {
	roomgate.Main(roomgate.Builtins(), roomgate.Class("lock", func() rooms.Handler { return Lock{} }))
}
