package layers_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/image/imagetest"
	. "banger/internal/image/layers"
)

// BenchmarkApply measures applying a ~200 MB layer to a tree and laying
// out the staging area, the part of a conversion before mkfs.ext4.
func BenchmarkApply(b *testing.B) {
	blob := make([]byte, 1<<20)
	for i := range blob {
		blob[i] = byte(i*7 + 1)
	}
	var entries []imagetest.Entry
	for i := range 190 {
		entries = append(entries, imagetest.Entry{Name: fmt.Sprintf("big%03d", i), Body: string(blob)})
	}
	for i := range 2500 {
		entries = append(entries, imagetest.Entry{Name: fmt.Sprintf("d%02d/f%04d", i%50, i), Body: string(blob[:4096])})
	}
	data := imagetest.Tar(b, entries...)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := filepath.Join(b.TempDir(), "s")
		if err := os.Mkdir(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		tree, err := NewTree(dir, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		if err := tree.ApplyLayer(context.Background(), bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		if _, err := tree.Materialize(context.Background()); err != nil {
			b.Fatal(err)
		}
		tree.Close()
	}
}
