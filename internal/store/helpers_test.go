package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testImageID and testKernelID are seeded by newSeededStore so VMs can refer to them.
const (
	testImageID  = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	testKernelID = "k-test"
)

// fakeClock is a deterministic clock: each reading is one second after the last.
type fakeClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// openStore opens the store at path and closes it when the test ends.
func openStore(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// newStore opens a fresh store in a temporary directory, on a fake clock.
func newStore(t testing.TB) *Store {
	t.Helper()
	s := openStore(t, filepath.Join(t.TempDir(), "banger.db"))
	c := &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	s.now = c.now
	return s
}

// newSeededStore is newStore with one image and one kernel for VMs to use.
func newSeededStore(t testing.TB) *Store {
	t.Helper()
	s := newStore(t)
	seed(t, s)
	return s
}

func seed(t testing.TB, s *Store) {
	t.Helper()
	ctx := context.Background()
	if err := s.PutImage(ctx, Image{ID: testImageID, Path: "/images/debian.ext4", SizeBytes: 1 << 30, Tags: []string{"debian:12"}}); err != nil {
		t.Fatalf("PutImage: %v", err)
	}
	if err := s.PutKernel(ctx, Kernel{ID: testKernelID, Name: "vmlinux-6.1", Path: "/kernels/vmlinux"}); err != nil {
		t.Fatalf("PutKernel: %v", err)
	}
}

// testVM returns a valid VM record with the given id and name.
func testVM(id, name string) VM {
	return VM{
		ID: id, Name: name, ImageID: testImageID, KernelID: testKernelID,
		State: VMCreated, CPUs: 2, MemoryMiB: 1024, DiskBytes: 4 << 30, Driver: "qemu",
	}
}

// createVMs creates n VMs named vm-0.. with ids id-0.. and returns their ids.
func createVMs(t testing.TB, s *Store, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%08x", i)
		if err := s.CreateVM(context.Background(), testVM(ids[i], fmt.Sprintf("vm-%d", i))); err != nil {
			t.Fatalf("CreateVM %d: %v", i, err)
		}
	}
	return ids
}

// rawDB opens path with plain database/sql, bypassing the Store, for tests that
// inspect or tamper with the file.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatalf("open raw %s: %v", path, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func queryInt(t testing.TB, db *sql.DB, q string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}
