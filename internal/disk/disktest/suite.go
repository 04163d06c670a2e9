// Package disktest is the conformance suite every disk.Strategy must pass, in the
// manner of containerd's snapshotter testsuite: one set of behaviours, run against
// each backend on real files, real loop and device-mapper devices and real e2fsprogs
// and qemu-img. A backend is plugged in through an Env; the suite never knows which
// strategy it is testing beyond its Format.
package disktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"banger/internal/disk"
)

// Env is one strategy under test and where it works.
type Env struct {
	Strategy disk.Strategy
	// ImagesDir receives the base images the suite makes. For reflink it must share
	// DisksDir's filesystem.
	ImagesDir string
	// DisksDir is the parent of the VM directories (dm-snapshot's Config.DisksDir).
	DisksDir string
}

// Run runs the suite. newEnv is called once; it must skip t, saying why, when the
// strategy cannot run here, and must register the cleanup of what it makes.
func Run(t *testing.T, newEnv func(t *testing.T) Env) {
	RequireTools(t, "mkfs.ext4", "debugfs", "dumpe2fs", "e2fsck", "resize2fs")
	env := newEnv(t)
	if err := env.Strategy.Available(context.Background()); err != nil {
		t.Skipf("%s is not available here: %v", env.Strategy.Name(), err)
	}
	s := &suite{env: env}
	t.Run("CloneReadsBase", s.cloneReadsBase)
	t.Run("WritesNeverReachBase", s.writesNeverReachBase)
	t.Run("Grow", s.grow)
	t.Run("Sparse", s.sparse)
	t.Run("RemoveReleasesEverything", s.removeReleasesEverything)
	t.Run("FailedCloneLeavesNothing", s.failedCloneLeavesNothing)
	t.Run("ParallelClones", s.parallelClones)
	t.Run("StateRoundTrip", s.stateRoundTrip)
	t.Run("ActivateLiveDisk", s.activateLiveDisk)
}

type suite struct {
	env Env
}

// baseSize is the size of the suite's base images: small enough to be quick,
// large enough for e2fsprogs' defaults.
const baseSize = 64 << 20

// newBase makes a base image named after the test and returns its path.
func (s *suite) newBase(t *testing.T) string {
	t.Helper()
	p := filepath.Join(s.env.ImagesDir, strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())+".ext4")
	MakeBase(t, p, baseSize, 1<<20)
	t.Cleanup(func() { os.Remove(p) })
	return p
}

// vmReq returns a request for a fresh VM id whose directory is under DisksDir.
func (s *suite) vmReq(t *testing.T, id string) disk.CloneRequest {
	t.Helper()
	return disk.CloneRequest{VMID: id, Dir: filepath.Join(s.env.DisksDir, id)}
}

// clone clones base and registers the disk's removal at the end of the test.
func (s *suite) clone(t *testing.T, base string, req disk.CloneRequest) disk.Disk {
	t.Helper()
	d, err := s.env.Strategy.Clone(context.Background(), base, req)
	if err != nil {
		t.Fatalf("Clone(%s, %+v): %v", base, req, err)
	}
	t.Cleanup(func() {
		if err := s.env.Strategy.Remove(context.Background(), d); err != nil {
			t.Errorf("cleanup: Remove: %v", err)
		}
	})
	return d
}

// assertClean fails t if anything of vmID's disk is left.
func (s *suite) assertClean(t *testing.T, dir, vmID string) {
	t.Helper()
	if left := Leftovers(t, dir, vmID, s.env.DisksDir, s.env.ImagesDir); len(left) > 0 {
		t.Errorf("left behind for vm %s:\n  %s", vmID, strings.Join(dedupe(left), "\n  "))
	}
}

func (s *suite) cloneReadsBase(t *testing.T) {
	base := s.newBase(t)
	d := s.clone(t, base, s.vmReq(t, "reads"))
	if d.Strategy != s.env.Strategy.Name() || d.Format != s.env.Strategy.Format() || d.VMID != "reads" {
		t.Errorf("disk says strategy %q format %q vm %q, want %q %q %q", d.Strategy, d.Format, d.VMID, s.env.Strategy.Name(), s.env.Strategy.Format(), "reads")
	}
	if d.SizeBytes != baseSize || d.NeedsOnlineResize {
		t.Errorf("size %d (needs online resize %v), want %d and no resize", d.SizeBytes, d.NeedsOnlineResize, baseSize)
	}
	if _, err := os.Stat(d.Path); err != nil {
		t.Fatalf("the VMM's path: %v", err)
	}
	if got := ReadFile(t, d, HelloPath); got != HelloText {
		t.Errorf("clone's %s = %q, want %q", HelloPath, got, HelloText)
	}
	Fsck(t, RawView(t, d))
}

