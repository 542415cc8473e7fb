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

// Lock is the class: one room per lock. Its lease is kept in storage;
// the field is a cache of it, loaded by OnStart.
type Lock struct{ l Lease }

// Lease is the room's one key and every method's argument: acquire reads
// Holder and TTL, renew and release Holder and Token. The stored Token is
// the last one granted, kept while the lock is free so the next is greater.
type Lease struct {
	Holder string `json:"holder"` // "" when free
	Token  int64  `json:"token"`
	TTL    int64  `json:"ttl_ms"`
}

var errLost = &rooms.UserError{Status: 409, Code: "lost", Message: "not the holder of this lease"}

func (k *Lock) OnStart(ctx context.Context, r *rooms.Room) error {
	v, err := r.Storage().Get(ctx, "lease")
	if err == nil && v != nil {
		err = json.Unmarshal(v, &k.l)
	}
	return err
}

func (k *Lock) OnMessage(context.Context, *rooms.Room, *rooms.Conn, rooms.Frame) error { return nil }

func (k *Lock) Methods() []rooms.RPCMethod {
	return []rooms.RPCMethod{rooms.Method("acquire", k.acquire), rooms.Method("renew", k.renew), rooms.Method("release", k.release)}
}

func (k *Lock) acquire(ctx context.Context, r *rooms.Room, a Lease) (int64, error) {
	if k.l.Holder != "" {
		return 0, &rooms.UserError{Status: 409, Code: "held", Message: "held by " + k.l.Holder}
	}
	if a.Holder == "" || a.TTL < 1 {
		return 0, &rooms.UserError{Code: "bad_lease", Message: "a holder and a ttl_ms"}
	}
	a.Token = k.l.Token + 1
	return a.Token, k.arm(r, a)
}

func (k *Lock) renew(ctx context.Context, r *rooms.Room, a Lease) (int64, error) {
	if !k.holds(a) {
		return 0, errLost
	}
	return a.Token, k.arm(r, k.l)
}

func (k *Lock) release(ctx context.Context, r *rooms.Room, a Lease) (bool, error) {
	if !k.holds(a) {
		return false, errLost
	}
	k.l.Holder = ""
	return true, errors.Join(k.save(r), r.CancelSchedule("expire"))
}

// OnAlarm runs only when the lease lapsed: renew replaces the "expire"
// schedule and release cancels it, each in the event that changes the lease.
func (k *Lock) OnAlarm(ctx context.Context, r *rooms.Room, _ rooms.AlarmInfo) error {
	k.l.Holder = ""
	return k.save(r)
}

func (k *Lock) holds(a Lease) bool {
	return k.l.Holder != "" && k.l.Holder == a.Holder && k.l.Token == a.Token
}

// arm makes l the lease and sets its expiry a TTL from now.
func (k *Lock) arm(r *rooms.Room, l Lease) error {
	k.l = l
	if err := k.save(r); err != nil {
		return err
	}
	return r.Schedule("expire", time.Now().Add(time.Duration(l.TTL)*time.Millisecond), nil)
}

// save writes the lease; an event that fails rebuilds the field from it.
func (k *Lock) save(r *rooms.Room) error {
	b, _ := json.Marshal(k.l)
	return r.Storage().Put("lease", b)
}

func main() {
	roomgate.Main(roomgate.Builtins(), roomgate.Class("lock", func() rooms.Handler { return new(Lock) }))
}
