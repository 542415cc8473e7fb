package storage

import (
	"context"
	"sync"
)

// Pending is a commit waiting in a CommitQueue.
type Pending struct {
	Ctx   context.Context
	Room  Room
	Batch *Batch
	Done  func(error)
}

// CommitQueue is a store's group commit: Commit puts batches in, and the
// store's flushers take out, each time, one batch (waiting for it) and
// everything that queued up meanwhile, to apply with one fsync or one
// round trip. Answers go back through callbacks, so a room waits for its
// commit without a goroutine of its own, and is woken directly by the
// flusher.
type CommitQueue struct {
	ch      chan *Pending
	stop    chan struct{}
	mu      sync.RWMutex // Put holds it shared while queueing, so Close sees every queued batch
	closed  bool
	waiters sync.WaitGroup // Puts waiting in the background for room in the queue
}

// NewCommitQueue makes a queue holding up to size batches.
func NewCommitQueue(size int) *CommitQueue {
	return &CommitQueue{ch: make(chan *Pending, size), stop: make(chan struct{})}
}

// Put queues p and returns without waiting: when the queue is full, a
// goroutine waits to queue it (a room must keep serving its loop). A
// closed queue answers ErrClosed, before Put returns; a batch whose ctx
// ends while it waits for room is answered with ctx's error.
func (q *CommitQueue) Put(p *Pending) {
	if err := q.put(p); err != nil {
		p.Done(err) // outside the lock: Done may commit again
	}
}

// put queues p, or, when the queue is full, hands the wait to a goroutine.
func (q *CommitQueue) put(p *Pending) error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return ErrClosed
	}
	select {
	case q.ch <- p:
		return nil
	default:
	}
	q.waiters.Add(1)
	go q.putWaiting(p)
	return nil
}

// putWaiting waits for room in the queue without holding the lock: Close,
// waiting for it, would otherwise stop every Put behind it, and a flusher
// whose Done commits again would never drain the queue the wait is for.
func (q *CommitQueue) putWaiting(p *Pending) {
	defer q.waiters.Done()
	select {
	case q.ch <- p: // Fail answers it, should the queue close meanwhile
	case <-q.stop:
		p.Done(ErrClosed)
	case <-p.Ctx.Done():
		p.Done(p.Ctx.Err())
	}
}

// Take waits for a batch and appends it to group with those queued behind
// it, up to max in all. It returns false once the queue is closed.
func (q *CommitQueue) Take(group []*Pending, max int) ([]*Pending, bool) {
	select {
	case p := <-q.ch:
		group = append(group, p)
	case <-q.stop:
		return group, false
	}
	for len(group) < max {
		select {
		case p := <-q.ch:
			group = append(group, p)
		default:
			return group, true
		}
	}
	return group, true
}

// Serve is a flusher's loop: it takes groups of up to max batches and
// hands each to apply, which answers every batch, until the queue closes.
func (q *CommitQueue) Serve(max int, apply func(group []*Pending)) {
	group := make([]*Pending, 0, max)
	for {
		var ok bool
		if group, ok = q.Take(group[:0], max); !ok {
			return
		}
		apply(group)
		clear(group)
	}
}

// Close stops the queue: Put answers ErrClosed from now on, and Take
// returns false. Call Fail once the flushers are done, to answer what
// they left queued.
func (q *CommitQueue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.stop)
	}
}

// Fail answers every batch still queued with ErrClosed: none was applied.
func (q *CommitQueue) Fail() {
	q.waiters.Wait() // each has queued its batch or answered it
	for {
		select {
		case p := <-q.ch:
			p.Done(ErrClosed)
		default:
			return
		}
	}
}
