package firecracker_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/firecracker/fctest"
)

// TestSpecCopyIsPinned holds the repository's copy of the official spec to what its
// README records (so an edit to the contract cannot pass unnoticed) and the spec the
// contract tests use to the version the client claims.
func TestSpecCopyIsPinned(t *testing.T) {
	t.Setenv(fctest.SpecDirEnv, "") // the repository's copy, whatever the environment says
	for _, tt := range []struct{ file, version string }{
		{fctest.SpecV1161, firecracker.APIVersion},
		{fctest.SpecMain1170, "1.17.0-dev"},
	} {
		t.Run(tt.file, func(t *testing.T) {
			p, err := fctest.FindSpec(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			readme, err := os.ReadFile(filepath.Join(filepath.Dir(p), "README.md"))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			row := ""
			for _, l := range strings.Split(string(readme), "\n") {
				if strings.HasPrefix(l, "| "+tt.file+" |") {
					row = l
				}
			}
			if row == "" {
				t.Fatalf("testdata/README.md has no row for %s: record its origin, version and sha256", tt.file)
			}
			if !strings.Contains(row, hex.EncodeToString(sum[:])) {
				t.Errorf("%s has sha256 %x, which its README row does not record: the copy must be the official file, unchanged", tt.file, sum)
			}
			if !strings.Contains(row, "| "+tt.version+" |") {
				t.Errorf("README row %q does not say version %s", row, tt.version)
			}
			if s := fctest.MustSpec(t, tt.file); s.Version != tt.version {
				t.Errorf("%s says info.version %q, want %q (firecracker.APIVersion is %q)", tt.file, s.Version, tt.version, firecracker.APIVersion)
			}
		})
	}
}
