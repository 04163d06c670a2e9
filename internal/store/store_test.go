package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWriteWaitHonoursContext: a write waiting for the lock, whether held by
// another goroutine of this Store or by another connection to the file, gives
// up when its context ends instead of sitting out the busy timeout.
func TestWriteWaitHonoursContext(t *testing.T) {
	t.Run("this store", func(t *testing.T) {
		s := newSeededStore(t)
		s.wlock <- struct{}{} // a write in progress
		t.Cleanup(func() { <-s.wlock })
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err := s.CreateVM(ctx, testVM("0000aaaa", "dev"))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("CreateVM while the store is writing: got %v, want DeadlineExceeded", err)
		}
	})
	t.Run("another connection", func(t *testing.T) {
		s := newSeededStore(t)
		other := rawDB(t, s.Path())
		tx, err := other.Begin() // BEGIN IMMEDIATE: holds the write lock
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback() })

		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		err = s.CreateVM(ctx, testVM("0000aaaa", "dev"))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("CreateVM while another connection holds the write lock: got %v, want DeadlineExceeded", err)
		}
		if waited := time.Since(start); waited > busyTimeout/2 {
			t.Errorf("CreateVM waited %s: the context (200ms) did not cut the busy wait short", waited)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateVM(context.Background(), testVM("0000aaaa", "dev")); err != nil {
			t.Errorf("CreateVM after the lock is released: %v", err)
		}
	})
}
