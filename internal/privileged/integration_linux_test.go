package privileged

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildHelper builds cmd/banger-helper into dir. It skips while internal/linuxnet,
// which the command wires in, does not build yet.
func buildHelper(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go toolchain not on PATH: cannot build cmd/banger-helper")
	}
	if out, err := exec.Command(goBin, "build", "-o", os.DevNull, "banger/internal/linuxnet").CombinedOutput(); err != nil {
		t.Skipf("internal/linuxnet does not build yet, so cmd/banger-helper cannot: %s", out)
	}
	bin := filepath.Join(dir, "banger-helper")
	if out, err := exec.Command(goBin, "build", "-o", bin, "banger/cmd/banger-helper").CombinedOutput(); err != nil {
		t.Fatalf("build cmd/banger-helper: %v: %s", err, out)
	}
	return bin
}

// lockedBuffer collects a child's stderr while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestHelperBinary runs the real banger-helper: its start-up refusals, then a whole
// session inside a network namespace the test creates, driven through the Client.
func TestHelperBinary(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("banger-helper runs as root; this test needs root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install iproute2 nftables)", tool)
		}
	}
	dir := traversableDir(t)
	bin := buildHelper(t, dir)

	t.Run("refuses non-root", func(t *testing.T) {
		cmd := exec.Command(bin, "--root", t.TempDir(), "--owner-uid", "0")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, NoSetGroups: true}}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("helper started as nobody; output %s", out)
		}
		mustContain(t, string(out), "must run as root", "uid 65534")
	})

	t.Run("refuses without owner", func(t *testing.T) {
		out, err := exec.Command(bin, "--root", t.TempDir()).CombinedOutput()
		if err == nil {
			t.Fatalf("helper started with no owner; output %s", out)
		}
		mustContain(t, string(out), "no owner known", "install.json", "--owner-uid")
	})

	t.Run("session in a netns", func(t *testing.T) { helperSession(t, bin) })
}

