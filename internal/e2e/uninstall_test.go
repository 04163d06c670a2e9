package e2e_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestUninstallPurgeStopsVMs: `system uninstall --purge` with a VM running removes
// the VM first, so no VMM is left running on a deleted disk and a tap that is gone.
func TestUninstallPurgeStopsVMs(t *testing.T) {
	e := newEnv(t, 1)
	e.vmRun("left")
	out, err := e.banger("system", "uninstall", "--purge", "--unit-dir", t.TempDir())
	if err != nil {
		t.Fatalf("system uninstall --purge: %v\n%s", err, out)
	}
	if !strings.Contains(out, "left removed") {
		t.Errorf("uninstall did not say it removed the VM:\n%s", out)
	}
	if b, _ := exec.Command("pgrep", "-f", "qemu-system-x86_64.*"+e.root).Output(); len(b) > 0 {
		t.Errorf("a VMM of the purged root still runs: pids %s", b)
	}
	if _, err := os.Stat(e.root); !os.IsNotExist(err) {
		t.Errorf("root %s after --purge: %v, want it gone", e.root, err)
	}
}
