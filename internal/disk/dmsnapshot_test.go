package disk_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/blockdev"
	"banger/internal/disk"
	"banger/internal/disk/disktest"
)

// dmEnv is a dm-snapshot strategy over the fake device-mapper and real loops, with
// a fresh base image.
type dmEnv struct {
	fake          *fakeDM
	s             *disk.DMSnapshot
	images, disks string
	base          string
}

func newDMEnv(t *testing.T) *dmEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches loop devices")
	}
	disktest.RequireTools(t, "mkfs.ext4")
	e := &dmEnv{fake: newFakeDM()}
	e.images, e.disks = dirs(t, t.TempDir())
	e.s = disk.NewDMSnapshot(disk.Config{DisksDir: e.disks, ImagesDir: e.images, Ops: e.fake})
	e.base = filepath.Join(e.images, "base.ext4")
	disktest.MakeBase(t, e.base, 32<<20, 0)
	e.fake.closeAll(t)
	t.Cleanup(func() { // detach whatever a failing test left
		loops, _ := blockdev.LoopList(context.Background())
		for _, l := range blockdev.LoopsUnder(loops, e.disks) {
			_ = blockdev.LoopDetach(context.Background(), l.Device)
		}
	})
	return e
}

// loopsOf returns the loops backed by files under dir.
func loopsOf(t *testing.T, dir string) []blockdev.Loop {
	t.Helper()
	loops, err := blockdev.LoopList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return blockdev.LoopsUnder(loops, dir)
}

func TestDMSnapshotTablesAndLifecycle(t *testing.T) {
	e := newDMEnv(t)
	ctx := context.Background()
	req := disk.CloneRequest{VMID: "abc123", Dir: filepath.Join(e.disks, "abc123"), SizeBytes: 48 << 20}
	d, err := e.s.Clone(ctx, e.base, req)
	if err != nil {
		t.Fatal(err)
	}
	name := e.s.Prefix() + "abc123"
	if d.DM == nil || d.DM.Name != name || d.DM.Origin != name+".origin" || d.Path != "/dev/mapper/"+name {
		t.Fatalf("disk = %+v (dm %+v), want devices %s and %s.origin", d, d.DM, name, name)
	}

	loops := loopsOf(t, d.Dir)
	byFile := map[string]blockdev.Loop{}
	for _, l := range loops {
		byFile[filepath.Base(l.BackingFile)] = l
	}
	baseLoop, cowLoop := byFile["base.img"], byFile["cow.img"]
	if len(loops) != 2 || baseLoop.Device == "" || cowLoop.Device == "" {
		t.Fatalf("loops under the disk directory: %+v, want one on base.img and one on cow.img", loops)
	}
	if !baseLoop.ReadOnly || cowLoop.ReadOnly {
		t.Errorf("base loop read-only %v, COW loop read-only %v; want true, false", baseLoop.ReadOnly, cowLoop.ReadOnly)
	}
	if !baseLoop.Autoclear || !cowLoop.Autoclear {
		t.Errorf("loops not handed to their tables (autoclear): %+v", loops)
	}
	if fi, err := os.Stat(d.DM.BaseFile); err != nil || !sameInode(t, d.DM.BaseFile, e.base) {
		t.Errorf("base file %s is not a hard link to the base: %v", d.DM.BaseFile, err)
	} else if fi.Size() != 32<<20 {
		t.Errorf("base link size %d", fi.Size())
	}

	wantOrigin := fmt.Sprintf("0 65536 linear %s 0\n65536 32768 zero\n", baseLoop.Device)
	if got := e.fake.table(d.DM.Origin); got != wantOrigin {
		t.Errorf("origin table:\n%q\nwant\n%q", got, wantOrigin)
	}
	wantSnap := fmt.Sprintf("0 98304 snapshot /dev/mapper/%s %s P 8\n", d.DM.Origin, cowLoop.Device)
	if got := e.fake.table(name); got != wantSnap {
		t.Errorf("snapshot table:\n%q\nwant\n%q", got, wantSnap)
	}
	if !containsCall(e.fake.calls, "GrowExt4 /dev/mapper/"+name) {
		t.Errorf("grown disk: no GrowExt4 on the snapshot; calls %q", e.fake.calls)
	}
	cow, err := os.Stat(d.DM.COWFile)
	if err != nil {
		t.Fatal(err)
	}
	if cow.Size() < 48<<20 || disktest.Allocated(t, d.DM.COWFile) > 64<<10 {
		t.Errorf("COW file size %d (allocated %d): want at least the disk's size, sparse", cow.Size(), disktest.Allocated(t, d.DM.COWFile))
	}

	if err := e.s.Remove(ctx, d); err != nil {
		t.Fatal(err)
	}
	if left := disktest.Leftovers(t, d.Dir, d.VMID, e.disks, e.images); len(left) > 0 {
		t.Errorf("left after Remove: %q", left)
	}
	if names, _ := e.fake.DMList(ctx); len(names) > 0 {
		t.Errorf("device-mapper devices left after Remove: %q", names)
	}
	if _, err := os.Stat(d.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("disk directory still there: %v", err)
	}
}

