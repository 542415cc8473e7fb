package storage

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
		time.Sleep(time.Duration(round%5) * 100 * time.Microsecond)
		q.Close()
		<-flushed
		q.Fail()
		wg.Wait()
		// A Put that found the queue full answers from its own goroutine,
		// which may run after Close: wait for every answer, then a little
		// longer for any second one.
		deadline := time.Now().Add(5 * time.Second)
		for applied.Load()+closed.Load() < n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(5 * time.Millisecond)
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
	time.Sleep(20 * time.Millisecond)
	q.Put(&Pending{Ctx: context.Background(), Done: answer}) // fills the queue
	q.Put(&Pending{Ctx: context.Background(), Done: answer}) // waits for room
	time.Sleep(20 * time.Millisecond)
	closed := make(chan struct{})
	go func() { q.Close(); close(closed) }()
	time.Sleep(20 * time.Millisecond)
	close(release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close never returned")
	}
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