func helperSession(t *testing.T, bin string) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	ns := "banger-t-h" + hex.EncodeToString(b)
	nsRun := func(args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})

	const bridge = "bgt0"
	prefix := netip.MustParsePrefix("10.213.7.1/24")
	lay, err := layoutNew(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lay.ConfigPath(), []byte("[network]\nbridge = \"bgt0\"\nbridge_cidr = \"10.213.7.1/24\"\nmtu = 1400\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The owner comes from install.json, as under `banger system run`.
	if err := WriteInstallMetadata(lay.InstallMetadataPath(), InstallMetadata{OwnerUID: 0, OwnerGID: 0, Version: "test", Root: lay.Root, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("ip", "netns", "exec", ns, bin, "--root", lay.Root, "--log-format", "json")
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the helper has exited; waitErr is its result, readable after.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := NewClient(lay.HelperSocket())
	var ops []string // every call that reached the helper, for the audit check
	call := func(op string, err error) {
		t.Helper()
		ops = append(ops, op)
		if err != nil {
			t.Fatalf("%s: %v\nhelper log:\n%s", op, err, stderr.String())
		}
	}

	// Wait for the helper to answer.
	var st StatusResponse
	for {
		st, err = c.Status(ctx)
		if err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("helper exited before answering: %v\n%s", waitErr, stderr.String())
		case <-ctx.Done():
			t.Fatalf("helper never answered: %v\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	call(OpStatus, nil)
	if st.PID != cmd.Process.Pid || st.OwnerUID != 0 || st.Bridge != bridge || st.Version == "" || st.BridgeUp || st.NFTTable {
		t.Errorf("initial status %+v: want pid %d, owner 0, bridge %s down, no table", st, cmd.Process.Pid, bridge)
	}
	if fi, err := os.Lstat(lay.HelperSocket()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket: %v, mode %v, want 0600", err, fi.Mode())
	}

	eb, err := c.EnsureBridge(ctx, EnsureBridgeRequest{Name: bridge, Address: prefix, MTU: 1400, DNSPort: 5353})
	call(OpEnsureBridge, err)
	if !eb.Created {
		t.Errorf("first EnsureBridge: got created=false, want true")
	}
	eb, err = c.EnsureBridge(ctx, EnsureBridgeRequest{Name: bridge, Address: prefix, MTU: 1400, DNSPort: 5353})
	call(OpEnsureBridge, err)
	if eb.Created {
		t.Errorf("second EnsureBridge: got created=true, want false (idempotent)")
	}
	if out, err := nsRun("ip", "-o", "addr", "show", "dev", bridge); err != nil || !strings.Contains(out, "10.213.7.1/24") {
		t.Errorf("bridge address: %v: %s", err, out)
	}

	call(OpCreateTap, c.CreateTap(ctx, CreateTapRequest{Name: "tap-pool-0", Bridge: bridge}))
	taps, err := c.ListTaps(ctx)
	call(OpListTaps, err)
	if len(taps) != 1 || taps[0].Name != "tap-pool-0" || taps[0].OwnerUID != 0 || taps[0].Master != bridge {
		t.Errorf("got taps %+v, want tap-pool-0 owned by uid 0 on %s", taps, bridge)
	}

	guest := netip.MustParseAddr("10.213.7.5")
	call(OpEnsureNAT, c.EnsureNAT(ctx, EnsureNATRequest{GuestIP: guest, MAC: "02:00:00:00:00:02", Tap: "tap-pool-0", Enable: true}))
	if out, err := nsRun("nft", "list", "table", "ip", NFTTableName(lay.Root)); err != nil || !strings.Contains(out, "10.213.7.5") {
		t.Errorf("NAT rule for %s not in the table: %v: %s", guest, err, out)
	}
	st, err = c.Status(ctx)
	call(OpStatus, err)
	if !st.BridgeUp || !st.NFTTable || !st.IPForward {
		t.Errorf("status after setup %+v: want bridge up, table, forwarding", st)
	}

	// A hostile call through the real helper is refused and changes nothing.
	err = c.CreateTap(ctx, CreateTapRequest{Name: "eth0;reboot", Bridge: bridge})
	ops = append(ops, OpCreateTap)
	wantCode(t, err, CodeInvalid)

	call(OpEnsureNAT, c.EnsureNAT(ctx, EnsureNATRequest{GuestIP: guest, Tap: "tap-pool-0", Enable: false}))
	if out, err := nsRun("nft", "list", "table", "ip", NFTTableName(lay.Root)); err != nil || strings.Contains(out, "10.213.7.5") {
		t.Errorf("NAT rule for %s still in the table after removal: %v: %s", guest, err, out)
	}
	call(OpDeleteTap, c.DeleteTap(ctx, DeleteTapRequest{Name: "tap-pool-0"}))
	taps, err = c.ListTaps(ctx)
	call(OpListTaps, err)
	if len(taps) != 0 {
		t.Errorf("got taps %+v after delete, want none", taps)
	}

	call(OpRemoveNetwork, c.RemoveNetwork(ctx, RemoveNetworkRequest{Bridge: bridge}))
	if out, err := nsRun("ip", "link", "show", bridge); err == nil {
		t.Errorf("bridge still there after RemoveNetwork: %s", out)
	}
	if out, err := nsRun("nft", "list", "table", "ip", NFTTableName(lay.Root)); err == nil {
		t.Errorf("table still there after RemoveNetwork: %s", out)
	}
	st, err = c.Status(ctx)
	call(OpStatus, err)
	if st.BridgeUp || st.NFTTable {
		t.Errorf("status after RemoveNetwork %+v: want no bridge, no table", st)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("helper exit after SIGTERM: %v\n%s", waitErr, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("helper did not stop on SIGTERM")
	}
	if _, err := os.Lstat(lay.HelperSocket()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left after SIGTERM: %v", err)
	}
	checkAuditLog(t, lay.AuditLog(), ops)
}

// checkAuditLog reads the helper's audit log and wants one line per call, in order.
func checkAuditLog(t *testing.T, path string, ops []string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o027 != 0 {
		t.Errorf("audit log mode %v: want no group write and nothing for others", fi.Mode().Perm())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		got = append(got, m)
	}
	if len(got) != len(ops) {
		t.Fatalf("got %d audit lines, want %d (%v)", len(got), len(ops), ops)
	}
	for i, l := range got {
		if l["op"] != ops[i] || l["peer_uid"] != float64(0) || l["peer_pid"] != float64(os.Getpid()) {
			t.Errorf("audit line %d %v: want op %s from uid 0 pid %d", i, l, ops[i], os.Getpid())
		}
		wantResult := "ok"
		if ops[i] == OpCreateTap && strings.Contains(string(mustJSON(t, l["args"])), "eth0") {
			wantResult = CodeInvalid
		}
		if l["result"] != wantResult {
			t.Errorf("audit line %d: got result %v, want %s", i, l["result"], wantResult)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
