package system_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/testutil"
)

// TestSystemRunFromPrivateCheckout: banger built in a directory the owner cannot
// enter (a checkout in root's 0700 home) still starts, because `system run` copies
// the binaries into ROOT/bin, root's and 0755, and runs them from there; `system
// status` says where.
func TestSystemRunFromPrivateCheckout(t *testing.T) {
	e := newEnv(t, testConfig)
	testutil.Binary(t, "banger-agent")
	private := filepath.Join(testutil.Root(t), "home-root")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"banger", "bangerd", "banger-helper", "banger-agent"} {
		data, err := os.ReadFile(filepath.Join(e.bin, b))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(private, b), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.bin = private // e.banger now runs the private copy, as root

	if out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username); err != nil {
		t.Fatalf("system run from a private checkout: %v\n%s", err, out)
	}
	out, err := e.banger("system", "status")
	if err != nil || !strings.Contains(out, "binaries") || !strings.Contains(out, filepath.Join(e.root, "bin")) {
		t.Errorf("system status does not say the binaries run from ROOT/bin: %v\n%s", err, out)
	}
	// The CLI goes too: banger's ssh_config runs it (as the owner) as ProxyCommand,
	// and bangerd writes that config only when it finds banger beside itself.
	if _, err := os.Stat(filepath.Join(e.root, "state", "ssh", "ssh_config")); err != nil {
		t.Errorf("no ssh_config written: %v", err)
	}
	for _, b := range []string{"banger-helper", "bangerd", "banger-agent", "banger"} {
		fi, err := os.Stat(filepath.Join(e.root, "bin", b))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 0 || fi.Mode().Perm() != 0o755 {
			t.Errorf("ROOT/bin/%s: uid %d mode %v; want root's, 0755", b, st.Uid, fi.Mode().Perm())
		}
	}
	if out, err := e.banger("system", "stop"); err != nil {
		t.Errorf("system stop: %v\n%s", err, out)
	}
}
