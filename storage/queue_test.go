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

// A Put that waits on a full queue gives up when its context ends.
func TestCommitQueuePutHonoursContext(t *testing.T) {
	q := NewCommitQueue(1)
	q.Put(&Pending{Ctx: context.Background(), Done: func(error) { t.Error("the first batch was answered without a flusher") }})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	got := make(chan error, 1)
	q.Put(&Pending{Ctx: ctx, Done: func(err error) { got <- err }})
	if err := <-got; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("full queue: %v, want the context's error", err)
	}
}
