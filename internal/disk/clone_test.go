package disk_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/disk"
	"banger/internal/disk/disktest"
)

// brokenStrategy says it is available, then fails every clone: the situation of a
// device-mapper control node that answers while the snapshot target is missing.
type brokenStrategy struct {
	disk.Strategy
	calls int
}

func (b *brokenStrategy) Name() string                    { return disk.NameDMSnapshot }
func (b *brokenStrategy) Format() disk.Format             { return disk.FormatRaw }
func (b *brokenStrategy) Available(context.Context) error { return nil }
func (b *brokenStrategy) Clone(context.Context, string, disk.CloneRequest) (disk.Disk, error) {
	b.calls++
	return disk.Disk{}, errors.New("dmsetup create: No such device")
}

func TestCloneFallsBackUnderAuto(t *testing.T) {
	disktest.RequireTools(t, "e2fsck", "resize2fs")
	ctx := context.Background()
	images, disks := dirs(t, t.TempDir())
	base := filepath.Join(images, "base.ext4")
	disktest.MakeBase(t, base, 16<<20, 0)

	broken := &brokenStrategy{}
	d, err := disk.Clone(ctx, disk.NameAuto, disk.DriverFirecracker, base,
		disk.CloneRequest{VMID: "vm1", Dir: filepath.Join(disks, "vm1")}, broken, disk.NewCopy())
	if err != nil {
		t.Fatalf("auto with a broken first strategy: %v", err)
	}
	if d.Strategy != disk.NameCopy || broken.calls != 1 {
		t.Errorf("disk made by %s after %d tries of the broken one; want copy after 1", d.Strategy, broken.calls)
	}
	if !strings.Contains(d.Note, "dm-snapshot failed to clone") || !strings.Contains(d.Note, "No such device") {
		t.Errorf("note %q does not say what was passed over and why", d.Note)
	}

	// Named explicitly: no fallback, the error is the strategy's.
	_, err = disk.Clone(ctx, disk.NameDMSnapshot, disk.DriverFirecracker, base,
		disk.CloneRequest{VMID: "vm2", Dir: filepath.Join(disks, "vm2")}, broken, disk.NewCopy())
	if err == nil || !strings.Contains(err.Error(), "No such device") {
		t.Errorf("named dm-snapshot: got %v, want its own failure", err)
	}

	// Everything fails: the error lists each.
	_, err = disk.Clone(ctx, disk.NameAuto, disk.DriverFirecracker, base,
		disk.CloneRequest{VMID: "vm3", Dir: filepath.Join(disks, "vm3")}, broken)
	if err == nil || !strings.Contains(err.Error(), "dm-snapshot failed to clone") {
		t.Errorf("all broken: got %v, want each failure listed", err)
	}

	// A clean first choice leaves no note.
	d, err = disk.Clone(ctx, disk.NameAuto, disk.DriverFirecracker, base,
		disk.CloneRequest{VMID: "vm4", Dir: filepath.Join(disks, "vm4")}, disk.NewCopy())
	if err != nil || d.Note != "" {
		t.Errorf("copy alone: %+v, %v; want no note", d, err)
	}
}

func TestValidName(t *testing.T) {
	for _, n := range []string{"auto", "dm-snapshot", "reflink", "qcow2", "copy"} {
		if err := disk.ValidName(n); err != nil {
			t.Errorf("ValidName(%q) = %v", n, err)
		}
	}
	if err := disk.ValidName("zfs"); err == nil || !strings.Contains(err.Error(), "auto, dm-snapshot, reflink, qcow2, copy") {
		t.Errorf("ValidName(zfs) = %v, want the list", err)
	}
	// Every strategy auto can pick is a name the config and the CLI accept.
	for _, s := range disk.Strategies(disk.Config{DisksDir: t.TempDir()}) {
		if err := disk.ValidName(s.Name()); err != nil {
			t.Errorf("strategy %s: %v", s.Name(), err)
		}
	}
}
