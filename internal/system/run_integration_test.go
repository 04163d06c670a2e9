package system_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/testutil"
)

// These tests drive the real binaries the way a user does: `banger system run -d`
// as root inside a network namespace the test creates, with bangerd running as an
// unprivileged user the test creates, then `banger system status|stop`.

// env is one test's namespace, owner user and root.
type env struct {
	t     *testing.T
	ns    string
	root  string
	owner *user.User
	bin   string
}

func newEnv(t *testing.T, configTOML string) *env {
	t.Helper()
	testutil.RequireRoot(t, "useradd", "dig")
	testutil.Binary(t, "bangerd")
	testutil.Binary(t, "banger-helper")
	e := &env{t: t, ns: testutil.NetNS(t), bin: filepath.Dir(testutil.Binary(t, "banger")), owner: testutil.User(t), root: testutil.Root(t)}
	if configTOML != "" {
		if err := os.WriteFile(filepath.Join(e.root, "config.toml"), []byte(configTOML), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		// Whatever happened, stop what the test started.
		_, _ = e.banger("system", "stop", "--timeout", "5s")
	})
	return e
}

// banger runs the CLI inside the test's namespace.
func (e *env) banger(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	full := append([]string{"netns", "exec", e.ns, filepath.Join(e.bin, "banger"), "--root", e.root}, args...)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", full...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (e *env) status() api.StatusResponse {
	e.t.Helper()
	out, err := e.banger("system", "status", "--json")
	if err != nil {
		e.t.Fatalf("status: %v\n%s", err, out)
	}
	var st api.StatusResponse
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("status JSON: %v\n%s", err, out)
	}
	return st
}

func (e *env) inNS(args ...string) string {
	e.t.Helper()
	return testutil.Run(e.t, "ip", append([]string{"netns", "exec", e.ns}, args...)...)
}

const testConfig = `
[network]
bridge = "bt0"
bridge_cidr = "10.213.7.1/24"
tap_pool_size = 2
`

