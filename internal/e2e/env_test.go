package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/privileged"
	"banger/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

// env is one test's banger: a namespace standing in for the host, an owner user,
// a root, and a busybox image imported.
type env struct {
	t       testing.TB
	ns      string
	root    string
	owner   *user.User
	bin     string
	gateway string // the bridge address
	prefix  string // first three octets of the bridge network
}

var subnet = 60 // each env gets its own /24: 10.213.<subnet>.0/24

func requireVMs(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t, "qemu-system-x86_64", "ssh", "dig", "useradd", "busybox", "nft")
	if k, _ := filepath.Glob("/boot/vmlinuz-*"); len(k) == 0 {
		t.Skip("no /boot kernel to boot guests with (scripts/deps.sh installs linux-image-cloud-amd64)")
	}
	if testing.Short() {
		t.Skip("boots real VMs: skipped with -short")
	}
}

func newEnv(t testing.TB, poolSize int) *env { return newEnvWith(t, poolSize, nil) }

// newEnvWith is newEnv with more configuration: extra, when set, is called once
// the namespace exists and returns TOML appended to config.toml (its own
// sections, e.g. [dns] or [console]).
func newEnvWith(t testing.TB, poolSize int, extra func(*env) string) *env {
	t.Helper()
	requireVMs(t)
	for _, b := range []string{"bangerd", "banger-helper", "banger-agent", "banger-init"} {
		testutil.Binary(t, b)
	}
	subnet++
	e := &env{
		t: t, ns: testutil.NetNS(t), root: testutil.Root(t), owner: testutil.UserWithHome(t),
		bin:     filepath.Dir(testutil.Binary(t, "banger")),
		gateway: fmt.Sprintf("10.213.%d.1", subnet), prefix: fmt.Sprintf("10.213.%d.", subnet),
	}
	cfg := fmt.Sprintf("[network]\nbridge = \"be%d\"\nbridge_cidr = \"%s/24\"\ntap_pool_size = %d\n", subnet, e.gateway, poolSize)
	if extra != nil {
		cfg += extra(e)
	}
	if err := os.WriteFile(filepath.Join(e.root, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Kill every VM, then stop banger: nothing outlives the test.
		if out, err := e.banger("vm", "ls", "-q"); err == nil {
			for _, name := range strings.Fields(out) {
				_, _ = e.banger("vm", "rm", "-f", name)
			}
		}
		_, _ = e.banger("system", "stop", "--timeout", "5s")
		killQEMUs(e.root)
	})
	if out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username); err != nil {
		t.Fatalf("system run: %v\n%s", err, out)
	}
	tarball := filepath.Join(e.root, "busybox.tar")
	testutil.Run(t, "bash", repoPath(t, "scripts/mkrootfs-busybox.sh"), tarball)
	if out, err := e.banger("image", "import", tarball, "--name", "busybox"); err != nil {
		t.Fatalf("image import: %v\n%s", err, out)
	}
	return e
}

// killQEMUs ends any qemu whose command line names root (a failed test's leftovers).
func killQEMUs(root string) {
	_ = exec.Command("pkill", "-9", "-f", "qemu-system-x86_64.*"+root).Run()
}

func repoPath(t testing.TB, rel string) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), rel)
}

// banger runs the CLI as root inside the namespace.
func (e *env) banger(args ...string) (string, error) {
	return e.run(5*time.Minute, nil, append([]string{filepath.Join(e.bin, "banger"), "--root", e.root}, args...)...)
}

// asOwner runs a command as the owner inside the namespace, with the owner's HOME.
func (e *env) asOwner(args ...string) (string, error) {
	full := append([]string{"setpriv", "--reuid", e.owner.Uid, "--regid", e.owner.Gid, "--init-groups", "--"}, args...)
	return e.run(2*time.Minute, []string{"HOME=" + e.owner.HomeDir, "USER=" + e.owner.Username, "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}, full...)
}

func (e *env) run(timeout time.Duration, extraEnv []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", e.ns}, args...)...)
	if extraEnv != nil {
		cmd.Env = append(os.Environ(), extraEnv...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (e *env) must(args ...string) string {
	e.t.Helper()
	out, err := e.banger(args...)
	if err != nil {
		e.t.Fatalf("banger %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// vmRun boots a VM and returns it.
func (e *env) vmRun(name string, extra ...string) api.VM {
	e.t.Helper()
	args := append([]string{"vm", "run", "--json", "--name", name, "--memory", "256M"}, extra...)
	out := e.must(append(args, "busybox")...)
	var v api.VM
	if err := json.Unmarshal([]byte(firstJSON(out)), &v); err != nil {
		e.t.Fatalf("vm run --json: %v\n%s", err, out)
	}
	return v
}

// firstJSON cuts the JSON object out of output that may carry other lines.
func firstJSON(s string) string {
	i, j := strings.Index(s, "{"), strings.LastIndex(s, "}")
	if i < 0 || j < i {
		return s
	}
	return s[i : j+1]
}

func (e *env) inNS(args ...string) string {
	e.t.Helper()
	return testutil.Run(e.t, "ip", append([]string{"netns", "exec", e.ns}, args...)...)
}

func (e *env) vm(name string) api.VM {
	e.t.Helper()
	var v api.VM
	if err := json.Unmarshal([]byte(e.must("vm", "inspect", "--json", name)), &v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

// assertNothingLeaked checks that no VM resource outlives the VMs: no tap but the
// pool's, no NAT rule, no disk, no VM socket directory, no known_hosts line.
func (e *env) assertNothingLeaked() {
	e.t.Helper()
	links := e.inNS("ip", "-o", "link", "show")
	for _, line := range strings.Split(links, "\n") {
		if strings.Contains(line, "tap-vm-") {
			e.t.Errorf("a VM tap outlives its VM: %s", line)
		}
	}
	for _, fam := range []string{"ip", "bridge"} {
		if table := e.inNS("nft", "list", "table", fam, privileged.NFTTableName(e.root)); strings.Contains(table, "banger-nat") {
			e.t.Errorf("a guest's rules left in table %s %s:\n%s", fam, privileged.NFTTableName(e.root), table)
		}
	}
	for _, dir := range []string{"state/disks", "run/vms"} {
		ents, _ := os.ReadDir(filepath.Join(e.root, dir))
		for _, ent := range ents {
			if strings.HasSuffix(ent.Name(), ".lock") {
				continue // the disk layer's lock file, kept on purpose
			}
			e.t.Errorf("left in %s: %s", dir, ent.Name())
		}
	}
	if kh, _ := os.ReadFile(filepath.Join(e.root, "state/ssh/known_hosts")); strings.Contains(string(kh), ".vm") {
		e.t.Errorf("known_hosts still names VMs:\n%s", kh)
	}
	if procs, _ := exec.Command("pgrep", "-f", "qemu-system-x86_64.*"+e.root).Output(); len(bytes.TrimSpace(procs)) > 0 {
		e.t.Errorf("qemu processes left: %s", procs)
	}
}

// waitPool waits until the tap pool holds size idle taps again.
func (e *env) waitPool(size int) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st api.StatusResponse
		if err := json.Unmarshal([]byte(e.must("system", "status", "--json")), &st); err != nil {
			e.t.Fatal(err)
		}
		if st.Network.TapPool.Idle >= size && !st.Network.TapPool.Warming {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("tap pool did not refill to %d: %+v", size, st.Network.TapPool)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
