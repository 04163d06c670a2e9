package linuxnet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/privileged"
	"banger/internal/testutil"
)

// tunOpenEnv makes the test binary act as an unprivileged VMM: drop to uid:gid, open
// the tap the way Firecracker does, and exit 0 only if the kernel let it.
const tunOpenEnv = "BANGER_LINUXNET_TEST_TUNOPEN"

func TestMain(m *testing.M) {
	if v := os.Getenv(tunOpenEnv); v != "" {
		if err := tunOpenAs(v); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// tunOpenAs handles "NAME:UID:GID".
func tunOpenAs(spec string) error {
	parts := strings.Split(spec, ":")
	if len(parts) != 3 {
		return fmt.Errorf("bad %s %q", tunOpenEnv, spec)
	}
	uid, err1 := strconv.Atoi(parts[1])
	gid, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("bad %s %q", tunOpenEnv, spec)
	}
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setgid(gid); err != nil {
		return err
	}
	if err := syscall.Setuid(uid); err != nil {
		return err
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(parts[0])
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF %s as %d:%d: %w", parts[0], uid, gid, err)
	}
	return nil
}

// openTapAs opens the tap in the namespace as uid:gid in a child process.
func openTapAs(t *testing.T, ns testNS, name string, uid, gid int) error {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d:%d", tunOpenEnv, name, uid, gid))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// setupBridge gives the namespace banger's bridge brt.
func setupBridge(tb testing.TB, n *Net) {
	tb.Helper()
	if _, err := n.EnsureBridge(context.Background(), "brt", netip.MustParsePrefix("10.99.0.1/24"), 1500); err != nil {
		tb.Fatal(err)
	}
}

func TestCreateTap(t *testing.T) {
	requireRoot(t)
	ns := newNS(t)
	n, h := ns.net(t), ns.handle(t)
	ctx := context.Background()
	setupBridge(t, n)
	hostLinks, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}

	if err := n.CreateTap(ctx, "tap-vm-1", "brt", 1400, 12345, 12346); err != nil {
		t.Fatal(err)
	}
	l := mustLink(t, h, "tap-vm-1")
	tap, ok := l.(*netlink.Tuntap)
	if !ok {
		t.Fatalf("tap-vm-1 is a %s, want tuntap", l.Type())
	}
	br := mustLink(t, h, "brt")
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"mode", tap.Mode, netlink.TUNTAP_MODE_TAP},
		{"owner", tap.Owner, uint32(12345)},
		{"group", tap.Group, uint32(12346)},
		{"persistent", !tap.NonPersist, true},
		{"multi-queue", tap.Flags&netlink.TUNTAP_MULTI_QUEUE != 0, false},
		{"MTU", tap.MTU, 1400},
		{"master", tap.MasterIndex, br.Attrs().Index},
		{"up", l.Attrs().Flags&net.FlagUp != 0, true},
	} {
		if c.got != c.want {
			t.Errorf("tap %s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if got := l.Attrs().Group; got != n.TapGroup() {
		t.Errorf("tap interface group = %#x, want this root's %#x", got, n.TapGroup())
	}
	taps, err := n.ListTaps(ctx, privileged.TapScope{Bridge: "brt", OwnerUID: 12345})
	if err != nil {
		t.Fatal(err)
	}
	if want := []privileged.TapInfo{{Name: "tap-vm-1", Master: "brt", OwnerUID: 12345, Up: true}}; !slices.Equal(taps, want) {
		t.Errorf("ListTaps = %+v, want %+v", taps, want)
	}

	// The owner can open it without privileges, as a VMM would. The kernel wants both
	// the uid and the group when both are set, so neither alone is enough.
	if err := openTapAs(t, ns, "tap-vm-1", 12345, 12346); err != nil {
		t.Errorf("open as the owner: %v", err)
	}
	for _, c := range [][2]int{{12345, 23456}, {23456, 12346}, {23456, 23456}} {
		if err := openTapAs(t, ns, "tap-vm-1", c[0], c[1]); err == nil {
			t.Errorf("open as %d:%d succeeded, want EPERM", c[0], c[1])
		}
	}

	// The tap was made in the namespace, not where the test process lives.
	hostAfter, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	if len(hostAfter) != len(hostLinks) {
		t.Errorf("the test process's namespace went from %d to %d links", len(hostLinks), len(hostAfter))
	}

	// A taken name is refused and the tap left as it was.
	if err := n.CreateTap(ctx, "tap-vm-1", "brt", 1500, 1, 1); err == nil {
		t.Errorf("CreateTap over an existing tap: err = nil, want a refusal")
	}
	if got := mustLink(t, h, "tap-vm-1").(*netlink.Tuntap).Owner; got != 12345 {
		t.Errorf("owner after refused re-create = %d, want 12345", got)
	}
}

func TestCreateTapFailuresLeaveNothing(t *testing.T) {
	requireRoot(t)
	ns := newNS(t)
	n, h := ns.net(t), ns.handle(t)
	ctx := context.Background()

	err := n.CreateTap(ctx, "tap-vm-2", "brt", 1500, 1000, 1000)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("CreateTap onto a missing bridge: err = %v, want a missing-bridge error", err)
	}
	assertNoLink(t, h, "tap-vm-2")

	ns.veth(t, "notabr")
	if err := n.CreateTap(ctx, "tap-vm-2", "notabr", 1500, 1000, 1000); err == nil {
		t.Errorf("CreateTap onto a veth: err = nil, want a refusal")
	}
	assertNoLink(t, h, "tap-vm-2")

	// A failure after the tap exists (an MTU the device refuses) removes it again.
	setupBridge(t, n)
	err = n.CreateTap(ctx, "tap-vm-2", "brt", 70000, 1000, 1000)
	if err == nil || !strings.Contains(err.Error(), "MTU") {
		t.Errorf("CreateTap with MTU 70000: err = %v, want an MTU error", err)
	}
	assertNoLink(t, h, "tap-vm-2")

	ns.veth(t, "tap-vm-3")
	if err := n.CreateTap(ctx, "tap-vm-3", "brt", 1500, 1000, 1000); err == nil {
		t.Errorf("CreateTap over a veth named like a tap: err = nil, want a refusal")
	}
	if got := mustLink(t, h, "tap-vm-3").Type(); got != "veth" {
		t.Errorf("link after refusal is a %s, want the veth", got)
	}

	for _, bad := range []string{"eth0", "tap-vm-XYZ", "tap-pool-01", "brt"} {
		if err := n.CreateTap(ctx, bad, "brt", 1500, 1000, 1000); err == nil {
			t.Errorf("CreateTap(%q): err = nil, want a name refusal", bad)
		}
	}
	taps, err := n.ListTaps(ctx, scopeOf("brt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(taps) != 0 {
		t.Errorf("ListTaps after failures = %+v, want none", taps)
	}
}

func TestDeleteTap(t *testing.T) {
	requireRoot(t)
	ns := newNS(t)
	n, h := ns.net(t), ns.handle(t)
	ctx := context.Background()
	setupBridge(t, n)

	if err := n.CreateTap(ctx, "tap-pool-3", "brt", 1500, testOwner, testOwner); err != nil {
		t.Fatal(err)
	}
	if err := n.DeleteTap(ctx, scopeOf("brt"), "tap-pool-3"); err != nil {
		t.Fatal(err)
	}
	assertNoLink(t, h, "tap-pool-3")
	if err := n.DeleteTap(ctx, scopeOf("brt"), "tap-pool-3"); err != nil {
		t.Errorf("DeleteTap of a missing tap: %v, want nil", err)
	}

	ns.veth(t, "tap-vm-4")
	err := n.DeleteTap(ctx, scopeOf("brt"), "tap-vm-4")
	if err == nil || !strings.Contains(err.Error(), "not a tap") {
		t.Errorf("DeleteTap of a veth: err = %v, want a not-a-tap refusal", err)
	}
	mustLink(t, h, "tap-vm-4")

	ns.ip(t, "tuntap", "add", "dev", "mytap0", "mode", "tap")
	if err := n.DeleteTap(ctx, scopeOf("brt"), "mytap0"); err == nil {
		t.Errorf("DeleteTap of a tap outside banger's names: err = nil, want a refusal")
	}
	mustLink(t, h, "mytap0")
}

func TestListTaps(t *testing.T) {
	requireRoot(t)
	ns := newNS(t)
	n := ns.net(t)
	ctx := context.Background()
	setupBridge(t, n)

	for _, c := range []struct {
		name string
		uid  int
	}{{"tap-pool-2", testOwner}, {"tap-vm-a", 0}, {"tap-pool-10", 2000}} {
		if err := n.CreateTap(ctx, c.name, "brt", 1500, c.uid, c.uid); err != nil {
			t.Fatal(err)
		}
	}
	ns.ip(t, "tuntap", "add", "dev", "tap-pool-5", "mode", "tap") // no owner, no bridge, down
	ns.ip(t, "tuntap", "add", "dev", "tap-vm-b", "mode", "tun", "user", "7")
	ns.ip(t, "tuntap", "add", "dev", "other0", "mode", "tap") // not banger's: not listed
	ns.veth(t, "tap-vm-c")                                    // not a tun: not listed
	ns.ip(t, "link", "set", "tap-pool-2", "down")

	taps, err := n.ListTaps(ctx, scopeOf("brt"))
	if err != nil {
		t.Fatal(err)
	}
	// Only tap-pool-2 is the owner's tap on the bridge; the others are listed (their
	// names are taken) but foreign.
	want := []privileged.TapInfo{
		{Name: "tap-pool-10", Master: "brt", OwnerUID: 2000, Up: true, Foreign: true},
		{Name: "tap-pool-2", Master: "brt", OwnerUID: testOwner, Up: false},
		{Name: "tap-pool-5", OwnerUID: -1, Foreign: true},
		{Name: "tap-vm-a", Master: "brt", OwnerUID: 0, Up: true, Foreign: true},
		{Name: "tap-vm-b", OwnerUID: 7, Foreign: true},
	}
	if !slices.Equal(taps, want) {
		t.Errorf("ListTaps =\n%+v\nwant\n%+v", taps, want)
	}
}

// BenchmarkCreateDeleteTap measures one CreateTap (create, owner, MTU, attach, up)
// plus its DeleteTap, in a namespace.
func BenchmarkCreateDeleteTap(b *testing.B) {
	requireRoot(b)
	ns := newNS(b)
	n := ns.net(b)
	ctx := context.Background()
	setupBridge(b, n)
	for b.Loop() {
		if err := n.CreateTap(ctx, "tap-pool-1", "brt", 1500, 1000, 1000); err != nil {
			b.Fatal(err)
		}
		if err := n.DeleteTap(ctx, privileged.TapScope{Bridge: "brt", OwnerUID: 1000}, "tap-pool-1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateTap measures CreateTap alone; the deletes, which cost far more (the
// kernel waits for RCU grace periods when a device is unregistered), are untimed.
func BenchmarkCreateTap(b *testing.B) {
	requireRoot(b)
	ns := newNS(b)
	n := ns.net(b)
	ctx := context.Background()
	setupBridge(b, n)
	for b.Loop() {
		if err := n.CreateTap(ctx, "tap-pool-1", "brt", 1500, 1000, 1000); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := n.DeleteTap(ctx, privileged.TapScope{Bridge: "brt", OwnerUID: 1000}, "tap-pool-1"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// TestAttackTapOwnership: every op that touches a tap by name (DeleteTap, EnsureNAT,
// RemoveNetwork) checks the device first. Devices with banger's names that are not
// the owner's TAPs on banger's bridge, nor idle taps of this root, are refused, and
// the namespace (links, nft ruleset) is exactly as it was.
func TestAttackTapOwnership(t *testing.T) {
	requireRoot(t, "nft")
	ns := newNS(t)
	n := ns.net(t)
	ctx := context.Background()
	addr := netip.MustParsePrefix("10.99.0.1/24")
	sc := scopeOf("brt")
	setupBridge(t, n)
	if err := n.EnsureBaseRules(ctx, "brt", addr, 5353); err != nil {
		t.Fatal(err)
	}

	// Another user's tap on banger's bridge, with a pool name banger never made.
	ns.ip(t, "tuntap", "add", "dev", "tap-pool-7", "mode", "tap", "user", strconv.Itoa(testOwner+1))
	ns.ip(t, "link", "set", "tap-pool-7", "master", "brt")
	// Another banger root's tap: same owner, its own bridge.
	other := ns.netWith(t, Options{Root: "/srv/other-banger"})
	if _, err := other.EnsureBridge(ctx, "bro", netip.MustParsePrefix("10.98.0.1/24"), 1500); err != nil {
		t.Fatal(err)
	}
	for _, tap := range []string{"tap-pool-8", "tap-pool-11"} {
		if err := other.CreateTap(ctx, tap, "bro", 1500, testOwner, testOwner); err != nil {
			t.Fatal(err)
		}
	}
	ns.ip(t, "link", "set", "tap-pool-11", "nomaster") // the other root's idle, detached tap
	// The owner's devices that are not banger's taps: a TUN, an ownerless tap, a veth,
	// and a tap the owner could have made itself (unattached, no root's mark).
	ns.ip(t, "tuntap", "add", "dev", "tap-vm-a1", "mode", "tun", "user", strconv.Itoa(testOwner))
	ns.ip(t, "tuntap", "add", "dev", "tap-pool-9", "mode", "tap")
	ns.ip(t, "link", "set", "tap-pool-9", "master", "brt")
	ns.veth(t, "tap-vm-cd")
	ns.ip(t, "link", "set", "tap-vm-cd", "master", "brt")
	ns.ip(t, "tuntap", "add", "dev", "tap-vm-b2", "mode", "tap", "user", strconv.Itoa(testOwner))

	hostile := map[string]string{
		"tap-pool-7":  "belongs to uid",
		"tap-pool-8":  "another banger root",
		"tap-pool-11": "another banger root",
		"tap-vm-a1":   "TUN",
		"tap-pool-9":  "no owner",
		"tap-vm-cd":   "not a tap",
		"tap-vm-b2":   "not made by this root",
	}
	st := testutil.CaptureHost(t, testutil.Watch{Netns: ns.Name})
	for name, why := range hostile {
		err := n.DeleteTap(ctx, sc, name)
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("DeleteTap(%s): err = %v, want a refusal saying %q", name, err, why)
		}
		g := privileged.GuestNAT{Guest: netip.MustParseAddr("10.99.0.7"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 7}, Tap: name}
		if err := n.EnsureNAT(ctx, sc, g, true); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("EnsureNAT on %s: err = %v, want a refusal saying %q", name, err, why)
		}
	}
	taps, err := n.ListTaps(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range taps {
		if _, bad := hostile[tp.Name]; bad && !tp.Foreign {
			t.Errorf("ListTaps reports %s as this helper's tap; want it marked foreign", tp.Name)
		}
	}
	st.AssertUnchanged(t)

	// This root's own idle tap, detached because the bridge was deleted and made
	// again, is still its own.
	if err := n.CreateTap(ctx, "tap-pool-1", "brt", 1500, testOwner, testOwner); err != nil {
		t.Fatal(err)
	}
	ns.ip(t, "link", "del", "brt")
	setupBridge(t, n)
	if err := n.DeleteTap(ctx, sc, "tap-pool-1"); err != nil {
		t.Errorf("DeleteTap of this root's detached idle tap: %v", err)
	}
	h := ns.handle(t)
	assertNoLink(t, h, "tap-pool-1")

	// RemoveNetwork takes none of the hostile devices with it.
	if err := n.RemoveNetwork(ctx, sc); err != nil {
		t.Fatal(err)
	}
	for name := range hostile {
		mustLink(t, h, name)
	}
}
