package linuxnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"banger/internal/privileged"
)

// banger's nftables table and its base chains. Everything here touches only this one
// table: no other table is ever read, changed or deleted.
//
//	table ip banger {
//	    chain prerouting  { type nat hook prerouting priority dstnat; ... }   DNS redirect (base rules)
//	    chain postrouting { type nat hook postrouting priority srcnat; ... }  per-guest masquerade
//	    chain forward     { type filter hook forward priority filter; policy accept; ... }  per-guest accepts
//	}
//
// The forward accepts say what banger lets through; they cannot override a drop in
// another table (every base chain on a hook runs, and any drop wins), so a host
// firewall with a forward policy of drop still has to let banger's range through.
const (
	TableName        = "banger"
	ChainPrerouting  = "prerouting"
	ChainPostrouting = "postrouting"
	ChainForward     = "forward"
)

// Comments on banger's rules: readable in `nft list`, and how EnsureNAT finds a
// guest's rules again.
const (
	dnsComment = "banger dns redirect"
	natPrefix  = "banger-nat "
)

func bangerTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
}

// tableExists reports whether table ip banger exists. It asks for that table by name,
// so it never reads any other.
func tableExists(c *nftables.Conn) (bool, error) {
	_, err := c.ListTableOfFamily(TableName, nftables.TableFamilyIPv4)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return false, fmt.Errorf("nftables: look up table ip %s: %w", TableName, err)
}

// deleteTable deletes table ip banger if it exists.
func (n *Net) deleteTable() error {
	c, err := n.nft()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	ok, err := tableExists(c)
	if err != nil || !ok {
		return err
	}
	c.DelTable(bangerTable())
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables: delete table ip %s: %w", TableName, err)
	}
	return nil
}

