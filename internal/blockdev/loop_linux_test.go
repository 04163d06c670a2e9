package blockdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// requireLoop skips unless this process can attach loop devices.
func requireLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches loop devices")
	}
	if _, err := os.Stat(loopControl); err != nil {
		t.Skipf("needs loop devices: %v", err)
	}
}

// testDir returns a temporary directory whose loop devices are detached when the
// test ends, whatever happened.
func testDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		loops, err := LoopList(context.Background())
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		for _, l := range LoopsUnder(loops, dir) {
			if err := LoopDetach(context.Background(), l.Device); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return dir
}

// patternFile writes a file of size bytes whose every 512-byte sector holds its index.
func patternFile(t *testing.T, path string, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	for i := 0; i < size; i += 512 {
		copy(data[i:], fmt.Sprintf("sector %d", i/512))
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

// loopFor returns the bound loop whose backing file is path, if any.
func loopFor(t *testing.T, path string) (Loop, bool) {
	t.Helper()
	loops, err := LoopList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range loops {
		if l.BackingFile == path {
			return l, true
		}
	}
	return Loop{}, false
}

func TestLoopAttachReadOnly(t *testing.T) {
	requireLoop(t)
	ctx := context.Background()
	path := filepath.Join(testDir(t), "base.img")
	want := patternFile(t, path, 4<<20)

	dev, err := LoopAttach(ctx, path, true)
	if err != nil {
		t.Fatal(err)
	}
	l, ok := loopFor(t, path)
	if !ok {
		t.Fatalf("no loop device lists %s as its backing file after attach", path)
	}
	if l.Device != dev || !l.ReadOnly || l.Autoclear {
		t.Errorf("sysfs says %+v, want device %s, read-only, not autoclear", l, dev)
	}

	got, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("reading %s: %d bytes, not the backing file's content (%d bytes)", dev, len(got), len(want))
	}

	// A read-only device refuses writers, at open or at write.
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteAt([]byte("overwrite"), 0)
		if err == nil {
			err = f.Sync()
		}
		f.Close()
	}
	if err == nil {
		t.Errorf("writing to read-only %s succeeded", dev)
	} else if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EROFS) {
		t.Errorf("writing to read-only %s: got %v, want EPERM, EACCES or EROFS", dev, err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, want) {
		t.Errorf("backing file changed through a read-only loop device")
	}

	if err := LoopDetach(ctx, dev); err != nil {
		t.Fatal(err)
	}
	if l, ok := loopFor(t, path); ok {
		t.Errorf("after detach %s still lists %s", l.Device, path)
	}
}

func TestLoopAttachWritable(t *testing.T) {
	requireLoop(t)
	ctx := context.Background()
	path := filepath.Join(testDir(t), "rw.img")
	patternFile(t, path, 1<<20)
	dev, err := LoopAttach(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := loopFor(t, path); l.ReadOnly {
		t.Errorf("writable attach is read-only: %+v", l)
	}
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("written through loop"), 4096); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := LoopDetach(ctx, dev); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b[4096 : 4096+20]); got != "written through loop" {
		t.Errorf("backing file at 4096 = %q, want the bytes written through %s", got, dev)
	}
}

// Parallel attaches race for the device LOOP_CTL_GET_FREE hands out; each must still
// get its own device.
func TestLoopAttachParallel(t *testing.T) {
	requireLoop(t)
	ctx := context.Background()
	dir := testDir(t)
	const n = 8
	devs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("f%d.img", i))
		patternFile(t, p, 64<<10)
		wg.Add(1)
		go func() {
			defer wg.Done()
			devs[i], errs[i] = LoopAttach(ctx, p, i%2 == 0)
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i := range n {
		if errs[i] != nil {
			t.Errorf("attach %d: %v", i, errs[i])
			continue
		}
		if j, dup := seen[devs[i]]; dup {
			t.Errorf("attach %d and %d both got %s", i, j, devs[i])
		}
		seen[devs[i]] = i
		l, ok := loopFor(t, filepath.Join(dir, fmt.Sprintf("f%d.img", i)))
		if !ok || l.Device != devs[i] {
			t.Errorf("attach %d: sysfs has %+v, want %s", i, l, devs[i])
		}
	}
	for _, d := range devs {
		if d != "" {
			if err := LoopDetach(ctx, d); err != nil {
				t.Error(err)
			}
		}
	}
	loops, err := LoopList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if left := LoopsUnder(loops, dir); len(left) > 0 {
		t.Errorf("loops left after detaching all: %+v", left)
	}
}

