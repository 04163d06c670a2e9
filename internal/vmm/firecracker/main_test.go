package firecracker_test

import (
	"os"
	"testing"

	"banger/internal/vmm/firecracker/fctest"
)

// TestMain lets this test binary stand in for firecracker and the jailer
// (fctest.MainIfFake): the shutdown and jailer tests launch it as real
// processes.
func TestMain(m *testing.M) {
	fctest.MainIfFake()
	os.Exit(m.Run())
}
