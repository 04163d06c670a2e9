package system_test

import (
	"os"
	"testing"

	"banger/internal/testutil"
)

// TestMain removes the binaries testutil.Binary built for this package's tests, so a
// test run leaves nothing in the temporary directory.
func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}
