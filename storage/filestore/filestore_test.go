package filestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestDataSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := storage.Room{Class: "chat", Name: "persist"}
	if err := storage.CommitAndWait(context.Background(), s, r, &storage.Batch{Puts: []storage.KV{{Key: "k", Value: []byte("v")}}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := storage.CommitAndWait(context.Background(), s, r, &storage.Batch{}); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("commit after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Get(context.Background(), r, "k"); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("get after Close: %v, want ErrClosed", err)
	}
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, _ := s2.Get(context.Background(), r, "k")
	if string(got[0]) != "v" {
		t.Fatalf("after reopen: %q", got[0])
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(dir); err == nil {
		t.Fatal("a second process could open the same store")
	}
}

// The single bbolt file of an earlier Roomgate is not read, and not
// silently ignored either: Open says what to do with it.
func TestEarlierStoreIsNamed(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "roomgate.db"), []byte("bbolt"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir)
	if err == nil || !strings.Contains(err.Error(), "roomgate.db") {
		t.Fatalf("open over an earlier store: %v, want an error naming roomgate.db", err)
	}
}

// Commits of many rooms land in shared batches; one with a stale token
// fails alone and writes nothing, the others in its batch are applied.
func TestFencedCommitFailsAloneInItsGroup(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const rooms = 200
	room := func(i int) storage.Room { return storage.Room{Class: "c", Name: fmt.Sprint(i)} }
	for i := range rooms {
		if err := storage.CommitAndWait(ctx, s, room(i), &storage.Batch{Token: 10}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, rooms)
	for i := range rooms {
		token := uint64(11)
		if i%2 == 1 {
			token = 9 // stale
		}
		wg.Add(1)
		s.Commit(ctx, room(i), &storage.Batch{Token: token, Puts: []storage.KV{{Key: "k", Value: []byte("v")}}},
			func(err error) { errs[i] = err; wg.Done() })
	}
	wg.Wait()
	for i := range rooms {
		got, err := s.Get(ctx, room(i), "k")
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case i%2 == 0 && (errs[i] != nil || string(got[0]) != "v"):
			t.Fatalf("room %d: %v, value %q; want applied", i, errs[i], got[0])
		case i%2 == 1 && (!errors.Is(errs[i], storage.ErrFenced) || got[0] != nil):
			t.Fatalf("room %d: %v, value %q; want ErrFenced and nothing written", i, errs[i], got[0])
		}
	}
}

// A commit whose caller gave up before it was applied is not applied, and
// its caller hears why.
func TestCommitGivenUpIsNotApplied(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := storage.Room{Class: "c", Name: "late"}
	err = storage.CommitAndWait(ctx, s, r, &storage.Batch{Puts: []storage.KV{{Key: "k", Value: []byte("v")}}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("commit with an ended context: %v, want context.Canceled", err)
	}
	if got, _ := s.Get(context.Background(), r, "k"); got[0] != nil {
		t.Fatalf("the given-up commit was written: %q", got[0])
	}
}
