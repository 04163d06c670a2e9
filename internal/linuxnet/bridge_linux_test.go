package linuxnet

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"banger/internal/config"
	"banger/internal/privileged"
)

// bridgeAddrs reads a link's IPv4 addresses back.
func bridgeAddrs(t *testing.T, h *netlink.Handle, l netlink.Link) []netip.Prefix {
	t.Helper()
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		out = append(out, prefixOf(a.IPNet))
	}
	return out
}

func TestEnsureBridge(t *testing.T) {
	requireRoot(t)
	ns := newNS(t)
	n, h := ns.net(t), ns.handle(t)
	ctx := context.Background()
	addr := netip.MustParsePrefix("10.99.0.1/24")

	created, err := n.EnsureBridge(ctx, "brt", addr, 1400)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Errorf("first EnsureBridge: created = false, want true")
	}
	l := mustLink(t, h, "brt")
	if got := l.Type(); got != "bridge" {
		t.Fatalf("type = %q, want bridge", got)
	}
	if got := l.Attrs().MTU; got != 1400 {
		t.Errorf("MTU = %d, want 1400", got)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("bridge is not up")
	}
	if got := bridgeAddrs(t, h, l); !slices.Equal(got, []netip.Prefix{addr}) {
		t.Errorf("addresses = %v, want [%s]", got, addr)
	}
	mac := l.Attrs().HardwareAddr.String()

	// Idempotent; a changed MTU is applied.
	created, err = n.EnsureBridge(ctx, "brt", addr, 1500)
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Errorf("second EnsureBridge: created = true, want false")
	}
	l = mustLink(t, h, "brt")
	if got := l.Attrs().MTU; got != 1500 {
		t.Errorf("MTU after change = %d, want 1500", got)
	}
	if got := bridgeAddrs(t, h, l); !slices.Equal(got, []netip.Prefix{addr}) {
		t.Errorf("addresses after rerun = %v, want [%s]", got, addr)
	}

	// A new bridge_cidr replaces the stale address, and a stray one goes too.
	ns.ip(t, "addr", "add", "10.98.0.7/16", "dev", "brt")
	addr2 := netip.MustParsePrefix("10.99.1.1/24")
	if _, err := n.EnsureBridge(ctx, "brt", addr2, 1500); err != nil {
		t.Fatal(err)
	}
	if got := bridgeAddrs(t, h, mustLink(t, h, "brt")); !slices.Equal(got, []netip.Prefix{addr2}) {
		t.Errorf("addresses after new cidr = %v, want [%s]", got, addr2)
	}

	// The bridge's MAC is fixed: attaching a port does not change the gateway's MAC.
	if err := n.CreateTap(ctx, "tap-vm-1", "brt", 1500, 0, 0); err != nil {
		t.Fatal(err)
	}
	ns.ip(t, "link", "set", "tap-vm-1", "address", "02:00:00:00:00:01") // lower than any random one
	if got := mustLink(t, h, "brt").Attrs().HardwareAddr.String(); got != mac {
		t.Errorf("bridge MAC after a port joined = %s, want unchanged %s", got, mac)
	}
}

func TestEnsureBridgeRefusesNonBridge(t *testing.T) {
	requireRoot(t)
	ns := newNS(t)
	n, h := ns.net(t), ns.handle(t)
	ns.veth(t, "brt")

	_, err := n.EnsureBridge(context.Background(), "brt", netip.MustParsePrefix("10.99.0.1/24"), 1500)
	if err == nil || !strings.Contains(err.Error(), "veth") {
		t.Fatalf("EnsureBridge over a veth: err = %v, want a refusal naming the veth", err)
	}
	l := mustLink(t, h, "brt")
	if got := l.Type(); got != "veth" {
		t.Errorf("link type after refusal = %q, want veth", got)
	}
	if got := bridgeAddrs(t, h, l); len(got) != 0 {
		t.Errorf("refused link got addresses %v, want none", got)
	}
}

func TestStatusAndIPForward(t *testing.T) {
	requireRoot(t)
	ns := newNS(t)
	n := ns.net(t)
	ctx := context.Background()
	addr := netip.MustParsePrefix("10.99.0.1/24")
	hostBefore := hostIPForward(t)

	st, err := n.Status(ctx, "brt", addr)
	if err != nil {
		t.Fatal(err)
	}
	if st != (privileged.NetStatus{}) {
		t.Errorf("status of a fresh namespace = %+v, want all false", st)
	}

	if _, err := n.EnsureBridge(ctx, "brt", addr, 1500); err != nil {
		t.Fatal(err)
	}
	if err := n.EnsureBaseRules(ctx, "brt", addr, 5353); err != nil {
		t.Fatal(err)
	}
	if err := n.SetIPForward(true); err != nil {
		t.Fatal(err)
	}
	st, err = n.Status(ctx, "brt", addr)
	if err != nil {
		t.Fatal(err)
	}
	if want := (privileged.NetStatus{BridgeUp: true, NFTTable: true, IPForward: true}); st != want {
		t.Errorf("status after setup = %+v, want %+v", st, want)
	}
	if got := strings.TrimSpace(ns.exec(t, "cat", "/proc/sys/net/ipv4/ip_forward")); got != "1" {
		t.Errorf("ip_forward in the namespace = %s, want 1", got)
	}
	if got := hostIPForward(t); got != hostBefore {
		t.Errorf("the test process's own ip_forward changed from %s to %s", hostBefore, got)
	}

	// Another address is not "up with its address"; forwarding off reads back off.
	if st, err = n.Status(ctx, "brt", netip.MustParsePrefix("10.99.5.1/24")); err != nil || st.BridgeUp {
		t.Errorf("status for another address: BridgeUp = %v, err = %v; want false, nil", st.BridgeUp, err)
	}
	if err := n.SetIPForward(false); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(ns.exec(t, "cat", "/proc/sys/net/ipv4/ip_forward")); got != "0" {
		t.Errorf("ip_forward in the namespace = %s, want 0", got)
	}
	ns.ip(t, "link", "set", "brt", "down")
	if st, err = n.Status(ctx, "brt", addr); err != nil {
		t.Fatal(err)
	}
	if want := (privileged.NetStatus{NFTTable: true}); st != want {
		t.Errorf("status with bridge down, forwarding off = %+v, want %+v", st, want)
	}
}

