package disk_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"banger/internal/disk"
	"banger/internal/disk/disktest"
)

func TestSelect(t *testing.T) {
	disktest.RequireTools(t, "qemu-img", "e2fsck", "resize2fs")
	ctx := context.Background()
	// An ext4 temp dir: no reflinks, no BlockOps so no dm-snapshot.
	images, disks := dirs(t, t.TempDir())
	plain := disk.Strategies(disk.Config{DisksDir: disks, ImagesDir: images})

	tests := []struct {
		name, strategy, driver string
		want                   string // strategy name, or "" for an error
		errHas                 []string
	}{
		{name: "auto for qemu takes qcow2", strategy: "auto", driver: "qemu", want: disk.NameQcow2},
		{name: "empty is auto", strategy: "", driver: "qemu", want: disk.NameQcow2},
		{name: "auto for firecracker skips qcow2", strategy: "auto", driver: "firecracker", want: disk.NameCopy},
		{name: "named copy", strategy: "copy", driver: "qemu", want: disk.NameCopy},
		{name: "qcow2 for firecracker", strategy: "qcow2", driver: "firecracker", errHas: []string{"qcow2", "firecracker", "cannot open"}},
		{name: "reflink on ext4", strategy: "reflink", driver: "qemu", errHas: []string{"reflink", "ext4", "XFS"}},
		{name: "dm without helper", strategy: "dm-snapshot", driver: "qemu", errHas: []string{"no privileged helper"}},
		{name: "unknown strategy", strategy: "zfs", driver: "qemu", errHas: []string{`"zfs" is unknown`, "auto", "dm-snapshot, reflink, qcow2, copy"}},
		{name: "unknown driver", strategy: "auto", driver: "kvmtool", errHas: []string{"kvmtool", "firecracker", "qemu"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := disk.Select(ctx, tt.strategy, tt.driver, plain...)
			if tt.want != "" {
				if err != nil || s.Name() != tt.want {
					t.Fatalf("Select = %v, %v; want %s", s, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Select = %s, want an error", s.Name())
			}
			for _, want := range tt.errHas {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}

	t.Run("nothing available says why", func(t *testing.T) {
		_, err := disk.Select(ctx, "auto", "firecracker", disk.NewDMSnapshot(disk.Config{DisksDir: disks}), disk.NewQcow2())
		if !errors.Is(err, disk.ErrUnavailable) || !strings.Contains(err.Error(), "dm-snapshot: ") || !strings.Contains(err.Error(), "qcow2: the firecracker driver cannot open qcow2") {
			t.Errorf("got %v, want ErrUnavailable with each strategy's reason", err)
		}
	})

	t.Run("auto prefers reflink where the filesystem has it", func(t *testing.T) {
		root := mountXFS(t, xfsSize)
		images, disks := dirs(t, root)
		for _, driver := range []string{"firecracker", "qemu"} {
			s, err := disk.Select(ctx, "auto", driver, disk.Strategies(disk.Config{DisksDir: disks, ImagesDir: images})...)
			if err != nil || s.Name() != disk.NameReflink {
				t.Errorf("%s on XFS: Select = %v, %v; want reflink", driver, s, err)
			}
		}
		// Images elsewhere: a reflink across filesystems is impossible.
		_, err := disk.Select(ctx, "reflink", "qemu", disk.NewReflink(disks, t.TempDir()))
		if !errors.Is(err, disk.ErrUnavailable) || !strings.Contains(err.Error(), "different filesystems") {
			t.Errorf("images on ext4, disks on XFS: %v, want unavailable on different filesystems", err)
		}
	})
}

func TestFind(t *testing.T) {
	all := disk.Strategies(disk.Config{DisksDir: t.TempDir()})
	for _, s := range all {
		got, err := disk.Find(disk.Disk{Strategy: s.Name()}, all...)
		if err != nil || got != s {
			t.Errorf("Find(%s) = %v, %v", s.Name(), got, err)
		}
	}
	if _, err := disk.Find(disk.Disk{VMID: "v", Strategy: "zfs"}, all...); err == nil {
		t.Errorf("Find of an unknown strategy: nil error")
	}
}
