package e2e_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/privileged"
)

// pid reads the PID from the record `system run -d` keeps in ROOT/system (root's:
// see package layout).
func (e *env) pid(file string) int {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, "system", file))
	if err != nil {
		e.t.Fatal(err)
	}
	var rec struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec.PID <= 0 {
		e.t.Fatalf("record %s: %v (%q)", file, err, b)
	}
	return rec.PID
}

func (e *env) reachable(name string) {
	e.t.Helper()
	if out, err := e.banger("vm", "exec", name, "--", "hostname"); err != nil || strings.TrimSpace(out) != name {
		e.t.Errorf("vm exec %s hostname: %v\n%s", name, err, out)
	}
	cfg := filepath.Join(e.root, "state/ssh/ssh_config")
	if out, err := e.asOwner("ssh", "-F", cfg, "-o", "BatchMode=yes", name+".vm", "true"); err != nil {
		e.t.Errorf("ssh %s.vm: %v\n%s", name, err, out)
	}
}

// TestRestarts: VMMs outlive bangerd and the helper. kill -9 of either while two
// VMs run, then a restart: both VMs still run, are reachable and listed right. A
// VM whose VMM died while bangerd was down is shown stopped and its tap, NAT rules
// and DNS record are released.
func TestRestarts(t *testing.T) {
	e := newEnv(t, 2)
	a, b := e.vmRun("alpha"), e.vmRun("bravo")

	// kill -9 bangerd, and kill bravo's VMM while it is down.
	if err := syscall.Kill(e.pid("bangerd.pid"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(b.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Orphans a crash could leave: a VM tap no VM holds, a disk directory of no VM.
	// The orphan tap is as the helper made it: the owner's, on banger's bridge (the
	// helper refuses to delete a tap it cannot tell is banger's).
	e.inNS("ip", "tuntap", "add", "dev", "tap-vm-dead", "mode", "tap", "user", e.owner.Uid)
	e.inNS("ip", "link", "set", "tap-vm-dead", "master", "be"+strings.TrimSuffix(strings.TrimPrefix(e.prefix, "10.213."), "."))
	orphanDisk := filepath.Join(e.root, "state/disks/deadbeefdeadbeef")
	if err := os.MkdirAll(orphanDisk, 0o750); err != nil {
		t.Fatal(err)
	}
	e.must("system", "restart")
	if links := e.inNS("ip", "-o", "link", "show"); strings.Contains(links, "tap-vm-dead") {
		t.Error("the orphan tap tap-vm-dead survived bangerd's open")
	}
	if _, err := os.Stat(orphanDisk); !os.IsNotExist(err) {
		t.Error("the orphan disk directory survived bangerd's open")
	}

	if v := e.vm("alpha"); v.State != "running" || v.PID != a.PID {
		t.Errorf("alpha after bangerd was killed: state %s pid %d; want running with pid %d", v.State, v.PID, a.PID)
	}
	e.reachable("alpha")
	bv := e.vm("bravo")
	if bv.State != "stopped" || bv.PID != 0 || bv.Tap != "" {
		t.Errorf("bravo, killed while bangerd was down: state %s pid %d tap %q; want stopped and released", bv.State, bv.PID, bv.Tap)
	}
	if got := strings.TrimSpace(e.inNS("dig", "@"+e.gateway, "-p", "5353", "+short", "bravo.vm")); got != "" {
		t.Errorf("bravo.vm still resolves: %q", got)
	}
	if table := e.inNS("nft", "list", "table", "ip", privileged.NFTTableName(e.root)); strings.Contains(table, b.IP) {
		t.Errorf("bravo's NAT rules survived:\n%s", table)
	}
	if !strings.HasPrefix(b.Tap, "tap-pool-") {
		if links := e.inNS("ip", "-o", "link", "show"); strings.Contains(links, b.Tap+":") {
			t.Errorf("bravo's tap %s survived", b.Tap)
		}
	}

	// bravo starts again; then kill -9 the helper with both running.
	e.must("vm", "start", "bravo")
	if err := syscall.Kill(e.pid("helper.pid"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e.must("system", "restart")
	for _, n := range []string{"alpha", "bravo"} {
		if v := e.vm(n); v.State != "running" {
			t.Errorf("%s after the helper was killed: %s", n, v.State)
		}
		e.reachable(n)
	}
	out := e.must("vm", "ls")
	if strings.Count(out, "running") != 2 {
		t.Errorf("vm ls after restarts:\n%s", out)
	}
	e.must("vm", "rm", "-f", "alpha", "bravo")
	e.assertNothingLeaked()
}
