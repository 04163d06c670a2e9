package e2e_test

import (
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestBusyboxRootfsIsReproducible builds the quickstart's busybox tarball twice, a
// second apart, and wants the same bytes: otherwise every quickstart run imports a
// new image and leaves the previous one dangling as <none>.
func TestBusyboxRootfsIsReproducible(t *testing.T) {
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("busybox is not installed (scripts/deps.sh installs busybox-static)")
	}
	dir := t.TempDir()
	sum := func(name string) [32]byte {
		out := filepath.Join(dir, name)
		if b, err := exec.Command("bash", repoPath(t, "scripts/mkrootfs-busybox.sh"), out).CombinedOutput(); err != nil {
			t.Fatalf("mkrootfs-busybox.sh: %v\n%s", err, b)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(data)
	}
	a := sum("a.tar")
	time.Sleep(1100 * time.Millisecond) // a new second: mtimes would differ
	if b := sum("b.tar"); a != b {
		t.Errorf("two builds differ: %x vs %x", a, b)
	}
}