// A disk the size of its base has no origin device: the snapshot sits on the loop.
func TestDMSnapshotSameSizeHasNoOrigin(t *testing.T) {
	e := newDMEnv(t)
	ctx := context.Background()
	d, err := e.s.Clone(ctx, e.base, disk.CloneRequest{VMID: "same", Dir: filepath.Join(e.disks, "same")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.s.Remove(ctx, d)
	if d.DM.Origin != "" || containsCall(e.fake.calls, "GrowExt4") {
		t.Errorf("same-size disk: origin %q, calls %q; want no origin and no grow", d.DM.Origin, e.fake.calls)
	}
	got := e.fake.table(d.DM.Name)
	if !strings.HasPrefix(got, "0 65536 snapshot /dev/loop") || !strings.HasSuffix(got, " P 8\n") {
		t.Errorf("snapshot table %q, want 0 65536 snapshot /dev/loopN /dev/loopM P 8", got)
	}
}

// Every step of Clone can fail; each failure must leave no loop, dm device or file.
func TestDMSnapshotFailedStepsLeaveNothing(t *testing.T) {
	steps := []string{"LoopAttach#1", "LoopAttach#2", "DMCreate:.origin", "DMCreate:grown", "GrowExt4#1", "LoopDetach#1", "LoopDetach#2"}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			e := newDMEnv(t)
			injected := fmt.Errorf("injected failure at %s", step)
			e.fake.fail[step] = injected
			req := disk.CloneRequest{VMID: "grown", Dir: filepath.Join(e.disks, "grown"), SizeBytes: 40 << 20}
			_, err := e.s.Clone(context.Background(), e.base, req)
			if !errors.Is(err, injected) {
				t.Fatalf("Clone error %v, want the injected one", err)
			}
			if left := disktest.Leftovers(t, req.Dir, req.VMID, e.disks, e.images); len(left) > 0 {
				t.Errorf("left behind: %q", left)
			}
			if names, _ := e.fake.DMList(context.Background()); len(names) > 0 {
				t.Errorf("device-mapper devices left behind: %q", names)
			}
			if _, err := os.Stat(req.Dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("directory left behind: %v", err)
			}
		})
	}
}

