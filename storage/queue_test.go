package storage

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomgate/roomgate/internal/testkit"
)

// Batches put while the queue closes are each answered exactly once:
// applied by the flusher, or failed with ErrClosed; none is lost.
func TestCommitQueueAnswersEveryBatchOnce(t *testing.T) {
	for round := range 50 {
		q := NewCommitQueue(8) // small, so some Puts wait on a full queue
		const n = 200
		var answers [n]atomic.Int32
		var applied, closed atomic.Int32
		flushed := make(chan struct{})
		go func() {
			defer close(flushed)
			var group []*Pending
			for {
				var ok bool
				if group, ok = q.Take(group[:0], 4); !ok {
					return
				}
				for _, p := range group {
					p.Done(nil)
				}
			}
		}()
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				q.Put(&Pending{Ctx: context.Background(), Done: func(err error) {
					answers[i].Add(1)
					switch {
					case err == nil:
						applied.Add(1)
					case errors.Is(err, ErrClosed):
						closed.Add(1)
					default:
						t.Errorf("batch %d: %v", i, err)
					}
				}})
			})
		}
		// Close once a share of the batches, different each round, has
		// been answered, the others still on their way. The wait spins:
		// a poll's pause would let every Put through first.
		closeAt := int32(round%5) * n / 8
		for deadline := time.Now().Add(5 * time.Second); applied.Load()+closed.Load() < closeAt; runtime.Gosched() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d of %d batches answered before Close", round, applied.Load()+closed.Load(), closeAt)
			}
		}
		q.Close()
		<-flushed
		q.Fail()
		wg.Wait()
		// A Put that found the queue full answers from its own goroutine,
		// which may run after Close: wait for every answer, then a little
		// longer for any second one.
		testkit.Eventually(t, 5*time.Second, func() error {
			if got := applied.Load() + closed.Load(); got < n {
				return fmt.Errorf("round %d: %d of %d batches answered", round, got, n)
			}
			return nil
		})
		time.Sleep(5 * time.Millisecond) // a negative check: no second answer comes in this window
		for i := range answers {
			if got := answers[i].Load(); got != 1 {
				t.Fatalf("round %d: batch %d answered %d times", round, i, got)
			}
		}
		if applied.Load()+closed.Load() != n {
			t.Fatalf("round %d: %d applied + %d closed != %d", round, applied.Load(), closed.Load(), n)
		}
	}
}

// Put never makes its caller wait (a room must keep serving its loop): on
// a full queue the batch waits in the background, until it is queued or
// its context ends.
func TestCommitQueuePutDoesNotWait(t *testing.T) {
	q := NewCommitQueue(1)
	q.Put(&Pending{Ctx: context.Background(), Done: func(error) { t.Error("the first batch was answered without a flusher") }})
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error, 1)
	q.Put(&Pending{Ctx: ctx, Done: func(err error) { got <- err }}) // a Put that waited would never return
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("full queue: %v, want the context's error", err)
	}
	third := make(chan error, 1)
	q.Put(&Pending{Ctx: context.Background(), Done: func(err error) { third <- err }})
	group, ok := q.Take(nil, 10)
	if !ok || len(group) != 1 {
		t.Fatalf("took %d batches, %v; want the first", len(group), ok)
	}
	if group, _ = q.Take(group[:0], 10); len(group) != 1 {
		t.Fatalf("took %d batches; want the one that waited", len(group))
	}
	group[0].Done(nil)
	if err := <-third; err != nil {
		t.Fatal(err)
	}
}

// Close is not held up by a batch waiting for room in a full queue, even
// while the flusher's answer commits again (a Done may Put): with the wait
// holding the queue's lock, Close waited for it, every Put waited behind
// Close, and the flusher, stuck in such a Put, never made the room.
func TestCommitQueueCloseWhileABatchWaitsForRoom(t *testing.T) {
	q := NewCommitQueue(1)
	release, served := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(served)
		q.Serve(1, func(group []*Pending) {
			<-release // a slow sync
			for _, p := range group {
				p.Done(nil)
			}
		})
	}()
	answers := make(chan error, 4)
	answer := func(err error) { answers <- err }
	commitAgain := func(error) { q.Put(&Pending{Ctx: context.Background(), Done: answer}) }
	q.Put(&Pending{Ctx: context.Background(), Done: commitAgain}) // the flusher takes it
	testkit.WaitFor(t, 5*time.Second, "the flusher to take the first batch", func() bool { return len(q.ch) == 0 })
	q.Put(&Pending{Ctx: context.Background(), Done: answer}) // fills the queue
	waiting := &watchedCtx{Context: context.Background(), asked: make(chan struct{})}
	q.Put(&Pending{Ctx: waiting, Done: answer}) // waits for room
	select {
	case <-waiting.asked:
	case <-time.After(5 * time.Second):
		t.Fatal("the third batch never began to wait for room")
	}
	// Close, with the flusher busy and a batch waiting, returns without
	// waiting for either.
	closed := make(chan struct{})
	go func() { q.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close never returned")
	}
	close(release)
	<-served
	q.Fail()
	for range 3 { // the queued one, the waiting one and the commit-again: each answered once
		select {
		case <-answers:
		case <-time.After(5 * time.Second):
			t.Fatal("a batch was never answered")
		}
	}
}

// watchedCtx closes asked the first time its Done is called: a batch
// waiting for room in a full queue does so as its wait begins.
type watchedCtx struct {
	context.Context
	asked chan struct{}
	once  sync.Once
}

func (c *watchedCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.asked) })
	return c.Context.Done()
}
