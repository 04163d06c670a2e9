package blockdev

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install e2fsprogs)", tool)
		}
	}
}

// blockCount reads the ext4 block count and size from dumpe2fs -h.
func blockCount(t *testing.T, path string) (count, size int64) {
	t.Helper()
	out, err := exec.Command("dumpe2fs", "-h", path).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs -h %s: %v\n%s", path, err, out)
	}
	for _, re := range []struct {
		re  *regexp.Regexp
		dst *int64
	}{{regexp.MustCompile(`(?m)^Block count:\s+(\d+)`), &count}, {regexp.MustCompile(`(?m)^Block size:\s+(\d+)`), &size}} {
		m := re.re.FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("dumpe2fs -h %s: no %s", path, re.re)
		}
		*re.dst, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return count, size
}

func TestGrowExt4(t *testing.T) {
	requireTools(t, "mkfs.ext4", "e2fsck", "resize2fs", "dumpe2fs")
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "fs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-b", "4096", path, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	if err := os.Truncate(path, 96<<20); err != nil {
		t.Fatal(err)
	}
	if err := GrowExt4(ctx, path); err != nil {
		t.Fatal(err)
	}
	n, bs := blockCount(t, path)
	if got, want := n*bs, int64(96<<20); got != want {
		t.Errorf("filesystem size after grow = %d, want %d", got, want)
	}
	if out, err := exec.Command("e2fsck", "-fn", path).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn after grow: %v\n%s", err, out)
	}
}

func TestGrowExt4NotExt4(t *testing.T) {
	requireTools(t, "e2fsck", "resize2fs")
	path := filepath.Join(t.TempDir(), "junk.img")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a filesystem ", 100000)), 0o644); err != nil {
		t.Fatal(err)
	}
	err := GrowExt4(context.Background(), path)
	if err == nil || !strings.Contains(err.Error(), "e2fsck") || !strings.Contains(err.Error(), path) {
		t.Errorf("GrowExt4 on junk = %v, want an error naming e2fsck and %s", err, path)
	}
}
