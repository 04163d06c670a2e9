package image_test

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/image"
	"banger/internal/image/imagetest"
)

// BenchmarkConvert measures conversion throughput (MB/s of uncompressed
// layer) for a ~200 MB root filesystem tarball: 190 files of 1 MiB, 2500
// small files in 50 directories, symlinks, setuid and foreign-owned files,
// all the way to a checked ext4 image.
func BenchmarkConvert(b *testing.B) {
	tools := imagetest.Tools(b)
	dir := b.TempDir()
	src := filepath.Join(dir, "rootfs.tar")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	var entries []imagetest.Entry
	for i := range 190 {
		entries = append(entries, imagetest.Entry{Name: fmt.Sprintf("usr/lib/big%03d.so", i), Reader: randReader(1 << 20), Size: 1 << 20, Mode: 0o755})
	}
	small := string(make([]byte, 0, 4096))
	for i := 0; i < 4096; i++ {
		small += string(rune('a' + i%26))
	}
	for i := range 2500 {
		entries = append(entries, imagetest.Entry{Name: fmt.Sprintf("usr/share/d%02d/f%04d", i%50, i), Body: small, UID: i % 3 * 1000})
	}
	for i := range 200 {
		entries = append(entries, imagetest.Entry{Name: fmt.Sprintf("bin/l%03d", i), Type: tar.TypeSymlink, Linkname: "../usr/lib/big000.so"})
	}
	entries = append(entries, imagetest.Entry{Name: "bin/su", Body: "su", Mode: 0o4755})
	imagetest.WriteTar(b, f, entries...)
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(src)
	if err != nil {
		b.Fatal(err)
	}
	bld, err := image.New(image.Config{Tools: tools})
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst := filepath.Join(out, "img.ext4")
		if _, err := bld.Import(context.Background(), src, dst, image.Options{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.Remove(dst); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