// LoopDetach on a device someone still holds must not pull it from under them: the
// kernel marks it autoclear and detaches it at the last close. The dm-snapshot
// strategy relies on this to tie its loops' lifetime to its dm tables.
func TestLoopDetachWhileHeldIsDeferred(t *testing.T) {
	requireLoop(t)
	ctx := context.Background()
	path := filepath.Join(testDir(t), "held.img")
	want := patternFile(t, path, 64<<10)
	dev, err := LoopAttach(ctx, path, true)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := LoopDetach(ctx, dev); err != nil {
		holder.Close()
		t.Fatal(err)
	}
	l, ok := loopFor(t, path)
	if !ok || !l.Autoclear {
		t.Errorf("after detach while held: %+v (listed %v), want still bound with autoclear", l, ok)
	}
	buf := make([]byte, 512)
	if _, err := holder.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, want[:512]) {
		t.Errorf("holder read after deferred detach: %v, %q", err, buf[:16])
	}
	holder.Close()
	if l, ok := loopFor(t, path); ok {
		t.Errorf("after the holder closed, %s is still bound to %s", l.Device, path)
	}
}

func TestLoopDetachIdempotent(t *testing.T) {
	requireLoop(t)
	ctx := context.Background()
	path := filepath.Join(testDir(t), "twice.img")
	patternFile(t, path, 64<<10)
	dev, err := LoopAttach(ctx, path, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := LoopDetach(ctx, dev); err != nil {
			t.Errorf("detach #%d: %v", i+1, err)
		}
	}
	if err := LoopDetach(ctx, "/dev/loop999999"); err != nil {
		t.Errorf("detach of a device that does not exist: %v, want nil", err)
	}
}

func TestLoopBadArguments(t *testing.T) {
	requireLoop(t)
	ctx := context.Background()
	dir := testDir(t)
	tests := []struct {
		name string
		call func() error
	}{
		{"relative path", func() error { _, err := LoopAttach(ctx, "rel.img", true); return err }},
		{"missing file", func() error { _, err := LoopAttach(ctx, filepath.Join(dir, "nope"), true); return err }},
		{"directory", func() error { _, err := LoopAttach(ctx, dir, true); return err }},
		{"detach non-loop", func() error { return LoopDetach(ctx, "/dev/sda") }},
		{"detach traversal", func() error { return LoopDetach(ctx, "/dev/loop0/../sda") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err == nil {
				t.Errorf("got nil error, want one")
			}
		})
	}
	if loops, _ := LoopList(ctx); len(LoopsUnder(loops, dir)) != 0 {
		t.Errorf("a failed attach left a loop device")
	}
}

// The kernel appends " (deleted)" to a backing file whose path was unlinked; the
// listing must still attribute the device to that path.
func TestLoopListDeletedBackingFile(t *testing.T) {
	requireLoop(t)
	ctx := context.Background()
	path := filepath.Join(testDir(t), "gone.img")
	patternFile(t, path, 64<<10)
	dev, err := LoopAttach(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = LoopDetach(ctx, dev) })
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	l, ok := loopFor(t, path)
	if !ok || !l.Deleted || l.Device != dev {
		t.Errorf("got %+v (found %v), want %s backed by deleted %s", l, ok, dev, path)
	}
}

func TestIsUnder(t *testing.T) {
	tests := []struct {
		path, dir string
		want      bool
	}{
		{"/a/b/c", "/a/b", true},
		{"/a/b/c/d", "/a/b/", true},
		{"/a/b", "/a/b", false},
		{"/a/bc", "/a/b", false},
		{"/a/b/../c", "/a/b", false},
		{"/a", "/a/b", false},
		{"/a/b/..x", "/a/b", true},
	}
	for _, tt := range tests {
		if got := IsUnder(tt.path, tt.dir); got != tt.want {
			t.Errorf("IsUnder(%q, %q) = %v, want %v", tt.path, tt.dir, got, tt.want)
		}
	}
}
