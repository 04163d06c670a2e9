package privileged_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/blockdev"
	"banger/internal/disk"
	"banger/internal/disk/disktest"
	"banger/internal/layout"
	"banger/internal/privileged"
	"banger/internal/testutil"
)

// TestBlockThroughHelper runs the real banger-helper (as root, for the caller's uid)
// and drives its loop and device-mapper ops through BlockClient: a real loop device
// attached read-only to a file under the root, seen in the list, detached, nothing
// left; hostile calls refused by the real helper with the kernel untouched; and the
// disk conformance suite for dm-snapshot with the helper as its BlockOps, which runs
// where the kernel has device-mapper and skips, saying why, where it has not.
func TestBlockThroughHelper(t *testing.T) {
	testutil.RequireRoot(t)
	// This package's TestMain is in the internal test package, which cannot import
	// testutil (testutil imports privileged); so the binaries testutil builds are
	// removed here, registered first so that it runs after the helper has stopped.
	t.Cleanup(testutil.Cleanup)
	root := testutil.Root(t)
	lay, err := layout.New(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := lay.Create(os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	cl := testutil.StartHelper(t, root)
	bc := privileged.NewBlockClient(cl)
	ctx := context.Background()
	t.Cleanup(func() { detachUnder(t, root) }) // whatever a failing step left

	t.Run("loop attach list detach", func(t *testing.T) {
		dir := filepath.Join(lay.DisksDir(), "vmloop")
		if err := os.Mkdir(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "disk.img")
		content := bytes.Repeat([]byte("banger loop "), 1<<16) // 768 KiB, whole sectors
		if err := os.WriteFile(file, content, 0o600); err != nil {
			t.Fatal(err)
		}
		dev, err := bc.LoopAttach(ctx, file, true)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("attached %s to %s through the helper", file, dev)
		loops, err := bc.LoopList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(loops) != 1 || loops[0].Device != dev || loops[0].BackingFile != file || !loops[0].ReadOnly {
			t.Fatalf("helper's LoopList = %+v, want only %s over %s, read-only", loops, dev, file)
		}
		got, err := os.ReadFile(dev)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content) {
			t.Errorf("%s does not read as %s (%d bytes, want %d)", dev, file, len(got), len(content))
		}
		if f, err := os.OpenFile(dev, os.O_WRONLY, 0); err == nil {
			_, werr := f.Write([]byte("x"))
			f.Close()
			if werr == nil {
				t.Errorf("wrote to the read-only loop %s", dev)
			}
		}
		if err := bc.LoopDetach(ctx, dev); err != nil {
			t.Fatal(err)
		}
		if loops, err := bc.LoopList(ctx); err != nil || len(loops) != 0 {
			t.Errorf("helper's LoopList after detach = %+v, %v; want none", loops, err)
		}
		if left := loopsUnder(t, root); len(left) != 0 {
			t.Errorf("loops left under the root after detach: %+v", left)
		}
		if err := bc.LoopDetach(ctx, dev); err != nil {
			t.Errorf("second detach of %s: %v, want nil (idempotent)", dev, err)
		}
	})

	t.Run("hostile calls refused by the real helper", func(t *testing.T) {
		foreign := filepath.Join(t.TempDir(), "foreign.img")
		if err := os.WriteFile(foreign, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		dev, err := blockdev.LoopAttach(ctx, foreign, true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = blockdev.LoopDetach(context.Background(), dev) })

		wantInvalid(t, bc.LoopDetach(ctx, dev))
		loops, err := blockdev.LoopList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l := find(loops, dev); l == nil || l.BackingFile != foreign {
			t.Errorf("the foreign loop %s over %s is gone or changed after a refused detach: %+v", dev, foreign, l)
		}
		_, err = bc.LoopAttach(ctx, "/etc/passwd", true)
		wantInvalid(t, err)
		_, err = bc.DMCreate(ctx, privileged.DMPrefix(lay.DisksDir())+"vm1", "0 2048 crypt aes-xts-plain64 00 0 "+dev+" 0\n")
		wantInvalid(t, err)
		wantInvalid(t, bc.DMRemove(ctx, "vg0-root"))
		after, err := blockdev.LoopList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range after {
			if l.BackingFile == "/etc/passwd" {
				t.Errorf("a loop over /etc/passwd appeared: %+v", l)
			}
		}
		checkLastAudit(t, lay.AuditLog(), privileged.OpDMRemove, privileged.CodeInvalid)
	})

	t.Run("DMAvailable agrees with the kernel", func(t *testing.T) {
		got, want := bc.DMAvailable(ctx), blockdev.DMAvailable(ctx)
		if (got == nil) != (want == nil) {
			t.Fatalf("helper says %v, blockdev says %v", got, want)
		}
		if got != nil {
			t.Logf("device-mapper unavailable, as the helper reports: %v", got)
		}
	})

	t.Run("conformance "+disk.NameDMSnapshot, func(t *testing.T) {
		disktest.Run(t, func(t *testing.T) disktest.Env {
			s := disk.NewDMSnapshot(disk.Config{DisksDir: lay.DisksDir(), ImagesDir: lay.ImagesDir(), Ops: bc})
			if s.Prefix() != privileged.DMPrefix(lay.DisksDir()) {
				t.Fatalf("disk's prefix %q differs from the helper's %q", s.Prefix(), privileged.DMPrefix(lay.DisksDir()))
			}
			return disktest.Env{Strategy: s, ImagesDir: lay.ImagesDir(), DisksDir: lay.DisksDir()}
		})
	})
}

func wantInvalid(t *testing.T, err error) {
	t.Helper()
	var we *privileged.Error
	if !errors.As(err, &we) || we.Code != privileged.CodeInvalid {
		t.Fatalf("got %v, want a refusal with code %q", err, privileged.CodeInvalid)
	}
	t.Logf("refused: %s", we.Message)
}

func find(loops []blockdev.Loop, dev string) *blockdev.Loop {
	for i := range loops {
		if loops[i].Device == dev {
			return &loops[i]
		}
	}
	return nil
}

func loopsUnder(t *testing.T, dir string) []blockdev.Loop {
	t.Helper()
	loops, err := blockdev.LoopList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return blockdev.LoopsUnder(loops, dir)
}

func detachUnder(t *testing.T, dir string) {
	for _, l := range loopsUnder(t, dir) {
		if err := blockdev.LoopDetach(context.Background(), l.Device); err != nil {
			t.Errorf("cleanup: detach %s: %v", l.Device, err)
		}
	}
}

// checkLastAudit wants the audit log's last line to be op with result.
func checkLastAudit(t *testing.T, path, op, result string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		last = nil
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
	}
	if last["op"] != op || last["result"] != result {
		t.Errorf("last audit line %v, want op %s result %s", last, op, result)
	}
}