// writeClone changes d's filesystem where it shares blocks with the base and returns
// the content HelloPath must now read as.
func (s *suite) writeClone(t *testing.T, d disk.Disk, base string) string {
	t.Helper()
	const content = "written in the clone\n"
	if d.Format == disk.FormatRaw {
		WriteRaw(t, d.Path, "/written.txt", content)
		if got := ReadFile(t, d, "/written.txt"); got != content {
			t.Errorf("clone's /written.txt = %q, want %q", got, content)
		}
		Fsck(t, d.Path)
		return content
	}
	// qcow2: overwrite the block that holds HelloPath's data in the base, at the
	// block level through QEMU's own I/O path.
	RequireTools(t, "qemu-io")
	off := BlockOf(t, base, HelloPath)
	Cmd(t, "qemu-io", "-f", string(d.Format), "-c", fmt.Sprintf("write -P 0x41 %d 4096", off), d.Path)
	Cmd(t, "qemu-io", "-f", string(d.Format), "-c", fmt.Sprintf("read -P 0x41 %d 4096", off), d.Path)
	return strings.Repeat("A", len(HelloText))
}

func (s *suite) writesNeverReachBase(t *testing.T) {
	base := s.newBase(t)
	before := Checksum(t, base)
	a := s.clone(t, base, s.vmReq(t, "writer"))
	b := s.clone(t, base, s.vmReq(t, "bystander"))
	want := s.writeClone(t, a, base)
	if got := ReadFile(t, a, HelloPath); got != want {
		t.Errorf("written clone's %s = %q, want %q", HelloPath, got, want)
	}
	if got := ReadFile(t, b, HelloPath); got != HelloText {
		t.Errorf("other clone's %s = %q after a write to the first, want %q", HelloPath, got, HelloText)
	}
	if after := Checksum(t, base); after != before {
		t.Errorf("base checksum changed by a write to a clone: %s, was %s", after, before)
	}
	if got := Debugfs(t, base, "cat "+HelloPath); got != HelloText {
		t.Errorf("base's %s = %q, want %q", HelloPath, got, HelloText)
	}
}

func (s *suite) grow(t *testing.T) {
	base := s.newBase(t)
	before := Checksum(t, base)
	req := s.vmReq(t, "grown")
	req.SizeBytes = baseSize + 64<<20 + 1 // rounded up to whole 4 KiB blocks
	want := int64(baseSize + 64<<20 + 4096)
	d := s.clone(t, base, req)
	if d.SizeBytes != want {
		t.Errorf("disk size %d, want %d", d.SizeBytes, want)
	}
	switch {
	case d.Format == disk.FormatQcow2:
		if got := VirtualSize(t, d.Path); got != want {
			t.Errorf("qemu-img info: virtual size %d, want %d", got, want)
		}
		if d.NeedsOnlineResize {
			t.Logf("filesystem not grown on the host (no FUSE export here); the disk asks the guest to resize online")
			break
		}
		flat := RawView(t, d)
		checkGrown(t, FSBytes(t, flat), want)
		Fsck(t, flat)
	default:
		if d.NeedsOnlineResize {
			t.Errorf("a raw disk asks for an online resize; it must be grown on the host")
		}
		checkGrown(t, FSBytes(t, d.Path), want)
		Fsck(t, d.Path)
	}
	if got := ReadFile(t, d, HelloPath); got != HelloText {
		t.Errorf("grown clone's %s = %q, want %q", HelloPath, got, HelloText)
	}
	if after := Checksum(t, base); after != before {
		t.Errorf("base checksum changed by growing a clone")
	}
	if fi, _ := os.Stat(base); fi.Size() != baseSize {
		t.Errorf("base size %d after growing a clone, want %d", fi.Size(), baseSize)
	}
}

// checkGrown checks that a grown filesystem fills its disk. resize2fs leaves off a
// last block group too small to hold its own metadata, so a few blocks may remain
// unused at the end; a filesystem that was not grown is 64 MiB short.
func checkGrown(t *testing.T, fs, disk int64) {
	t.Helper()
	if fs > disk || fs < disk-1<<20 {
		t.Errorf("filesystem size %d, want the disk's %d (less at most 1 MiB)", fs, disk)
	}
}