func TestDMSnapshotReap(t *testing.T) {
	e := newDMEnv(t)
	ctx := context.Background()
	clone := func(id string) disk.Disk {
		t.Helper()
		d, err := e.s.Clone(ctx, e.base, disk.CloneRequest{VMID: id, Dir: filepath.Join(e.disks, id), SizeBytes: 40 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	kept, lost := clone("kept"), clone("lost")
	// A crash between LoopAttach and DMCreate leaves a loop nothing holds.
	stray := filepath.Join(e.disks, "crashed", "cow.img")
	if err := os.MkdirAll(filepath.Dir(stray), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stray, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := blockdev.LoopAttach(ctx, stray, false); err != nil {
		t.Fatal(err)
	}
	// Another banger root's device and a device that is not banger's: not ours to reap.
	other := disk.NewDMSnapshot(disk.Config{DisksDir: t.TempDir(), Ops: e.fake})
	for _, n := range []string{other.Prefix() + "x", "vg0-root"} {
		if _, err := e.fake.DMCreate(ctx, n, "0 8 zero\n"); err != nil {
			t.Fatal(err)
		}
	}

	if err := disk.Reap(ctx, disk.Config{DisksDir: e.disks, Ops: e.fake}, []disk.Disk{kept}); err != nil {
		t.Fatal(err)
	}
	names, _ := e.fake.DMList(ctx)
	want := []string{kept.DM.Name, kept.DM.Origin, other.Prefix() + "x", "vg0-root"}
	for _, n := range want {
		if !contains(names, n) {
			t.Errorf("Reap removed %s, which it must keep (left: %q)", n, names)
		}
	}
	if len(names) != len(want) {
		t.Errorf("after Reap: %q, want exactly %q", names, want)
	}
	if left := loopsOf(t, lost.Dir); len(left) > 0 {
		t.Errorf("loops of the reaped disk left: %+v", left)
	}
	if left := loopsOf(t, filepath.Dir(stray)); len(left) > 0 {
		t.Errorf("stray loop left: %+v", left)
	}
	if got := loopsOf(t, kept.Dir); len(got) != 2 {
		t.Errorf("kept disk has loops %+v, want its two", got)
	}
	if err := e.s.Remove(ctx, kept); err != nil {
		t.Fatal(err)
	}
	// The reaped disk's files remain for the VM service; Remove still finishes it.
	if err := e.s.Remove(ctx, lost); err != nil {
		t.Fatal(err)
	}
}

// After a reboot the devices are gone but the files are not: Activate makes the
// same tables again over the same files.
func TestDMSnapshotActivate(t *testing.T) {
	e := newDMEnv(t)
	ctx := context.Background()
	d, err := e.s.Clone(ctx, e.base, disk.CloneRequest{VMID: "reboot", Dir: filepath.Join(e.disks, "reboot"), SizeBytes: 40 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer e.s.Remove(ctx, d)
	before := len(e.fake.calls)
	again, err := disk.Activate(ctx, d, e.s)
	if err != nil || again.Path != d.Path || len(e.fake.calls) != before {
		t.Fatalf("Activate of a live disk: %v, %+v, calls %q; want it unchanged and nothing done", err, again, e.fake.calls[before:])
	}
	e.fake.forget()
	if left := loopsOf(t, d.Dir); len(left) > 0 {
		t.Fatalf("loops outlived their tables: %+v", left)
	}
	again, err = disk.Activate(ctx, d, e.s)
	if err != nil {
		t.Fatal(err)
	}
	if again.Path != d.Path || e.fake.table(d.DM.Origin) == "" || e.fake.table(d.DM.Name) == "" {
		t.Errorf("after Activate: %+v, tables %q / %q", again, e.fake.table(d.DM.Origin), e.fake.table(d.DM.Name))
	}
	if n := len(loopsOf(t, d.Dir)); n != 2 {
		t.Errorf("after Activate %d loops, want 2", n)
	}
}

func TestDMSnapshotRefusesForeignDisks(t *testing.T) {
	e := newDMEnv(t)
	ctx := context.Background()
	good := disk.Disk{VMID: "v1", Strategy: disk.NameDMSnapshot, Dir: filepath.Join(e.disks, "v1"),
		DM: &disk.DMState{Name: e.s.Prefix() + "v1"}}
	tests := []struct {
		name string
		mod  func(d *disk.Disk)
	}{
		{"another root's device", func(d *disk.Disk) { d.DM.Name = "banger-00000000-v1" }},
		{"someone else's device", func(d *disk.Disk) { d.DM.Name = "vg0-root" }},
		{"origin not its own", func(d *disk.Disk) { d.DM.Origin = "vg0-root" }},
		{"directory outside disks", func(d *disk.Disk) { d.Dir = "/etc" }},
		{"not a dm disk", func(d *disk.Disk) { d.DM = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := good
			st := *good.DM
			d.DM = &st
			tt.mod(&d)
			before := len(e.fake.calls)
			if err := e.s.Remove(ctx, d); err == nil {
				t.Errorf("Remove(%+v) = nil, want a refusal", d)
			}
			if len(e.fake.calls) != before {
				t.Errorf("a refused Remove still called the helper: %q", e.fake.calls[before:])
			}
		})
	}
}

func TestDMSnapshotUnavailable(t *testing.T) {
	ctx := context.Background()
	if err := disk.NewDMSnapshot(disk.Config{DisksDir: t.TempDir()}).Available(ctx); !errors.Is(err, disk.ErrUnavailable) {
		t.Errorf("without BlockOps: Available() = %v, want ErrUnavailable", err)
	}
	f := newFakeDM()
	f.noDMYet = true
	err := disk.NewDMSnapshot(disk.Config{DisksDir: t.TempDir(), Ops: f}).Available(ctx)
	if !errors.Is(err, disk.ErrUnavailable) || !strings.Contains(err.Error(), "/dev/mapper/control") {
		t.Errorf("without device-mapper: Available() = %v, want ErrUnavailable naming /dev/mapper/control", err)
	}
	// On this host, through the real operations: whatever the kernel says.
	err = disk.NewDMSnapshot(disk.Config{DisksDir: t.TempDir(), Ops: blockdev.Local{}}).Available(ctx)
	t.Logf("dm-snapshot with the real kernel here: %v", err)
	if _, statErr := os.Stat("/dev/mapper/control"); statErr != nil && !errors.Is(err, disk.ErrUnavailable) {
		t.Errorf("no /dev/mapper/control, but Available() = %v", err)
	}
}

func TestDMSnapshotPrefixPerRoot(t *testing.T) {
	a := disk.NewDMSnapshot(disk.Config{DisksDir: "/var/lib/banger/state/disks"})
	b := disk.NewDMSnapshot(disk.Config{DisksDir: "/tmp/other/state/disks"})
	if a.Prefix() == b.Prefix() || !strings.HasPrefix(a.Prefix(), "banger-") {
		t.Errorf("prefixes %q and %q: want distinct, starting banger-", a.Prefix(), b.Prefix())
	}
	if err := blockdev.ValidateDMName(a.Prefix() + strings.Repeat("f", 64) + ".origin"); err != nil {
		t.Errorf("longest name is not a valid dm name: %v", err)
	}
}

func containsCall(calls []string, prefix string) bool {
	for _, c := range calls {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func sameInode(t *testing.T, a, b string) bool {
	t.Helper()
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}
