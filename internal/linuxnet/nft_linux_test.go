package linuxnet

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
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
	chainFwd  = "type filter hook forward priority filter; policy accept;"
)

// natLines is the nft text of one guest's rules.
func natLines(guest, tap string) []string {
	tag := ` comment "banger-nat guest=` + guest + ` tap=` + tap + ` bridge=brt rule=`
	return []string{
		`ip saddr ` + guest + ` oifname != "brt" masquerade` + tag + `masquerade"`,
		`iifname "brt" ip saddr ` + guest + ` accept` + tag + `forward-out"`,
		`oifname "brt" ip daddr ` + guest + ` ct state established,related accept` + tag + `forward-in"`,
	}
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
	g1, g2 := netip.MustParseAddr("10.50.0.2"), netip.MustParseAddr("10.50.0.3")

	// No table yet: enable says what to do, disable is a no-op.
	if err := n.EnsureNAT(ctx, "brt", g1, "tap-vm-1", true); err == nil || !strings.Contains(err.Error(), "EnsureBridge") {
		t.Errorf("EnsureNAT before the table exists: err = %v, want one saying to set up the network", err)
	}
	if err := n.EnsureNAT(ctx, "brt", g1, "tap-vm-1", false); err != nil {
		t.Errorf("disable before the table exists: %v", err)
	}

	// Base rules, twice: no duplicates.
	for range 2 {
		if err := n.EnsureBaseRules(ctx, "brt", addr, 5353); err != nil {
			t.Fatal(err)
		}
	}
	text, ok := ns.listTable(t, TableName)
	if !ok {
		t.Fatalf("table ip %s missing after EnsureBaseRules", TableName)
	}
	assertLines(t, text, []string{chainPre, chainPost, chainFwd, dnsUDP, dnsTCP}, nil)
	if got := len(ruleLines(text)); got != 5 {
		t.Errorf("%d lines after base rules, want 5:\n%s", got, text)
	}

	// One guest, enabled twice: three rules, and the second call changes nothing.
	if err := n.EnsureNAT(ctx, "brt", g1, "tap-vm-1", true); err != nil {
		t.Fatal(err)
	}
	text, _ = ns.listTable(t, TableName)
	assertLines(t, text, natLines("10.50.0.2", "tap-vm-1"), nil)
	first := nftWithHandles(t, ns)
	if err := n.EnsureNAT(ctx, "brt", g1, "tap-vm-1", true); err != nil {
		t.Fatal(err)
	}
	if again := nftWithHandles(t, ns); again != first {
		t.Errorf("second enable changed the table (rule handles included):\nbefore:\n%s\nafter:\n%s", first, again)
	}

	// A second guest; the first guest comes back on another tap: its old rules go.
	if err := n.EnsureNAT(ctx, "brt", g2, "tap-pool-4", true); err != nil {
		t.Fatal(err)
	}
	if err := n.EnsureNAT(ctx, "brt", g1, "tap-vm-9", true); err != nil {
		t.Fatal(err)
	}
	text, _ = ns.listTable(t, TableName)
	assertLines(t, text, append(natLines("10.50.0.2", "tap-vm-9"), natLines("10.50.0.3", "tap-pool-4")...), natLines("10.50.0.2", "tap-vm-1"))

	// Rerunning the base rules (the daemon reopening, a new DNS port) keeps the guests.
	if err := n.EnsureBaseRules(ctx, "brt", addr, 5354); err != nil {
		t.Fatal(err)
	}
	text, _ = ns.listTable(t, TableName)
	assertLines(t, text, append(natLines("10.50.0.2", "tap-vm-9"), strings.ReplaceAll(dnsUDP, "5353", "5354")), []string{dnsUDP, dnsTCP})

	// Disable: exactly that guest's rules go, the base chains and the other guest stay.
	if err := n.EnsureNAT(ctx, "brt", g1, "tap-vm-9", false); err != nil {
		t.Fatal(err)
	}
	text, _ = ns.listTable(t, TableName)
	assertLines(t, text, append([]string{chainPre, chainPost, chainFwd}, natLines("10.50.0.3", "tap-pool-4")...), natLines("10.50.0.2", "tap-vm-9"))
	if strings.Contains(text, "10.50.0.2") {
		t.Errorf("guest 10.50.0.2 still appears after disable:\n%s", text)
	}
	if err := n.EnsureNAT(ctx, "brt", g1, "tap-vm-9", false); err != nil {
		t.Errorf("second disable: %v", err)
	}

	// No DNS port: no redirect.
	if err := n.EnsureBaseRules(ctx, "brt", addr, 0); err != nil {
		t.Fatal(err)
	}
	text, _ = ns.listTable(t, TableName)
	if strings.Contains(text, "dnat") {
		t.Errorf("dnat rules remain with dnsPort 0:\n%s", text)
	}

	if got, _ := ns.listTable(t, "other"); got != other {
		t.Errorf("table ip other changed:\nbefore:\n%s\nafter:\n%s", other, got)
	}
	if err := n.RemoveNetwork(ctx, "brt"); err != nil {
		t.Fatal(err)
	}
	if _, ok := ns.listTable(t, TableName); ok {
		t.Errorf("table ip %s exists after RemoveNetwork", TableName)
	}
	if got, ok := ns.listTable(t, "other"); !ok || got != other {
		t.Errorf("table ip other changed by RemoveNetwork:\nbefore:\n%s\nafter:\n%s", other, got)
	}
	if err := n.EnsureNAT(ctx, "brt", g2, "tap-pool-4", false); err != nil {
		t.Errorf("disable after RemoveNetwork: %v", err)
	}
}