// sparse: a clone must cost no more space than the base's own data (reflink, copy)
// or close to nothing (qcow2, dm-snapshot).
func (s *suite) sparse(t *testing.T) {
	base := s.newBase(t)
	d := s.clone(t, base, s.vmReq(t, "sparse"))
	var files []string
	for _, f := range d.Files {
		if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() && !sameFile(f, base) {
			files = append(files, f)
		}
	}
	var used int64
	for _, f := range files {
		used += Allocated(t, f)
	}
	limit := Allocated(t, base) + 1<<20
	if used > limit {
		t.Errorf("the clone's files %v take %d bytes, more than the base's allocation plus 1 MiB (%d): zeros were materialised", files, used, limit)
	}
	t.Logf("base allocates %d of %d bytes; clone files allocate %d", Allocated(t, base), int64(baseSize), used)
}

func (s *suite) removeReleasesEverything(t *testing.T) {
	base := s.newBase(t)
	req := s.vmReq(t, "removed")
	req.SizeBytes = baseSize * 2
	d, err := s.env.Strategy.Clone(context.Background(), base, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.env.Strategy.Remove(context.Background(), d); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	s.assertClean(t, d.Dir, d.VMID)
	if _, err := os.Stat(d.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the disk directory %s Clone made is still there after Remove (stat: %v)", d.Dir, err)
	}
	if err := s.env.Strategy.Remove(context.Background(), d); err != nil {
		t.Errorf("second Remove: %v, want nil (Remove is idempotent)", err)
	}
	// A directory Clone did not make is the caller's: emptied, kept.
	req = s.vmReq(t, "predir")
	if err := os.Mkdir(req.Dir, 0o750); err != nil {
		t.Fatal(err)
	}
	d = s.clone(t, base, req)
	if err := s.env.Strategy.Remove(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	s.assertClean(t, req.Dir, d.VMID)
	if _, err := os.Stat(req.Dir); err != nil {
		t.Errorf("Remove deleted a directory Clone did not make: %v", err)
	}
}

func (s *suite) failedCloneLeavesNothing(t *testing.T) {
	base := s.newBase(t)
	junk := filepath.Join(s.env.ImagesDir, "junk.img")
	if err := os.WriteFile(junk, []byte(strings.Repeat("not ext4 ", 1<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(junk) })
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name    string
		base    string
		ctx     context.Context
		prepare func(t *testing.T, req *disk.CloneRequest)
		check   func(t *testing.T, err error)
		// mayNeedGuest: the strategy may succeed by leaving the work to the guest
		// (a qcow2 overlay that asks for an online resize).
		mayNeedGuest bool
	}{
		{name: "size below the base", base: base, prepare: func(t *testing.T, req *disk.CloneRequest) {
			req.SizeBytes = baseSize - 1<<20
		}, check: func(t *testing.T, err error) {
			if !errors.Is(err, disk.ErrTooSmall) {
				t.Errorf("got %v, want ErrTooSmall", err)
			}
		}},
		{name: "missing base", base: filepath.Join(s.env.ImagesDir, "missing.ext4")},
		{name: "relative base", base: "images/base.ext4"},
		{name: "directory parent missing", base: base, prepare: func(t *testing.T, req *disk.CloneRequest) {
			req.Dir = filepath.Join(s.env.DisksDir, "no-such-parent", req.VMID)
		}},
		{name: "directory not writable", base: base, prepare: func(t *testing.T, req *disk.CloneRequest) {
			if err := os.Mkdir(req.Dir, 0o750); err != nil {
				t.Fatal(err)
			}
			if os.Geteuid() == 0 {
				SetImmutable(t, req.Dir, true) // root ignores modes; not this
				t.Cleanup(func() { SetImmutable(t, req.Dir, false) })
			} else {
				if err := os.Chmod(req.Dir, 0o500); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.Chmod(req.Dir, 0o750) })
			}
		}},
		{name: "base not ext4, grown", base: junk, mayNeedGuest: true, prepare: func(t *testing.T, req *disk.CloneRequest) {
			req.SizeBytes = 16 << 20
		}},
		{name: "cancelled", base: base, ctx: cancelled},
		{name: "invalid vm id", base: base, prepare: func(t *testing.T, req *disk.CloneRequest) {
			req.VMID = "../escape"
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := s.vmReq(t, fmt.Sprintf("fail%d", i))
			if tt.prepare != nil {
				tt.prepare(t, &req)
			}
			_, statErr := os.Stat(req.Dir)
			existed := statErr == nil
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			d, err := s.env.Strategy.Clone(ctx, tt.base, req)
			switch {
			case err == nil && tt.mayNeedGuest && d.NeedsOnlineResize:
				t.Logf("succeeded by leaving the resize to the guest")
				if err := s.env.Strategy.Remove(context.Background(), d); err != nil {
					t.Fatal(err)
				}
			case err == nil:
				s.env.Strategy.Remove(context.Background(), d)
				t.Fatalf("Clone succeeded (%+v), want an error", d)
			default:
				t.Logf("error, as wanted: %v", err)
				if tt.check != nil {
					tt.check(t, err)
				}
			}
			s.assertClean(t, req.Dir, fmt.Sprintf("fail%d", i))
			if _, err := os.Stat(req.Dir); !existed && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed clone left its directory %s (stat: %v)", req.Dir, err)
			}
		})
	}

	// A clone into a directory that already holds a disk fails, and must not touch
	// the disk that is there.
	t.Run("directory already has a disk", func(t *testing.T) {
		req := s.vmReq(t, "twice")
		first := s.clone(t, base, req)
		sum := Checksum(t, first.Path)
		if d, err := s.env.Strategy.Clone(context.Background(), base, req); err == nil {
			s.env.Strategy.Remove(context.Background(), d)
			t.Fatalf("second Clone into %s succeeded, want an error", req.Dir)
		} else {
			t.Logf("error, as wanted: %v", err)
		}
		if got := Checksum(t, first.Path); got != sum {
			t.Errorf("the failed second clone changed the first disk")
		}
		if got := ReadFile(t, first, HelloPath); got != HelloText {
			t.Errorf("first disk's %s = %q after a failed second clone, want %q", HelloPath, got, HelloText)
		}
	})
}

