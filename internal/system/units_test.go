package system_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"banger/internal/layout"
	"banger/internal/system"
	"banger/internal/testutil"
)

// TestUnitsVerify installs the units into a scratch directory and has systemd's own
// checker verify them (systemd-analyze verify works without systemd running).
func TestUnitsVerify(t *testing.T) {
	testutil.RequireRoot(t, "systemd-analyze", "useradd")
	u := testutil.User(t)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	owner := system.Owner{UID: uid, GID: gid, Name: u.Username}
	binDir := filepath.Dir(testutil.Binary(t, "bangerd"))
	testutil.Binary(t, "banger-helper")
	l, err := layout.New(testutil.Root(t))
	if err != nil {
		t.Fatal(err)
	}
	unitDir := t.TempDir()
	var out bytes.Buffer
	if err := system.Install(context.Background(), system.InstallOptions{Layout: l, Owner: owner, UnitDir: unitDir, BinDir: binDir, Out: &out}); err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(unitDir, system.HelperUnit)
	daemon := filepath.Join(unitDir, system.DaemonUnit)
	cmd := exec.Command("systemd-analyze", "verify", helper, daemon)
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+unitDir+":")
	if b, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(b)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, b)
	}

	d, _ := os.ReadFile(daemon)
	h, _ := os.ReadFile(helper)
	for _, c := range []struct {
		unit, text, want string
	}{
		{"bangerd", string(d), "User=" + u.Username},
		{"bangerd", string(d), "ExecStart=" + binDir + "/bangerd --root " + l.Root},
		{"bangerd", string(d), "KillMode=process"},
		{"bangerd", string(d), "NoNewPrivileges=yes"},
		{"bangerd", string(d), "CapabilityBoundingSet=\n"},
		{"helper", string(h), "--owner-uid " + u.Uid},
		{"helper", string(h), "KillMode=process"},
		{"helper", string(h), "ProtectSystem=strict"},
	} {
		if !strings.Contains(c.text, c.want) {
			t.Errorf("%s unit lacks %q", c.unit, c.want)
		}
	}
	if st, err := os.Stat(l.RunDir); err != nil || st.Sys() == nil {
		t.Fatalf("root not prepared: %v", err)
	}

	if err := system.Uninstall(context.Background(), system.UninstallOptions{Layout: l, UnitDir: unitDir, Out: &out}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{helper, daemon} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there after uninstall", p)
		}
	}
}

func TestRenderUnitsRefusesRelativePaths(t *testing.T) {
	if _, err := system.RenderUnits(system.UnitSpec{Root: "rel", BinDir: "/usr/local/bin", Owner: system.Owner{Name: "x"}}); err == nil {
		t.Fatal("want an error for a relative root")
	}
}
