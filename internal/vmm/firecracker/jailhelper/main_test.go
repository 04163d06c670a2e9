package jailhelper_test

import (
	"os"
	"testing"

	"banger/internal/testutil"
	"banger/internal/vmm/firecracker/fctest"
)

// TestMain lets this test binary stand in for firecracker and the jailer
// (fctest.MainIfFake), and for the owner's side of the lifecycle test (clientMain,
// run as an unprivileged user).
func TestMain(m *testing.M) {
	fctest.MainIfFake()
	if os.Getenv(clientModeEnv) != "" {
		os.Exit(clientMain())
	}
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}
