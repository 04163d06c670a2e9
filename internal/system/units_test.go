package system_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"banger/internal/layout"
	"banger/internal/system"
	"banger/internal/testutil"
)

// installed is the result of `system install` into scratch directories.
type installed struct {
	l               layout.Layout
	u               *user.User
	binDir, unitDir string
	helper, daemon  string // unit file paths
}

// install runs system.Install for a created owner with the real binaries, writing
// the units to a scratch directory.
func install(t *testing.T) installed {
	t.Helper()
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
	return installed{l: l, u: u, binDir: binDir, unitDir: unitDir,
		helper: filepath.Join(unitDir, system.HelperUnit), daemon: filepath.Join(unitDir, system.DaemonUnit)}
}

// TestUnitsSecurity prints systemd's own exposure analysis of both units and holds
// them to it: bangerd, which needs no privilege at all, at "OK" (<= 2.0); the
// helper, which runs as root with the capabilities listed (and justified) in
// units.go, at most maxHelperExposure. What is left for the helper is what its job
// needs: root, the host network and /dev, CAP_NET_ADMIN, CAP_SYS_ADMIN and the rest.
func TestUnitsSecurity(t *testing.T) {
	const (
		maxDaemonExposure = 2.0
		maxHelperExposure = 3.4
	)
	in := install(t)
	for _, c := range []struct {
		unit string
		max  float64
	}{{in.daemon, maxDaemonExposure}, {in.helper, maxHelperExposure}} {
		cmd := exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", c.unit)
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+in.unitDir+":", "SYSTEMD_COLORS=0")
		out, err := cmd.CombinedOutput()
		t.Logf("systemd-analyze security --offline=yes %s:\n%s", filepath.Base(c.unit), out)
		if err != nil {
			t.Fatalf("systemd-analyze security %s: %v", c.unit, err)
		}
		m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("no overall exposure level in the output for %s", c.unit)
		}
		got, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatal(err)
		}
		if got > c.max {
			t.Errorf("%s: exposure %.1f, want <= %.1f", filepath.Base(c.unit), got, c.max)
		}
	}
}

// TestUnitsVerify installs the units into a scratch directory and has systemd's own
// checker verify them (systemd-analyze verify works without systemd running).
func TestUnitsVerify(t *testing.T) {
	in := install(t)
	l, u, binDir, unitDir, helper, daemon := in.l, in.u, in.binDir, in.unitDir, in.helper, in.daemon
	var out bytes.Buffer
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