// A batch that the kernel rejects part-way leaves the table as it was: here a guest's
// rules are replaced by a set whose last rule jumps to a chain that does not exist,
// after the deletions of the old rules and the additions of the new ones are already
// in the batch.
func TestNFTFailedBatchChangesNothing(t *testing.T) {
	requireRoot(t, "nft")
	ns := newNS(t)
	n := ns.net(t)
	ctx := context.Background()
	g := netip.MustParseAddr("10.50.0.2")
	if err := n.EnsureBaseRules(ctx, "brt", netip.MustParsePrefix("10.50.0.1/24"), 5353); err != nil {
		t.Fatal(err)
	}
	if err := n.EnsureNAT(ctx, "brt", g, "tap-vm-1", true); err != nil {
		t.Fatal(err)
	}
	before := nftWithHandles(t, ns)

	tbl := bangerTable()
	bad := &nftables.Rule{
		Table:    tbl,
		Chain:    &nftables.Chain{Name: ChainForward, Table: tbl},
		UserData: comment(natTag{Guest: g, Tap: "tap-vm-2", Bridge: "brt", Rule: "bad"}.String()),
		Exprs:    []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "no-such-chain"}},
	}
	n.mu.Lock()
	err := n.replaceGuestRules(g, append(natRules(tbl, "brt", g, "tap-vm-2"), bad))
	n.mu.Unlock()
	if err == nil {
		t.Fatal("replacing with a jump to a missing chain: err = nil, want the kernel's refusal")
	}
	if after := nftWithHandles(t, ns); after != before {
		t.Errorf("failed batch changed the table:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Names that would not read back from the comments are refused up front.
	for _, c := range [][2]string{{"brt", "tap 1"}, {"brt", ""}, {"br t", "tap-vm-1"}, {"", "tap-vm-1"}} {
		if err := n.EnsureNAT(ctx, c[0], g, c[1], true); err == nil {
			t.Errorf("EnsureNAT(bridge %q, tap %q): err = nil, want a refusal", c[0], c[1])
		}
	}
	if after := nftWithHandles(t, ns); after != before {
		t.Errorf("refused calls changed the table:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// nftWithHandles lists banger's table with rule handles, so that a rule deleted and
// added again shows up as a change.
func nftWithHandles(t *testing.T, ns testNS) string {
	t.Helper()
	return ns.exec(t, "nft", "-a", "list", "table", "ip", TableName)
}
