package linuxnet

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"banger/internal/privileged"
)

// otherTable is a table that is not banger's, made before banger's code runs; every
// operation must leave it exactly as it was.
const otherTable = `
table ip other {
	chain other_forward {
		type filter hook forward priority -5; policy accept;
		ip saddr 10.50.0.2 counter drop comment "not banger"
	}
	chain other_post {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.50.0.0/24 masquerade
	}
}
`

// Expected nft text of banger's rules for the test bridge brt / 10.50.0.1/24.
const (
	dnsUDP = `iifname "brt" ip daddr 10.50.0.1 udp dport 53 dnat to 10.50.0.1:5353 comment "banger dns redirect"`
	dnsTCP = `iifname "brt" ip daddr 10.50.0.1 tcp dport 53 dnat to 10.50.0.1:5353 comment "banger dns redirect"`

	chainPre  = "type nat hook prerouting priority dstnat; policy accept;"
	chainPost = "type nat hook postrouting priority srcnat; policy accept;"
	chainFwd  = "type filter hook forward priority filter; policy drop;"
	chainIn   = "type filter hook input priority filter; policy accept;"
	notOurs   = `iifname != "brt" oifname != "brt" accept comment "banger: not banger's traffic"`
	isolate   = `iifname "brt" oifname "brt" drop comment "banger isolate_vms: no guest-to-guest traffic"`
	inputDrop = `iifname "brt" drop comment "banger: guests reach nothing else on the host"`
)

// natLines is the nft text of one guest's ip-table rules.
func natLines(guest, mac, tap string) []string {
	tag := ` comment "banger-nat guest=` + guest + ` mac=` + mac + ` tap=` + tap + ` bridge=brt rule=`
	return []string{
		`ip saddr ` + guest + ` oifname != "brt" masquerade` + tag + `masquerade"`,
		`ip saddr ` + guest + ` accept` + tag + `forward"`,
	}
}

// l2Lines is the nft text of one guest's bridge-table rules.
func l2Lines(guest, mac, tap string) []string {
	tag := ` comment "banger-nat guest=` + guest + ` mac=` + mac + ` tap=` + tap + ` bridge=brt rule=`
	from := `iifname "` + tap + `" ether saddr ` + mac + ` `
	return []string{
		from + `ip saddr ` + guest + ` accept` + tag + `l2-ip"`,
		from + `arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether ` + mac + ` arp saddr ip ` + guest + ` accept` + tag + `l2-arp"`,
	}
}

// guestNAT builds the GuestNAT of a test guest.
func guestNAT(t *testing.T, guest, mac, tap string) privileged.GuestNAT {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	return privileged.GuestNAT{Guest: netip.MustParseAddr(guest), MAC: hw, Tap: tap}
}

// ruleLines returns the table's lines, trimmed, without the structure.
func ruleLines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l == "}" || strings.HasPrefix(l, "table ") || strings.HasPrefix(l, "chain ") {
			continue
		}
		out = append(out, l)
	}
	return out
}

// assertLines checks that every want line occurs exactly once and every gone line never.
func assertLines(t *testing.T, text string, want, gone []string) {
	t.Helper()
	lines := ruleLines(text)
	count := map[string]int{}
	for _, l := range lines {
		count[l]++
	}
	for _, w := range want {
		if count[w] != 1 {
			t.Errorf("line %q occurs %d times, want once; table:\n%s", w, count[w], text)
		}
	}
	for _, g := range gone {
		if count[g] != 0 {
			t.Errorf("line %q occurs %d times, want none; table:\n%s", g, count[g], text)
		}
	}
}

