package filestore

import (
	"context"
	"errors"
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