// EnsureBaseRules makes table ip banger with its three base chains and replaces the
// base rules: when dnsPort != 0, packets coming in on bridge to the bridge address on
// port 53 (udp and tcp) are DNATed to the bridge address at dnsPort, where banger's DNS
// server listens without privileges. The base rules are everything in the prerouting
// chain; the guests' rules in the other chains are kept. It is one batch, so rerunning
// it never duplicates a rule and a failure changes nothing.
func (n *Net) EnsureBaseRules(ctx context.Context, bridge string, addr netip.Prefix, dnsPort uint16) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !addr.IsValid() || !addr.Addr().Is4() {
		return fmt.Errorf("nftables base rules: bridge address %s is not an IPv4 prefix", addr)
	}
	if err := validIfName(bridge); err != nil {
		return fmt.Errorf("nftables base rules: bridge %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()

	c, err := n.nft()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := c.AddTable(bangerTable())
	pre := c.AddChain(&nftables.Chain{Name: ChainPrerouting, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	c.AddChain(&nftables.Chain{Name: ChainPostrouting, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	accept := nftables.ChainPolicyAccept
	c.AddChain(&nftables.Chain{Name: ChainForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	c.FlushChain(pre)
	if dnsPort != 0 {
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: dnsRedirect(bridge, addr.Addr(), proto, dnsPort),
				UserData: comment(dnsComment)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: set up table ip %s on bridge %q: %w", TableName, bridge, err)
	}
	return nil
}

// EnsureNAT adds (enable) or removes (!enable) one guest's rules:
//
//	postrouting: ip saddr GUEST oifname != BRIDGE masquerade
//	forward:     iifname BRIDGE ip saddr GUEST accept
//	forward:     oifname BRIDGE ip daddr GUEST ct state established,related accept
//
// A guest's traffic, forwarded from its tap through the bridge, is seen with iifname
// the bridge, not the tap, so the rules key on the guest address; the tap is recorded
// in each rule's comment (banger-nat guest=IP tap=TAP bridge=BRIDGE rule=ROLE), which
// is how the rules are found again. A guest's rules are all rules whose comment names
// its address, whatever the tap: leases are unique, and a guest that came back on
// another tap must not keep the old tap's rules.
//
// Enable when the guest's rules are already in place (judged by their comments)
// changes nothing; otherwise it replaces whatever the guest had. Disable when there is
// nothing (or no table) succeeds. Each change is one batch, so a failure leaves the
// table as it was. Enable needs the table from EnsureBaseRules. The tap must be one of
// banger's names and the bridge a valid interface name, or nothing is done.
func (n *Net) EnsureNAT(ctx context.Context, bridge string, guest netip.Addr, tap string, enable bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !guest.Is4() {
		return fmt.Errorf("nat for guest %s: only IPv4 guests are supported", guest)
	}
	// Both names go into the rules' comments, which must read back as written for the
	// rules to be found again.
	if err := privileged.ValidateTapName(tap); err != nil {
		return fmt.Errorf("nat for guest %s: %w", guest, err)
	}
	if err := validIfName(bridge); err != nil {
		return fmt.Errorf("nat for guest %s: %w", guest, err)
	}
	var want []*nftables.Rule
	if enable {
		want = natRules(bangerTable(), bridge, guest, tap)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.replaceGuestRules(guest, want)
}

// replaceGuestRules makes the guest's rules exactly want (none when want is empty), in
// one batch, or changes nothing when they already are.
func (n *Net) replaceGuestRules(guest netip.Addr, want []*nftables.Rule) error {
	c, err := n.nft()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	ok, err := tableExists(c)
	if err != nil {
		return err
	}
	if !ok {
		if len(want) == 0 {
			return nil
		}
		return fmt.Errorf("nat for guest %s: nftables table ip %s does not exist: set up banger's network first (the helper's EnsureBridge)", guest, TableName)
	}
	t := bangerTable()
	var have []*nftables.Rule
	for _, name := range []string{ChainPostrouting, ChainForward} {
		rules, err := c.GetRules(t, &nftables.Chain{Name: name, Table: t})
		if err != nil {
			return fmt.Errorf("nat for guest %s: list chain %s (rerun the helper's EnsureBridge if it is missing): %w", guest, name, err)
		}
		for _, r := range rules {
			if tag, ok := parseNATTag(r.UserData); ok && tag.Guest == guest {
				have = append(have, r)
			}
		}
	}
	if sameTags(have, want) {
		return nil
	}
	for _, r := range have {
		if err := c.DelRule(r); err != nil {
			return fmt.Errorf("nat for guest %s: %w", guest, err)
		}
	}
	for _, r := range want {
		c.AddRule(r)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nat for guest %s: replace %d rules with %d: %w", guest, len(have), len(want), err)
	}
	return nil
}

// validIfName applies the kernel's rules for interface names (dev_valid_name).
func validIfName(name string) error {
	if name == "" || len(name) >= unix.IFNAMSIZ || name == "." || name == ".." ||
		strings.ContainsFunc(name, func(r rune) bool { return r == '/' || r == ':' || unicode.IsSpace(r) }) {
		return fmt.Errorf("%q is not a valid interface name: use 1-15 characters without '/', ':' or spaces", name)
	}
	return nil
}

// natTag identifies one of a guest's rules; it is stored as the rule's comment.
type natTag struct {
	Guest  netip.Addr
	Tap    string
	Bridge string
	Rule   string // masquerade, forward-out or forward-in
}

func (g natTag) String() string {
	return fmt.Sprintf("%sguest=%s tap=%s bridge=%s rule=%s", natPrefix, g.Guest, g.Tap, g.Bridge, g.Rule)
}

// parseNATTag reads a rule's comment back; ok is false for rules that are not a
// guest's NAT rules.
func parseNATTag(ud []byte) (natTag, bool) {
	s, ok := userdata.GetString(ud, userdata.TypeComment)
	if !ok {
		return natTag{}, false
	}
	var g natTag
	var guest string
	if _, err := fmt.Sscanf(s, natPrefix+"guest=%s tap=%s bridge=%s rule=%s", &guest, &g.Tap, &g.Bridge, &g.Rule); err != nil {
		return natTag{}, false
	}
	a, err := netip.ParseAddr(guest)
	if err != nil {
		return natTag{}, false
	}
	g.Guest = a
	if g.String() != s {
		return natTag{}, false
	}
	return g, true
}

// sameTags reports whether the rules in place carry exactly the wanted comments.
func sameTags(have, want []*nftables.Rule) bool {
	if len(have) != len(want) {
		return false
	}
	count := map[string]int{}
	for _, r := range want {
		s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		count[s]++
	}
	for _, r := range have {
		s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		if count[s] == 0 {
			return false
		}
		count[s]--
	}
	return true
}

// natRules builds one guest's three rules.
func natRules(t *nftables.Table, bridge string, guest netip.Addr, tap string) []*nftables.Rule {
	tag := func(role string) []byte {
		return comment(natTag{Guest: guest, Tap: tap, Bridge: bridge, Rule: role}.String())
	}
	post := &nftables.Chain{Name: ChainPostrouting, Table: t}
	fwd := &nftables.Chain{Name: ChainForward, Table: t}
	return []*nftables.Rule{
		{Table: t, Chain: post, UserData: tag("masquerade"), Exprs: concat(
			ipAddrIs(ipSaddrOffset, guest),
			ifnameIs(expr.MetaKeyOIFNAME, expr.CmpOpNeq, bridge),
			[]expr.Any{&expr.Masq{}},
		)},
		{Table: t, Chain: fwd, UserData: tag("forward-out"), Exprs: concat(
			ifnameIs(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge),
			ipAddrIs(ipSaddrOffset, guest),
			[]expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}},
		)},
		{Table: t, Chain: fwd, UserData: tag("forward-in"), Exprs: concat(
			ifnameIs(expr.MetaKeyOIFNAME, expr.CmpOpEq, bridge),
			ipAddrIs(ipDaddrOffset, guest),
			ctStateIn(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
			[]expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}},
		)},
	}
}

// dnsRedirect is: iifname BRIDGE ip daddr ADDR PROTO dport 53 dnat to ADDR:PORT.
func dnsRedirect(bridge string, addr netip.Addr, proto byte, port uint16) []expr.Any {
	a := addr.As4()
	return concat(
		ifnameIs(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge),
		ipAddrIs(ipDaddrOffset, addr),
		[]expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
			&expr.Immediate{Register: 1, Data: a[:]},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(port)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		},
	)
}

// Offsets of the source and destination addresses in the IPv4 header.
const (
	ipSaddrOffset = 12
	ipDaddrOffset = 16
)

func ipAddrIs(offset uint32, a netip.Addr) []expr.Any {
	b := a.As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b[:]},
	}
}

// ifnameIs compares iifname or oifname; the name is zero-padded to IFNAMSIZ as nft
// itself does for an exact name, so `nft list` shows it as a plain string.
func ifnameIs(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: b},
	}
}

// ctStateIn is: ct state in bits (any of them set).
func ctStateIn(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