func TestNFTRules(t *testing.T) {
	requireRoot(t, "nft")
	ns := newNS(t)
	ns.nftScript(t, otherTable)
	other, _ := ns.listTable(t, "other")
	n := ns.net(t)
	ctx := context.Background()
	addr := netip.MustParsePrefix("10.50.0.1/24")
	sc := scopeOf("brt")
	const mac1, mac2 = "02:00:00:00:00:02", "02:00:00:00:00:03"
	g1 := guestNAT(t, "10.50.0.2", mac1, "tap-vm-1")

	if _, err := n.EnsureBridge(ctx, "brt", addr, 1500); err != nil {
		t.Fatal(err)
	}
	for _, tap := range []string{"tap-vm-1", "tap-pool-4", "tap-vm-9"} {
		if err := n.CreateTap(ctx, tap, "brt", 1500, testOwner, testOwner); err != nil {
			t.Fatal(err)
		}
	}

	// No table yet: enable says what to do, disable is a no-op.
	if err := n.EnsureNAT(ctx, sc, g1, true); err == nil || !strings.Contains(err.Error(), "EnsureBridge") {
		t.Errorf("EnsureNAT before the table exists: err = %v, want one saying to set up the network", err)
	}
	if err := n.EnsureNAT(ctx, sc, g1, false); err != nil {
		t.Errorf("disable before the table exists: %v", err)
	}

	// Base rules, twice: no duplicates.
	for range 2 {
		if err := n.EnsureBaseRules(ctx, "brt", addr, 5353); err != nil {
			t.Fatal(err)
		}
	}
	text, ok := ns.listTable(t, n.TableName())
	if !ok {
		t.Fatalf("table ip %s missing after EnsureBaseRules", n.TableName())
	}
	assertLines(t, text, []string{chainPre, chainPost, chainFwd, chainIn, dnsUDP, dnsTCP, notOurs, inputDrop}, []string{isolate})
	baseLines := len(ruleLines(text))

	// One guest, enabled twice: its rules, and the second call changes nothing.
	if err := n.EnsureNAT(ctx, sc, g1, true); err != nil {
		t.Fatal(err)
	}
	text, _ = ns.listTable(t, n.TableName())
	assertLines(t, text, natLines("10.50.0.2", mac1, "tap-vm-1"), nil)
	btext, _ := ns.listTableOf(t, "bridge", n.TableName())
	assertLines(t, btext, l2Lines("10.50.0.2", mac1, "tap-vm-1"), nil)
	first := nftWithHandles(t, ns, n)
	if err := n.EnsureNAT(ctx, sc, g1, true); err != nil {
		t.Fatal(err)
	}
	if again := nftWithHandles(t, ns, n); again != first {
		t.Errorf("second enable changed the tables (rule handles included):\nbefore:\n%s\nafter:\n%s", first, again)
	}

	// A second guest; the first guest comes back on another tap: its old rules go.
	if err := n.EnsureNAT(ctx, sc, guestNAT(t, "10.50.0.3", mac2, "tap-pool-4"), true); err != nil {
		t.Fatal(err)
	}
	if err := n.EnsureNAT(ctx, sc, guestNAT(t, "10.50.0.2", mac1, "tap-vm-9"), true); err != nil {
		t.Fatal(err)
	}
	text, _ = ns.listTable(t, n.TableName())
	assertLines(t, text, append(natLines("10.50.0.2", mac1, "tap-vm-9"), natLines("10.50.0.3", mac2, "tap-pool-4")...), natLines("10.50.0.2", mac1, "tap-vm-1"))
	btext, _ = ns.listTableOf(t, "bridge", n.TableName())
	assertLines(t, btext, append(l2Lines("10.50.0.2", mac1, "tap-vm-9"), l2Lines("10.50.0.3", mac2, "tap-pool-4")...), l2Lines("10.50.0.2", mac1, "tap-vm-1"))

	// Rerunning the base rules (the daemon reopening, a new DNS port) keeps the guests.
	if err := n.EnsureBaseRules(ctx, "brt", addr, 5354); err != nil {
		t.Fatal(err)
	}
	text, _ = ns.listTable(t, n.TableName())
	assertLines(t, text, append(natLines("10.50.0.2", mac1, "tap-vm-9"), strings.ReplaceAll(dnsUDP, "5353", "5354")), []string{dnsUDP, dnsTCP})

	// Disable: exactly that guest's rules go, the base chains and the other guest stay.
	if err := n.EnsureNAT(ctx, sc, privileged.GuestNAT{Guest: netip.MustParseAddr("10.50.0.2"), Tap: "tap-vm-9"}, false); err != nil {
		t.Fatal(err)
	}
	text, _ = ns.listTable(t, n.TableName())
	assertLines(t, text, append([]string{chainPre, chainPost, chainFwd}, natLines("10.50.0.3", mac2, "tap-pool-4")...), natLines("10.50.0.2", mac1, "tap-vm-9"))
	btext, _ = ns.listTableOf(t, "bridge", n.TableName())
	if strings.Contains(text, "10.50.0.2") || strings.Contains(btext, "10.50.0.2") {
		t.Errorf("guest 10.50.0.2 still appears after disable:\n%s\n%s", text, btext)
	}
	if got := len(ruleLines(text)); got != baseLines+2 {
		t.Errorf("%d lines after disable, want the %d base lines and the other guest's 2:\n%s", got, baseLines, text)
	}
	if err := n.EnsureNAT(ctx, sc, g1, false); err != nil {
		t.Errorf("second disable: %v", err)
	}

	// No DNS port: no redirect, and no DNS hole in the input chain.
	if err := n.EnsureBaseRules(ctx, "brt", addr, 0); err != nil {
		t.Fatal(err)
	}
	text, _ = ns.listTable(t, n.TableName())
	if strings.Contains(text, "dnat") || strings.Contains(text, "dport") {
		t.Errorf("DNS rules remain with dnsPort 0:\n%s", text)
	}

	if got, _ := ns.listTable(t, "other"); got != other {
		t.Errorf("table ip other changed:\nbefore:\n%s\nafter:\n%s", other, got)
	}
	if err := n.RemoveNetwork(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if _, ok := ns.listTable(t, n.TableName()); ok {
		t.Errorf("table ip %s exists after RemoveNetwork", n.TableName())
	}
	if got, ok := ns.listTable(t, "other"); !ok || got != other {
		t.Errorf("table ip other changed by RemoveNetwork:\nbefore:\n%s\nafter:\n%s", other, got)
	}
	if err := n.EnsureNAT(ctx, sc, privileged.GuestNAT{Guest: netip.MustParseAddr("10.50.0.3"), Tap: "tap-pool-4"}, false); err != nil {
		t.Errorf("disable after RemoveNetwork: %v", err)
	}
}

// TestNFTPolicyOptions: isolate_vms and egress_deny come from Options (the helper's
// own config) and show up in the forward chains; rerunning the base rules with other
// options replaces them.
func TestNFTPolicyOptions(t *testing.T) {
	requireRoot(t, "nft")
	ns := newNS(t)
	ctx := context.Background()
	addr := netip.MustParsePrefix("10.50.0.1/24")
	deny := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")}
	strict := ns.netWith(t, Options{Policy: Policy{IsolateVMs: true, EgressDeny: deny, DNSPort: 5353}})
	if err := strict.EnsureBaseRules(ctx, "brt", addr, 5353); err != nil {
		t.Fatal(err)
	}
	denyLines := []string{
		`iifname "brt" ip daddr 10.0.0.0/8 drop comment "banger egress_deny 10.0.0.0/8"`,
		`iifname "brt" ip daddr 192.0.2.7 drop comment "banger egress_deny 192.0.2.7/32"`,
	}
	brIsolate := `iifgroup ` + strconv.FormatUint(uint64(strict.TapGroup()), 10) + ` oifgroup ` + strconv.FormatUint(uint64(strict.TapGroup()), 10) + ` drop comment "banger isolate_vms: no guest-to-guest frames"`
	text, _ := ns.listTable(t, strict.TableName())
	assertLines(t, text, append([]string{isolate}, denyLines...), nil)
	btext, _ := ns.listTableOf(t, "bridge", strict.TableName())
	assertLines(t, btext, []string{brIsolate}, nil)

	// The configured DNS port is the only one accepted.
	if err := strict.EnsureBaseRules(ctx, "brt", addr, 22); err == nil {
		t.Errorf("EnsureBaseRules with DNS port 22 against a configured 5353: err = nil, want a refusal")
	}
	if again, _ := ns.listTable(t, strict.TableName()); again != text {
		t.Errorf("a refused EnsureBaseRules changed the table:\n%s", again)
	}

	open := ns.net(t)
	if err := open.EnsureBaseRules(ctx, "brt", addr, 5353); err != nil {
		t.Fatal(err)
	}
	text, _ = ns.listTable(t, open.TableName())
	assertLines(t, text, nil, append([]string{isolate}, denyLines...))
	btext, _ = ns.listTableOf(t, "bridge", open.TableName())
	assertLines(t, btext, nil, []string{brIsolate})
}

// TestAttackTwoRootsOneHost: two banger roots in one namespace have their own tables;
// setting up, changing and removing one leaves the other's rules exactly as they were.
func TestAttackTwoRootsOneHost(t *testing.T) {
	requireRoot(t, "nft")
	ns := newNS(t)
	ctx := context.Background()
	a := ns.netWith(t, Options{Root: "/var/lib/banger"})
	b := ns.netWith(t, Options{Root: "/home/dev/.banger"})
	if a.TableName() == b.TableName() || a.TapGroup() == b.TapGroup() {
		t.Errorf("roots share table %s / group %#x", a.TableName(), a.TapGroup())
	}
	if !strings.HasPrefix(a.TableName(), "banger_") || len(a.TableName()) != len("banger_")+8 {
		t.Errorf("table name %q, want banger_ and 8 hex digits", a.TableName())
	}
	setup := func(n *Net, bridge, prefix, guest, tap string) {
		t.Helper()
		p := netip.MustParsePrefix(prefix)
		if _, err := n.EnsureBridge(ctx, bridge, p, 1500); err != nil {
			t.Fatal(err)
		}
		if err := n.EnsureBaseRules(ctx, bridge, p, 5353); err != nil {
			t.Fatal(err)
		}
		if err := n.CreateTap(ctx, tap, bridge, 1500, testOwner, testOwner); err != nil {
			t.Fatal(err)
		}
		g := privileged.GuestNAT{Guest: netip.MustParseAddr(guest), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, Tap: tap}
		if err := n.EnsureNAT(ctx, scopeOf(bridge), g, true); err != nil {
			t.Fatal(err)
		}
	}
	setup(a, "bra", "10.51.0.1/24", "10.51.0.2", "tap-vm-a")
	beforeA := nftWithHandles(t, ns, a)
	setup(b, "brb", "10.52.0.1/24", "10.52.0.2", "tap-vm-b")
	if got := nftWithHandles(t, ns, a); got != beforeA {
		t.Errorf("setting up root b changed root a's tables:\nbefore:\n%s\nafter:\n%s", beforeA, got)
	}
	beforeB := nftWithHandles(t, ns, b)

	// Root a re-applies its base rules, removes its guest, and is removed: b keeps all.
	if err := a.EnsureBaseRules(ctx, "bra", netip.MustParsePrefix("10.51.0.1/24"), 0); err != nil {
		t.Fatal(err)
	}
	if err := a.EnsureNAT(ctx, scopeOf("bra"), privileged.GuestNAT{Guest: netip.MustParseAddr("10.51.0.2"), Tap: "tap-vm-a"}, false); err != nil {
		t.Fatal(err)
	}
	// Root a may not touch b's tap, although it has the same owner and one of
	// banger's names.
	if err := a.DeleteTap(ctx, scopeOf("bra"), "tap-vm-b"); err == nil {
		t.Errorf("root a deleted root b's tap")
	}
	if err := a.RemoveNetwork(ctx, scopeOf("bra")); err != nil {
		t.Fatal(err)
	}
	if got := nftWithHandles(t, ns, b); got != beforeB {
		t.Errorf("root a's changes and removal changed root b's tables:\nbefore:\n%s\nafter:\n%s", beforeB, got)
	}
	h := ns.handle(t)
	mustLink(t, h, "tap-vm-b")
	mustLink(t, h, "brb")
	assertNoLink(t, h, "tap-vm-a")
	if _, ok := ns.listTable(t, a.TableName()); ok {
		t.Errorf("root a's table survived its RemoveNetwork")
	}
}

// TestIPForwardRestore: RemoveNetwork turns forwarding off again only when it was off
// before banger turned it on, also from a fresh Net (the helper restarted between
// install and uninstall), and not while another banger root still uses it.
func TestIPForwardRestore(t *testing.T) {
	requireRoot(t, "nft")
	ctx := context.Background()
	addr := netip.MustParsePrefix("10.50.0.1/24")
	fwd := func(ns testNS) string {
		return strings.TrimSpace(ns.exec(t, "cat", "/proc/sys/net/ipv4/ip_forward"))
	}
	bringUp := func(n *Net) {
		t.Helper()
		if err := n.EnsureBaseRules(ctx, "brt", addr, 5353); err != nil {
			t.Fatal(err)
		}
		if err := n.SetIPForward(true); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("off before: restored by a restarted helper", func(t *testing.T) {
		ns := newNS(t)
		if fwd(ns) != "0" {
			t.Fatalf("a fresh namespace has forwarding on")
		}
		bringUp(ns.net(t))
		bringUp(ns.net(t)) // a restart re-applying: the record stays "off"
		if err := ns.net(t).RemoveNetwork(ctx, scopeOf("brt")); err != nil {
			t.Fatal(err)
		}
		if got := fwd(ns); got != "0" {
			t.Errorf("ip_forward after RemoveNetwork = %s, want 0 (it was off before banger)", got)
		}
	})
	t.Run("on before: left on", func(t *testing.T) {
		ns := newNS(t)
		ns.exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		bringUp(ns.net(t))
		if err := ns.net(t).RemoveNetwork(ctx, scopeOf("brt")); err != nil {
			t.Fatal(err)
		}
		if got := fwd(ns); got != "1" {
			t.Errorf("ip_forward after RemoveNetwork = %s, want 1 (it was on before banger)", got)
		}
	})
	t.Run("two roots: off only after the last", func(t *testing.T) {
		ns := newNS(t)
		a := ns.netWith(t, Options{Root: "/root-a"})
		b := ns.netWith(t, Options{Root: "/root-b"})
		bringUp(a)
		bringUp(b)
		if err := a.RemoveNetwork(ctx, scopeOf("brt")); err != nil {
			t.Fatal(err)
		}
		if got := fwd(ns); got != "1" {
			t.Errorf("ip_forward after removing root a = %s, want 1 (root b still needs it)", got)
		}
		if err := b.RemoveNetwork(ctx, scopeOf("brt")); err != nil {
			t.Fatal(err)
		}
		if got := fwd(ns); got != "0" {
			t.Errorf("ip_forward after removing both roots = %s, want 0", got)
		}
	})
}

// A batch that the kernel rejects part-way leaves the tables as they were: here a
// guest's rules are replaced by a set whose last rule jumps to a chain that does not
// exist, after the deletions of the old rules and the additions of the new ones are
// already in the batch.
func TestNFTFailedBatchChangesNothing(t *testing.T) {
	requireRoot(t, "nft")
	ns := newNS(t)
	n := ns.net(t)
	ctx := context.Background()
	addr := netip.MustParsePrefix("10.50.0.1/24")
	g := guestNAT(t, "10.50.0.2", "02:00:00:00:00:02", "tap-vm-1")
	if _, err := n.EnsureBridge(ctx, "brt", addr, 1500); err != nil {
		t.Fatal(err)
	}
	if err := n.EnsureBaseRules(ctx, "brt", addr, 5353); err != nil {
		t.Fatal(err)
	}
	if err := n.CreateTap(ctx, "tap-vm-1", "brt", 1500, testOwner, testOwner); err != nil {
		t.Fatal(err)
	}
	if err := n.EnsureNAT(ctx, scopeOf("brt"), g, true); err != nil {
		t.Fatal(err)
	}
	before := nftWithHandles(t, ns, n)

	tbl := n.ipTable()
	g2 := g
	g2.Tap = "tap-vm-2"
	bad := &nftables.Rule{
		Table:    tbl,
		Chain:    &nftables.Chain{Name: ChainGuests, Table: tbl},
		UserData: comment(natTag{Guest: g.Guest, MAC: g.MAC.String(), Tap: "tap-vm-2", Bridge: "brt", Rule: "bad"}.String()),
		Exprs:    []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "no-such-chain"}},
	}
	n.mu.Lock()
	err := n.replaceGuestRules(g.Guest, append(n.natRules("brt", g2), bad))
	n.mu.Unlock()
	if err == nil {
		t.Fatal("replacing with a jump to a missing chain: err = nil, want the kernel's refusal")
	}
	if after := nftWithHandles(t, ns, n); after != before {
		t.Errorf("failed batch changed the tables:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Names that would not read back from the comments, and bad MACs, are refused up
	// front.
	for _, c := range []struct{ bridge, tap, mac string }{
		{"brt", "tap 1", "02:00:00:00:00:02"}, {"brt", "", "02:00:00:00:00:02"}, {"br t", "tap-vm-1", "02:00:00:00:00:02"},
		{"", "tap-vm-1", "02:00:00:00:00:02"}, {"brt", "tap-vm-1", "00:00:00:00:00:00"}, {"brt", "tap-vm-1", "01:00:5e:00:00:01"},
	} {
		gg := g
		gg.Tap = c.tap
		gg.MAC, _ = net.ParseMAC(c.mac)
		if err := n.EnsureNAT(ctx, scopeOf(c.bridge), gg, true); err == nil {
			t.Errorf("EnsureNAT(bridge %q, tap %q, mac %s): err = nil, want a refusal", c.bridge, c.tap, c.mac)
		}
	}
	if after := nftWithHandles(t, ns, n); after != before {
		t.Errorf("refused calls changed the tables:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// nftWithHandles lists this root's tables with rule handles, so that a rule deleted
// and added again shows up as a change.
func nftWithHandles(t *testing.T, ns testNS, n *Net) string {
	t.Helper()
	return ns.exec(t, "nft", "-a", "list", "table", "ip", n.TableName()) +
		ns.exec(t, "nft", "-a", "list", "table", "bridge", n.TableName())
}
