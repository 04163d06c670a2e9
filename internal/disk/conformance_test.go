package disk_test

import (
	"context"
	"os"
	"testing"

	"banger/internal/blockdev"
	"banger/internal/disk"
	"banger/internal/disk/disktest"
)

// TestConformance runs the one suite against every strategy this machine has.
// Where one cannot run, its subtest is skipped with the reason.
func TestConformance(t *testing.T) {
	t.Run(disk.NameCopy, func(t *testing.T) {
		disktest.Run(t, func(t *testing.T) disktest.Env {
			images, disks := dirs(t, t.TempDir())
			return disktest.Env{Strategy: disk.NewCopy(), ImagesDir: images, DisksDir: disks}
		})
	})
	t.Run(disk.NameQcow2, func(t *testing.T) {
		disktest.Run(t, func(t *testing.T) disktest.Env {
			disktest.RequireTools(t, "qemu-img")
			images, disks := dirs(t, t.TempDir())
			return disktest.Env{Strategy: disk.NewQcow2(), ImagesDir: images, DisksDir: disks}
		})
	})
	t.Run(disk.NameReflink, func(t *testing.T) {
		disktest.Run(t, func(t *testing.T) disktest.Env {
			images, disks := dirs(t, mountXFS(t, xfsSize))
			return disktest.Env{Strategy: disk.NewReflink(disks, images), ImagesDir: images, DisksDir: disks}
		})
	})
	t.Run(disk.NameDMSnapshot, func(t *testing.T) {
		disktest.Run(t, func(t *testing.T) disktest.Env {
			if os.Geteuid() != 0 {
				t.Skip("needs root: attaches loop devices and creates device-mapper devices")
			}
			if err := blockdev.DMAvailable(context.Background()); err != nil {
				t.Skipf("skipped: %v", err)
			}
			images, disks := dirs(t, t.TempDir())
			s := disk.NewDMSnapshot(disk.Config{DisksDir: disks, ImagesDir: images, Ops: blockdev.Local{}})
			return disktest.Env{Strategy: s, ImagesDir: images, DisksDir: disks}
		})
	})
}
