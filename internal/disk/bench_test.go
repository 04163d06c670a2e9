package disk_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/blockdev"
	"banger/internal/disk"
	"banger/internal/disk/disktest"
)

// BenchmarkClone times one Clone per strategy (Remove is outside the timer) for a
// 256 MiB and a 1 GiB base image, each a quarter real data and the rest holes, like
// a pulled image with headroom. Reflink, qcow2 and dm-snapshot should be a few
// milliseconds and the same for both sizes; copy grows with the data. ms/clone is
// reported so the figures print; scripts/bench-disk.sh adds the ratios to copy.
func BenchmarkClone(b *testing.B) {
	disktest.RequireTools(b, "mkfs.ext4", "e2fsck", "resize2fs")
	sizes := []struct {
		name string
		size int64
	}{{"256MiB", 256 << 20}, {"1GiB", 1 << 30}}

	// Bases on the test's own filesystem, for copy, qcow2 and dm-snapshot.
	plainImages, plainDisks := dirs(b, b.TempDir())
	bases := map[string]string{}
	for _, sz := range sizes {
		p := filepath.Join(plainImages, sz.name+".ext4")
		disktest.MakeBase(b, p, sz.size, sz.size/4)
		bases[sz.name] = p
	}

	type env struct {
		s            disk.Strategy
		images, dirs string
	}
	envs := []env{
		{disk.NewCopy(), plainImages, plainDisks},
		{disk.NewQcow2(), plainImages, plainDisks},
	}
	var skipped []string
	if os.Geteuid() == 0 {
		if err := blockdev.DMAvailable(context.Background()); err == nil {
			envs = append(envs, env{disk.NewDMSnapshot(disk.Config{DisksDir: plainDisks, Ops: blockdev.Local{}}), plainImages, plainDisks})
		} else {
			skipped = append(skipped, "dm-snapshot: "+err.Error())
		}
		// Reflink needs the bases on XFS too: copy them there, sparse.
		xfsImages, xfsDisks := dirs(b, mountXFS(b, 4<<30))
		for _, sz := range sizes {
			disktest.Cmd(b, "cp", "--sparse=always", "--reflink=never", bases[sz.name], filepath.Join(xfsImages, sz.name+".ext4"))
		}
		envs = append(envs, env{disk.NewReflink(xfsDisks, xfsImages), xfsImages, xfsDisks})
	} else {
		skipped = append(skipped, "reflink and dm-snapshot: need root (loop mounts, loop devices)")
	}
	for _, why := range skipped {
		b.Logf("not benchmarked: %s", why)
	}

	ctx := context.Background()
	for _, e := range envs {
		if err := e.s.Available(ctx); err != nil {
			b.Logf("not benchmarked: %v", err)
			continue
		}
		for _, sz := range sizes {
			base := filepath.Join(e.images, sz.name+".ext4")
			b.Run(e.s.Name()+"/"+sz.name, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					id := fmt.Sprintf("bench%d", i)
					d, err := e.s.Clone(ctx, base, disk.CloneRequest{VMID: id, Dir: filepath.Join(e.dirs, id)})
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := e.s.Remove(ctx, d); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/clone")
			})
		}
	}
}