func (s *suite) parallelClones(t *testing.T) {
	base := s.newBase(t)
	const n = 4
	disks := make([]disk.Disk, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := s.vmReq(t, fmt.Sprintf("par%d", i))
			if i%2 == 1 {
				req.SizeBytes = baseSize + 32<<20
			}
			disks[i], errs[i] = s.env.Strategy.Clone(context.Background(), base, req)
		}()
	}
	wg.Wait()
	paths := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Errorf("clone %d: %v", i, errs[i])
			continue
		}
		if paths[disks[i].Path] {
			t.Errorf("clone %d got a path another clone has: %s", i, disks[i].Path)
		}
		paths[disks[i].Path] = true
		if got := ReadFile(t, disks[i], HelloPath); got != HelloText {
			t.Errorf("clone %d reads %q, want %q", i, got, HelloText)
		}
	}
	for i := range n {
		if errs[i] == nil {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = s.env.Strategy.Remove(context.Background(), disks[i]) }()
		}
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("remove %d: %v", i, errs[i])
		}
		s.assertClean(t, filepath.Join(s.env.DisksDir, fmt.Sprintf("par%d", i)), fmt.Sprintf("par%d", i))
	}
}

// stateRoundTrip: bangerd stores the Disk as JSON and removes the VM after a restart
// from what it stored.
func (s *suite) stateRoundTrip(t *testing.T) {
	base := s.newBase(t)
	req := s.vmReq(t, "stored")
	req.SizeBytes = baseSize + 8<<20
	d, err := s.env.Strategy.Clone(context.Background(), base, req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back disk.Disk
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, d) {
		t.Errorf("JSON round trip changed the disk:\n got %+v\nwant %+v", back, d)
	}
	t.Logf("stored as %s", b)
	if err := s.env.Strategy.Remove(context.Background(), back); err != nil {
		t.Fatalf("Remove from the stored disk: %v", err)
	}
	s.assertClean(t, d.Dir, d.VMID)
}

// activateLiveDisk: activating a disk whose devices (if any) exist changes nothing.
func (s *suite) activateLiveDisk(t *testing.T) {
	base := s.newBase(t)
	d := s.clone(t, base, s.vmReq(t, "active"))
	got, err := disk.Activate(context.Background(), d, s.env.Strategy)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, d) {
		t.Errorf("Activate changed a live disk:\n got %+v\nwant %+v", got, d)
	}
	if text := ReadFile(t, got, HelloPath); text != HelloText {
		t.Errorf("after Activate %s = %q, want %q", HelloPath, text, HelloText)
	}
}

// sameFile reports whether a and b are the same inode (a hard link to the base).
func sameFile(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

func dedupe(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
