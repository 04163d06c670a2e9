package firecracker_test

import (
	"os"
	"testing"

	"banger/internal/testutil"
	"banger/internal/vmm/firecracker/fctest"
)

// TestMain lets this test binary stand in for firecracker and the jailer
// (fctest.MainIfFake): the shutdown, jailer and driver tests launch it as
// real processes. The banger-agent the fake guests run is built once
// (testutil.Binary) and removed at the end.
func TestMain(m *testing.M) {
	fctest.MainIfFake()
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}