func TestRoutes(t *testing.T) {
	requireRoot(t)
	ns := newNS(t)
	n := ns.net(t)
	ctx := context.Background()
	ns.veth(t, "up0")
	ns.ip(t, "addr", "add", "10.77.0.2/24", "dev", "up0")
	ns.ip(t, "link", "set", "up0", "up")
	ns.ip(t, "link", "set", "up0-p", "up")
	ns.ip(t, "route", "add", "default", "via", "10.77.0.1")
	ns.ip(t, "route", "add", "blackhole", "10.88.0.0/16")
	if _, err := n.EnsureBridge(ctx, "brt", netip.MustParsePrefix("10.99.0.1/24"), 1500); err != nil {
		t.Fatal(err)
	}

	routes, err := n.Routes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []config.Route{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Device: "up0"},
		{Dst: netip.MustParsePrefix("10.77.0.0/24"), Device: "up0"},
		{Dst: netip.MustParsePrefix("10.88.0.0/16"), Device: ""},
		{Dst: netip.MustParsePrefix("10.99.0.0/24"), Device: "brt"},
	} {
		if !slices.Contains(routes, want) {
			t.Errorf("routes %v lack %v", routes, want)
		}
	}
	for _, r := range routes {
		if r.Dst.Addr().IsLoopback() {
			t.Errorf("route %v is from the local table, want main only", r)
		}
	}

	// The consumer: the bridge's own route is ignored, a veth's route overlaps.
	cfg := config.Default()
	cfg.Network.Bridge = "brt"
	for cidr, wantErr := range map[string]bool{"10.99.0.1/24": false, "10.77.0.9/24": true, "10.88.3.1/24": true, "10.66.0.1/24": false} {
		cfg.Network.BridgeCIDR = cidr
		if err := cfg.CheckOverlap(routes); (err != nil) != wantErr {
			t.Errorf("CheckOverlap(%s) = %v, want error %v", cidr, err, wantErr)
		}
	}
}

func TestRemoveNetwork(t *testing.T) {
	requireRoot(t, "nft")
	ns := newNS(t)
	n, h := ns.net(t), ns.handle(t)
	ctx := context.Background()
	addr := netip.MustParsePrefix("10.99.0.1/24")
	if _, err := n.EnsureBridge(ctx, "brt", addr, 1500); err != nil {
		t.Fatal(err)
	}
	if err := n.EnsureBaseRules(ctx, "brt", addr, 5353); err != nil {
		t.Fatal(err)
	}
	for _, tap := range []string{"tap-pool-0", "tap-vm-ab"} {
		if err := n.CreateTap(ctx, tap, "brt", 1500, testOwner, testOwner); err != nil {
			t.Fatal(err)
		}
	}
	ns.ip(t, "tuntap", "add", "dev", "keep0", "mode", "tap")                      // not banger's name: stays
	ns.veth(t, "tap-vm-cd")                                                       // banger's name, not a tap: stays
	ns.ip(t, "tuntap", "add", "dev", "tap-pool-7", "mode", "tap", "user", "4243") // another user's: stays
	ns.ip(t, "link", "set", "tap-pool-7", "master", "brt")

	if err := n.RemoveNetwork(ctx, scopeOf("brt")); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"brt", "tap-pool-0", "tap-vm-ab"} {
		assertNoLink(t, h, gone)
	}
	for _, kept := range []string{"keep0", "tap-vm-cd", "tap-pool-7"} {
		mustLink(t, h, kept)
	}
	for _, fam := range []string{"ip", "bridge"} {
		if _, ok := ns.listTableOf(t, fam, n.TableName()); ok {
			t.Errorf("table %s %s still exists after RemoveNetwork", fam, n.TableName())
		}
	}
	// Again, with everything gone: success.
	if err := n.RemoveNetwork(ctx, scopeOf("brt")); err != nil {
		t.Errorf("second RemoveNetwork: %v", err)
	}
	// A non-bridge of that name is refused and kept.
	ns.veth(t, "brt")
	if err := n.RemoveNetwork(ctx, scopeOf("brt")); err == nil {
		t.Errorf("RemoveNetwork with a veth named like the bridge: err = nil, want a refusal")
	}
	mustLink(t, h, "brt")
}