func TestSystemRunStatusStop(t *testing.T) {
	e := newEnv(t, testConfig)
	out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username)
	if err != nil {
		t.Fatalf("system run: %v\n%s", err, out)
	}

	// Wait for the pool warm-up to settle, then check everything status reports.
	var st api.StatusResponse
	deadline := time.Now().Add(20 * time.Second)
	for {
		st = e.status()
		if st.Network.TapPool.Idle == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	uid, _ := strconv.Atoi(e.owner.Uid)
	checks := []struct {
		what      string
		got, want any
	}{
		{"helper reachable", st.Helper.Reachable, true},
		{"helper owner uid", st.Helper.OwnerUID, uid},
		{"bridge", st.Network.Bridge, "bt0"},
		{"bridge up", st.Network.BridgeUp, true},
		{"nft table", st.Network.NFTTable, true},
		{"ip forward", st.Network.IPForward, true},
		{"pool idle", st.Network.TapPool.Idle, 2},
		{"pool size", st.Network.TapPool.Size, 2},
		{"dns listen", st.DNS.Listen, "10.213.7.1:5353"},
		{"dns domain", st.DNS.Domain, "vm"},
		{"resolver routing (no systemd-resolved here)", st.DNS.ResolverRouting, "none"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if !strings.Contains(st.DNS.Hint, "10.213.7.1") {
		t.Errorf("dns hint %q does not say how to reach banger's DNS", st.DNS.Hint)
	}

	// bangerd runs as the owner, not root.
	pid := readPID(t, filepath.Join(e.root, "system", "bangerd.pid"))
	if got := procUID(t, pid); got != uid {
		t.Errorf("bangerd runs as uid %d, want the owner %d", got, uid)
	}
	// The pool taps exist, belong to the owner and hang off the bridge.
	for _, tap := range []string{"tap-pool-0", "tap-pool-1"} {
		link := e.inNS("ip", "-d", "link", "show", tap)
		if !strings.Contains(link, "master bt0") || !strings.Contains(link, "user "+e.owner.Uid) && !strings.Contains(link, "user "+e.owner.Username) {
			t.Errorf("%s: want master bt0 and user %s, got:\n%s", tap, e.owner.Username, link)
		}
	}
	// The DNS server answers, from inside the namespace, with the real dig.
	if got := e.inNS("dig", "@10.213.7.1", "-p", "5353", "+time=2", "+tries=1", "nosuch.vm"); !strings.Contains(got, "status: NXDOMAIN") {
		t.Errorf("dig nosuch.vm: want NXDOMAIN, got:\n%s", got)
	}
	// The human status names the pieces.
	human, err := e.banger("system", "status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, human)
	}
	for _, want := range []string{"banger-helper", "bt0 10.213.7.1/24 (up)", "2/2 idle", "banger_", "present, ip forwarding on", "*.vm on 10.213.7.1:5353"} {
		if !strings.Contains(human, want) {
			t.Errorf("status output lacks %q:\n%s", want, human)
		}
	}

	// A second run is refused while the first runs.
	if out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username); err == nil || !strings.Contains(out, "already running") {
		t.Errorf("second system run: err=%v, want 'already running'; output:\n%s", err, out)
	}

	// Stop, then restart: the idle pool taps left on the host are adopted, not re-made.
	if out, err := e.banger("system", "stop"); err != nil {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	assertNoRuntime(t, e.root)
	if out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username); err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	st = e.status()
	if got := strings.Join(st.Network.TapPool.IdleTaps, ","); got != "tap-pool-0,tap-pool-1" {
		t.Errorf("after restart idle taps = %q, want the adopted tap-pool-0,tap-pool-1", got)
	}
	// `system restart` without systemd: the recorded processes are stopped (checked
	// by pidfd against their records) and new ones started for the recorded owner.
	before := readPID(t, filepath.Join(e.root, "system", "bangerd.pid"))
	if out, err := e.banger("system", "restart"); err != nil {
		t.Fatalf("restart: %v\n%s", err, out)
	}
	after := readPID(t, filepath.Join(e.root, "system", "bangerd.pid"))
	if after == before || procUID(t, after) != uid {
		t.Errorf("after restart bangerd is pid %d (was %d), uid %d: want a new bangerd as the owner %d", after, before, procUID(t, after), uid)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(before)); err == nil && !zombie(before) {
		t.Errorf("the old bangerd %d still runs after restart", before)
	}
	if out, err := e.banger("system", "stop"); err != nil {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	assertNoRuntime(t, e.root)
	if out, err := e.banger("system", "status"); err == nil || !strings.Contains(out, "not running") {
		t.Errorf("status after stop: err=%v, want 'not running', output:\n%s", err, out)
	}
}

func TestSystemRunRefusesBadStart(t *testing.T) {
	tests := []struct {
		name    string
		config  string
		prepare func(e *env)
		want    string
	}{
		{
			name:   "unknown config key",
			config: "[network]\nbrige = \"x\"\n",
			want:   "unknown key(s) network.brige",
		},
		{
			name:   "invalid field",
			config: "[network]\ntap_pool_size = -1\n",
			want:   "network.tap_pool_size -1 is out of range",
		},
		{
			name:   "bridge CIDR overlapping a host route",
			config: testConfig,
			prepare: func(e *env) {
				e.inNS("ip", "link", "add", "up9", "type", "veth", "peer", "name", "up9p")
				e.inNS("ip", "addr", "add", "10.213.7.200/24", "dev", "up9")
				e.inNS("ip", "link", "set", "up9", "up")
				e.inNS("ip", "link", "set", "up9p", "up")
			},
			want: "overlaps the host route 10.213.7.0/24 on up9",
		},
		{
			name:   "daemon fails to start (DNS address not on this host)",
			config: testConfig + "[dns]\nlisten = \"10.99.99.99:5353\"\n",
			want:   "bangerd exited during start-up",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.config)
			if tt.prepare != nil {
				tt.prepare(e)
			}
			out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username)
			if err == nil {
				t.Fatalf("system run succeeded, want failure %q; output:\n%s", tt.want, out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("error output lacks %q:\n%s", tt.want, out)
			}
			assertNoRuntime(t, e.root)
		})
	}
}

// assertNoRuntime checks a stopped or failed instance left no socket or pid file.
func assertNoRuntime(t *testing.T, root string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "run"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, ent := range entries {
		if ent.Name() == "vms" {
			continue
		}
		t.Errorf("left behind: run/%s", ent.Name())
	}
}

// readPID reads the PID from a record `system run -d` wrote under ROOT/system.
func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec.PID <= 0 {
		t.Fatalf("record %s: %v (%q)", path, err, b)
	}
	return rec.PID
}

func procUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[1])
			return uid
		}
	}
	t.Fatalf("no Uid line for pid %d", pid)
	return -1
}
