package privileged_test

// Attacks on the guest network policy through the real banger-helper: two banger
// roots with their own owners and helpers share one network namespace, as two
// installations on one host would. Each owner drives its helper the way a hostile
// bangerd could; neither can lift its root's guest policy (it comes from the root's
// config.toml) nor touch the other root's rules, taps or bridge.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/layout"
	"banger/internal/privileged"
	"banger/internal/testutil"
)

// netRoot is one banger root with its helper in the shared namespace.
type netRoot struct {
	env    *attackEnv // only sock is used: the request helpers live on attackEnv
	lay    layout.Layout
	dial   *peerDialer
	helper int
	bridge string
	table  string
}

// startNetRoot makes a root for owner uid:gid with config cfg and runs its helper in
// ns.
func startNetRoot(t *testing.T, ns, bin string, dial *peerDialer, bridge, cfg string) *netRoot {
	t.Helper()
	root := testutil.Root(t)
	lay, err := layout.New(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := lay.Create(dial.uid, dial.gid); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lay.ConfigPath(), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "helper.log")
	_, exited := runHelperInNS(t, ns, bin, root, dial.uid, dial.gid, logPath)
	r := &netRoot{env: &attackEnv{sock: lay.HelperSocket()}, lay: lay, dial: dial, bridge: bridge, table: privileged.NFTTableName(root)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st privileged.StatusResponse
		rep := r.env.callAs(dial, privileged.OpStatus, []byte("{}"))
		if rep.Status == http.StatusOK && json.Unmarshal(rep.Body, &st) == nil {
			r.helper = st.PID
			return r
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(logPath)
			t.Fatalf("banger-helper for %s exited (%s):\n%s", root, rep, out)
		default:
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			t.Fatalf("banger-helper for %s not ready: %s\n%s", root, rep, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// call sends req to op as the root's owner.
func (r *netRoot) call(t *testing.T, op string, req any) reply {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return r.env.callAs(r.dial, op, body)
}

// must fails t unless op succeeds.
func (r *netRoot) must(t *testing.T, op string, req any) {
	t.Helper()
	if rep := r.call(t, op, req); rep.Status != http.StatusOK {
		t.Fatalf("%s as the owner of %s: %s", op, r.lay.Root, rep)
	}
}

// tables returns `nft list table` of the root's ip and bridge tables in ns.
func (r *netRoot) tables(t *testing.T, ns string) string {
	t.Helper()
	return testutil.Run(t, "ip", "netns", "exec", ns, "nft", "-a", "list", "table", "ip", r.table) +
		testutil.Run(t, "ip", "netns", "exec", ns, "nft", "-a", "list", "table", "bridge", r.table)
}

func TestAttackGuestNetPolicyThroughHelper(t *testing.T) {
	testutil.RequireRoot(t, "nft", "useradd")
	t.Cleanup(testutil.Cleanup)
	ownerA, ownerB := testutil.User(t), testutil.User(t)
	uidA, gidA := ids(t, ownerA)
	uidB, gidB := ids(t, ownerB)
	binDir := traversableTemp(t, "bt-netbin-")
	self := copySelf(t, binDir)
	dialA := startDialer(t, self, uidA, gidA)
	dialB := startDialer(t, self, uidB, gidB)
	ns := testutil.NetNS(t)
	bin := testutil.Binary(t, "banger-helper")

	// Root a is strict (isolate_vms, no private egress, DNS on 5353); root b is not.
	a := startNetRoot(t, ns, bin, dialA, "bgnetA", "[network]\nbridge = \"bgnetA\"\nbridge_cidr = \"10.213.20.1/24\"\nisolate_vms = true\negress_deny = [\"private\"]\n\n[dns]\nlisten = \"10.213.20.1:5353\"\n")
	b := startNetRoot(t, ns, bin, dialB, "bgnetB", "[network]\nbridge = \"bgnetB\"\nbridge_cidr = \"10.213.21.1/24\"\n")
	if a.table == b.table {
		t.Fatalf("two roots got the same table name %s", a.table)
	}
	a.must(t, privileged.OpEnsureBridge, privileged.EnsureBridgeRequest{Name: "bgnetA", Address: mustPrefix("10.213.20.1/24"), MTU: 1500, DNSPort: 5353})
	a.must(t, privileged.OpCreateTap, privileged.CreateTapRequest{Name: "tap-pool-0", Bridge: "bgnetA"})
	a.must(t, privileged.OpEnsureNAT, privileged.EnsureNATRequest{GuestIP: mustAddr("10.213.20.2"), MAC: "02:00:0a:d5:14:02", Tap: "tap-pool-0", Enable: true})
	b.must(t, privileged.OpEnsureBridge, privileged.EnsureBridgeRequest{Name: "bgnetB", Address: mustPrefix("10.213.21.1/24"), MTU: 1500, DNSPort: 5353})
	b.must(t, privileged.OpCreateTap, privileged.CreateTapRequest{Name: "tap-vm-b1", Bridge: "bgnetB"})
	b.must(t, privileged.OpEnsureNAT, privileged.EnsureNATRequest{GuestIP: mustAddr("10.213.21.2"), MAC: "02:00:0a:d5:15:02", Tap: "tap-vm-b1", Enable: true})

	// The policy is the one each root's config.toml says.
	at := a.tables(t, ns)
	for _, want := range []string{
		`iifname "bgnetA" oifname "bgnetA" drop comment "banger isolate_vms`,
		`ip daddr 10.0.0.0/8 drop comment "banger egress_deny 10.0.0.0/8"`,
		`ip daddr 192.168.0.0/16 drop`, `ip daddr 100.64.0.0/10 drop`,
		`iifname "bgnetA" drop comment "banger: guests reach nothing else on the host"`,
		`ether saddr 02:00:0a:d5:14:02 ip saddr 10.213.20.2 accept`,
		`policy drop;`,
	} {
		if !strings.Contains(at, want) {
			t.Errorf("root a's tables lack %q:\n%s", want, at)
		}
	}
	if bt := b.tables(t, ns); strings.Contains(bt, "isolate_vms") || strings.Contains(bt, "egress_deny") {
		t.Errorf("root b's tables carry root a's policy:\n%s", bt)
	}

	watch := func(t *testing.T) *testutil.HostState {
		return testutil.CaptureHost(t, testutil.Watch{
			Paths:    []string{a.lay.Root, b.lay.Root},
			Volatile: []string{a.lay.Root, b.lay.Root}, // audit logs grow; owners and modes still checked
			PIDs:     []int{a.helper, b.helper, dialA.pid, dialB.pid},
			Netns:    ns,
		})
	}

	t.Run("owner cannot open a host port to guests", func(t *testing.T) {
		st := watch(t)
		// dns.listen says 5353: the owner cannot make the guests' one hole in the
		// input chain point at sshd.
		refused(t, "EnsureBridge with DNSPort 22", a.call(t, privileged.OpEnsureBridge,
			privileged.EnsureBridgeRequest{Name: "bgnetA", Address: mustPrefix("10.213.20.1/24"), MTU: 1500, DNSPort: 22}))
		st.AssertUnchanged(t)
	})

	t.Run("guest MACs that cannot be a NIC's", func(t *testing.T) {
		st := watch(t)
		for _, mac := range []string{"", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "00:00:00:00:00:00", "02:00:00:00:00", "02:00:00:00:00:02:03", "zz:00:00:00:00:02", "02-00-00-00-00-02;"} {
			refused(t, fmt.Sprintf("EnsureNAT with MAC %q", mac), a.call(t, privileged.OpEnsureNAT,
				privileged.EnsureNATRequest{GuestIP: mustAddr("10.213.20.3"), MAC: mac, Tap: "tap-pool-0", Enable: true}), privileged.CodeInvalid)
		}
		st.AssertUnchanged(t)
	})

	t.Run("one root cannot touch the other's taps", func(t *testing.T) {
		st := watch(t)
		refused(t, "owner a deletes root b's tap", a.call(t, privileged.OpDeleteTap, privileged.DeleteTapRequest{Name: "tap-vm-b1"}))
		refused(t, "owner a pins root b's tap", a.call(t, privileged.OpEnsureNAT,
			privileged.EnsureNATRequest{GuestIP: mustAddr("10.213.20.3"), MAC: "02:00:0a:d5:14:03", Tap: "tap-vm-b1", Enable: true}))
		refused(t, "owner b deletes root a's tap", b.call(t, privileged.OpDeleteTap, privileged.DeleteTapRequest{Name: "tap-pool-0"}))
		st.AssertUnchanged(t)
	})

	t.Run("removing one root leaves the other's rules", func(t *testing.T) {
		beforeB := b.tables(t, ns)
		bLinks := testutil.Run(t, "ip", "-n", ns, "-o", "link", "show", "master", "bgnetB")
		a.must(t, privileged.OpEnsureBridge, privileged.EnsureBridgeRequest{Name: "bgnetA", Address: mustPrefix("10.213.20.1/24"), MTU: 1500, DNSPort: 5353})
		a.must(t, privileged.OpEnsureNAT, privileged.EnsureNATRequest{GuestIP: mustAddr("10.213.20.2"), Tap: "tap-pool-0", Enable: false})
		a.must(t, privileged.OpRemoveNetwork, privileged.RemoveNetworkRequest{Bridge: "bgnetA"})
		if got := b.tables(t, ns); got != beforeB {
			t.Errorf("root a's removal changed root b's tables:\nbefore:\n%s\nafter:\n%s", beforeB, got)
		}
		if got := testutil.Run(t, "ip", "-n", ns, "-o", "link", "show", "master", "bgnetB"); got != bLinks {
			t.Errorf("root b's bridge ports changed:\nbefore:\n%s\nafter:\n%s", bLinks, got)
		}
		if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "ip", a.table).CombinedOutput(); err == nil {
			t.Errorf("root a's table survived its RemoveNetwork:\n%s", out)
		}
		if fwd := strings.TrimSpace(testutil.Run(t, "ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward")); fwd != "1" {
			t.Errorf("ip_forward = %s after root a left, want 1 (root b's guests need it)", fwd)
		}
		b.must(t, privileged.OpRemoveNetwork, privileged.RemoveNetworkRequest{Bridge: "bgnetB"})
		if fwd := strings.TrimSpace(testutil.Run(t, "ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward")); fwd != "0" {
			t.Errorf("ip_forward = %s after both roots left, want 0 (as before banger)", fwd)
		}
	})
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
