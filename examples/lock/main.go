// Lock ports Durable Objects' lock / leader election pattern: one object
// per lock name (idFromName) grants it to one holder at a time for a TTL,
// with a fencing token that grows with every grant, and an alarm that
// frees a lock whose holder stopped renewing. Here the alarm is a named
// schedule, "expire", re-armed by renew and cancelled by release.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/roomgate/roomgate"
	"github.com/roomgate/roomgate/rooms"
)

// Lock is the class: one room per lock, its lease kept in storage.
type Lock struct{}

// Lease is the room's one key and every method's argument: acquire reads
// Holder and TTL, renew and release Holder and Token. The stored Token is
// the last one granted, kept while the lock is free so the next is greater.
type Lease struct {
	Holder string `json:"holder"` // "" when free
	Token  int64  `json:"token"`
	TTL    int64  `json:"ttl_ms"`
}

func (Lock) OnMessage(context.Context, *rooms.Room, *rooms.Conn, rooms.Frame) error { return nil }

func (Lock) Methods() []rooms.RPCMethod {
	return []rooms.RPCMethod{rooms.Method("acquire", acquire), rooms.Method("renew", renew), rooms.Method("release", release)}
}

func acquire(ctx context.Context, r *rooms.Room, a Lease) (int64, error) {
	l, err := load(ctx, r)
	switch {
	case err != nil:
		return 0, err
	case l.Holder != "":
		return 0, &rooms.UserError{Status: 409, Code: "held", Message: "held by " + l.Holder}
	case a.Holder == "" || a.TTL < 1:
		return 0, &rooms.UserError{Code: "bad_lease", Message: "a holder and a ttl_ms"}
	}
	a.Token = l.Token + 1
	return a.Token, arm(r, a)
}

func renew(ctx context.Context, r *rooms.Room, a Lease) (int64, error) {
	l, err := mine(ctx, r, a)
	if err != nil {
		return 0, err
	}
	return l.Token, arm(r, l)
}

func release(ctx context.Context, r *rooms.Room, a Lease) (bool, error) {
	l, err := mine(ctx, r, a)
	if err != nil {
		return false, err
	}
	l.Holder = ""
	return true, errors.Join(save(r, l), r.CancelSchedule("expire"))
}

// OnAlarm runs only when the lease lapsed: renew replaces the "expire"
// schedule and release cancels it, each in the event that changes the lease.
func (Lock) OnAlarm(ctx context.Context, r *rooms.Room, _ rooms.AlarmInfo) error {
	l, err := load(ctx, r)
	if err != nil {
		return err
	}
	l.Holder = ""
	return save(r, l)
}

// mine loads the lease, refused with 409 "lost" unless a holds it.
func mine(ctx context.Context, r *rooms.Room, a Lease) (Lease, error) {
	l, err := load(ctx, r)
	if err == nil && (l.Holder == "" || l.Holder != a.Holder || l.Token != a.Token) {
		err = &rooms.UserError{Status: 409, Code: "lost", Message: "not the holder of this lease"}
	}
	return l, err
}

// arm stores the lease and sets its expiry a TTL from now.
func arm(r *rooms.Room, l Lease) error {
	if err := save(r, l); err != nil {
		return err
	}
	return r.Schedule("expire", time.Now().Add(time.Duration(l.TTL)*time.Millisecond), nil)
}

func load(ctx context.Context, r *rooms.Room) (l Lease, err error) {
	v, err := r.Storage().Get(ctx, "lease")
	if err == nil && v != nil {
		err = json.Unmarshal(v, &l)
	}
	return l, err
}

func save(r *rooms.Room, l Lease) error {
	b, _ := json.Marshal(l)
	return r.Storage().Put("lease", b)
}

func main() {
	roomgate.Main(roomgate.Builtins(), roomgate.Class("lock", func() rooms.Handler { return Lock{} }))
}
