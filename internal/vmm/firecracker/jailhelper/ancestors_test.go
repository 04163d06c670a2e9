package jailhelper

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRootOwnedAncestors(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes directories owned by another user")
	}
	safe, err := os.MkdirTemp("/tmp", "bj-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(safe) })
	if err := os.Chmod(safe, 0o755); err != nil {
		t.Fatal(err)
	}
	// /tmp is world-writable but sticky: only root may rename the root-owned entry.
	if err := rootOwnedAncestors(safe); err != nil {
		t.Errorf("a root-owned dir under /tmp: %v", err)
	}
	owned := filepath.Join(safe, "owner")
	if err := os.Mkdir(owned, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(owned, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(owned, "root")
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := rootOwnedAncestors(inner); err == nil || !strings.Contains(err.Error(), owned) {
		t.Errorf("an ancestor owned by uid 12345: err = %v, want it named", err)
	}
	open := filepath.Join(safe, "groupwritable")
	if err := os.Mkdir(open, 0o775); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o775); err != nil {
		t.Fatal(err)
	}
	if err := rootOwnedAncestors(open); err == nil {
		t.Error("a group-writable ancestor was accepted")
	}
}
