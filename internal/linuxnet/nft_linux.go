package linuxnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"unicode"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/privileged"
)

// banger's nftables tables and their chains. Each banger root has its own pair of
// tables, named privileged.NFTTableName(root) (banger_<8 hex>), and touches only
// those: no other table is ever changed or deleted, so two roots on one host (or
// docker, or the host's firewall) keep their rules.
//
//	table ip banger_X {
//	    chain prerouting  { type nat hook prerouting priority dstnat; }      DNS redirect
//	    chain input       { type filter hook input priority filter; policy accept; }
//	        guests reach the host only for DNS (and ping the gateway); see inputRules
//	    chain forward     { type filter hook forward priority filter; policy drop; }
//	        guest egress and replies; see forwardRules
//	    chain guests      { ip saddr GUEST accept ... }                      one per guest
//	    chain postrouting { type nat hook postrouting priority srcnat; }     one masquerade per guest
//	    chain state       { accept comment "banger ip_forward-before=0" }   never jumped to
//	}
//	table bridge banger_X {
//	    chain prerouting  { type filter hook prerouting priority filter; policy accept;
//	        meta iifgroup G jump guests; meta iifgroup G drop }
//	    chain guests      { per tap: IP and ARP only from the guest's address and MAC }
//	    chain forward     { type filter hook forward priority filter; policy accept;
//	        with isolate_vms: meta iifgroup G meta oifgroup G drop }
//	}
//
// G is privileged.TapGroup(root), the interface group CreateTap gives this root's
// taps: the bridge table matches on it because the kernel's bridge-name match (meta
// ibrname) is not available everywhere, and because a group can only be set with
// CAP_NET_ADMIN.
//
// The forward chain's policy is drop, and its first rule accepts everything that
// neither enters nor leaves banger's bridge: every base chain on a hook sees every
// packet and any drop wins, so without that rule banger would cut off docker's, the
// host's and another banger root's forwarding.
const (
	ChainPrerouting  = "prerouting"
	ChainPostrouting = "postrouting"
	ChainForward     = "forward"
	ChainInput       = "input"
	ChainGuests      = "guests"
	ChainState       = "state"
)

// Comments on banger's rules: readable in `nft list`, and how EnsureNAT finds a
// guest's rules again.
const (
	dnsComment   = "banger dns redirect"
	natPrefix    = "banger-nat "
	statePrefix  = "banger ip_forward-before="
	linkLocalNet = "169.254.0.0/16"
)

func (n *Net) ipTable() *nftables.Table {
	return &nftables.Table{Name: n.table, Family: nftables.TableFamilyIPv4}
}

func (n *Net) bridgeTable() *nftables.Table {
	return &nftables.Table{Name: n.table, Family: nftables.TableFamilyBridge}
}

// tableExists reports whether this root's table of the family exists. It asks for
// that table by name, so it never reads any other.
func (n *Net) tableExists(c *nftables.Conn, fam nftables.TableFamily) (bool, error) {
	_, err := c.ListTableOfFamily(n.table, fam)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return false, fmt.Errorf("nftables: look up table %s %s: %w", familyName(fam), n.table, err)
}

func familyName(f nftables.TableFamily) string {
	if f == nftables.TableFamilyBridge {
		return "bridge"
	}
	return "ip"
}

// deleteTables deletes this root's tables that exist, in one batch.
func (n *Net) deleteTables() error {
	c, err := n.nft()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	any := false
	for _, t := range []*nftables.Table{n.ipTable(), n.bridgeTable()} {
		ok, err := n.tableExists(c, t.Family)
		if err != nil {
			return err
		}
		if ok {
			c.DelTable(t)
			any = true
		}
	}
	if !any {
		return nil
	}
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables: delete tables %s: %w", n.table, err)
	}
	return nil
}

// EnsureBaseRules makes this root's tables with their chains and replaces the base
// rules (the guest policy and, when dnsPort != 0, the redirect of guests' port 53 on
// the bridge address to dnsPort, where banger's DNS server listens without
// privileges). The guests' rules (chains guests and postrouting) are kept. It is one
// batch, so rerunning it never duplicates a rule and a failure changes nothing.
//
// The first time (no record in the state chain) it records whether IPv4 forwarding is
// on now, before the helper turns it on, so RemoveNetwork can restore it. The record
// lives in the table itself: it survives helper restarts and vanishes with the table
// at reboot, exactly like the forwarding banger turned on.
//
// With Options.DNSPort set, a dnsPort other than 0 and it is refused: the port guests
// may reach on the host comes from the helper's configuration, not the caller's.
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
	if n.policy.DNSPort != 0 && dnsPort != 0 && dnsPort != n.policy.DNSPort {
		return fmt.Errorf("nftables base rules: DNS port %d is not the configured %d (dns.listen in the helper's config.toml)", dnsPort, n.policy.DNSPort)
	}
	n.mu.Lock()
	defer n.mu.Unlock()

	c, err := n.nft()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	_, recorded, err := n.forwardRecord(c)
	if err != nil {
		return err
	}
	var before bool
	if !recorded {
		if before, err = n.ipForward(); err != nil {
			return err
		}
		if before {
			// On because another banger root turned it on? Then it was off before
			// banger, and this root must say so too.
			_, off, err := n.otherBangerTables(c)
			if err != nil {
				return err
			}
			before = !off
		}
	}

	t := c.AddTable(n.ipTable())
	pre := c.AddChain(&nftables.Chain{Name: ChainPrerouting, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	c.AddChain(&nftables.Chain{Name: ChainPostrouting, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	accept, drop := nftables.ChainPolicyAccept, nftables.ChainPolicyDrop
	in := c.AddChain(&nftables.Chain{Name: ChainInput, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	// guests before forward: forward jumps to it.
	c.AddChain(&nftables.Chain{Name: ChainGuests, Table: t})
	fwd := c.AddChain(&nftables.Chain{Name: ChainForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	state := c.AddChain(&nftables.Chain{Name: ChainState, Table: t})
	c.FlushChain(pre)
	c.FlushChain(in)
	c.FlushChain(fwd)
	if dnsPort != 0 {
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: dnsRedirect(bridge, addr.Addr(), proto, dnsPort),
				UserData: comment(dnsComment)})
		}
	}
	for _, r := range inputRules(bridge, addr.Addr(), dnsPort) {
		r.Table, r.Chain = t, in
		c.AddRule(r)
	}
	for _, r := range forwardRules(bridge, n.policy) {
		r.Table, r.Chain = t, fwd
		c.AddRule(r)
	}
	if !recorded {
		v := "0"
		if before {
			v = "1"
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: state, UserData: comment(statePrefix + v),
			Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
	}

	bt := c.AddTable(n.bridgeTable())
	bpre := c.AddChain(&nftables.Chain{Name: ChainPrerouting, Table: bt, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	c.AddChain(&nftables.Chain{Name: ChainGuests, Table: bt})
	bfwd := c.AddChain(&nftables.Chain{Name: ChainForward, Table: bt, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	c.FlushChain(bpre)
	c.FlushChain(bfwd)
	c.AddRule(&nftables.Rule{Table: bt, Chain: bpre, UserData: comment("banger taps: only what the guest's rules allow"),
		Exprs: concat(groupIs(expr.MetaKeyIIFGROUP, n.group), []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: ChainGuests}})})
	c.AddRule(&nftables.Rule{Table: bt, Chain: bpre, UserData: comment("banger taps: anything else is dropped"),
		Exprs: concat(groupIs(expr.MetaKeyIIFGROUP, n.group), verdict(expr.VerdictDrop))})
	if n.policy.IsolateVMs {
		c.AddRule(&nftables.Rule{Table: bt, Chain: bfwd, UserData: comment("banger isolate_vms: no guest-to-guest frames"),
			Exprs: concat(groupIs(expr.MetaKeyIIFGROUP, n.group), groupIs(expr.MetaKeyOIFGROUP, n.group), verdict(expr.VerdictDrop))})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: set up tables %s on bridge %q: %w", n.table, bridge, err)
	}
	return nil
}

// inputRules is what guests may send to the host itself (any local address, not only
// the gateway): replies to connections the host opened (bangerd's SSH, published
// ports' proxy), DNS to the gateway at the DNS server's port (after the redirect from
// port 53), and ping of the gateway, which answers "is my network up" without exposing
// a service. Everything else from the bridge to the host is dropped: host services that
// listen on all addresses, the metadata address if the host has it, other roots'
// gateways. Guests are configured statically (kernel ip= parameter), so no DHCP.
func inputRules(bridge string, gw netip.Addr, dnsPort uint16) []*nftables.Rule {
	fromBridge := ifnameIs(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge)
	rules := []*nftables.Rule{
		{UserData: comment("banger: replies to the host's own connections"), Exprs: concat(fromBridge,
			ctStateIn(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))},
	}
	if dnsPort != 0 {
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			rules = append(rules, &nftables.Rule{UserData: comment("banger: guests' DNS"), Exprs: concat(fromBridge,
				ipAddrIs(ipDaddrOffset, gw), l4Dport(proto, dnsPort), verdict(expr.VerdictAccept))})
		}
	}
	rules = append(rules,
		&nftables.Rule{UserData: comment("banger: guests may ping their gateway"), Exprs: concat(fromBridge,
			ipAddrIs(ipDaddrOffset, gw),
			[]expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{8}}, // echo-request
			},
			verdict(expr.VerdictAccept))},
		&nftables.Rule{UserData: comment("banger: guests reach nothing else on the host"), Exprs: concat(fromBridge,
			verdict(expr.VerdictDrop))},
	)
	return rules
}

// forwardRules is the forward chain (policy drop), in order:
//
//	iifname != BR oifname != BR accept          not banger's traffic
//	iifname BR oifname BR drop                  isolate_vms (before the replies rule, so
//	                                            no connection made before isolation lives on)
//	oifname BR ct state established,related accept   replies to guests
//	iifname BR oifname BR jump guests           guest to guest through the gateway (or
//	                                            bridged, with br_netfilter): leased guests only
//	iifname BR ip daddr 169.254.0.0/16 drop     link-local (cloud metadata) never
//	iifname BR ip daddr PREFIX drop             each egress_deny prefix
//	iifname BR jump guests                      egress of leased guests
func forwardRules(bridge string, p Policy) []*nftables.Rule {
	in := ifnameIs(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge)
	out := ifnameIs(expr.MetaKeyOIFNAME, expr.CmpOpEq, bridge)
	rules := []*nftables.Rule{
		{UserData: comment("banger: not banger's traffic"), Exprs: concat(
			ifnameIs(expr.MetaKeyIIFNAME, expr.CmpOpNeq, bridge), ifnameIs(expr.MetaKeyOIFNAME, expr.CmpOpNeq, bridge),
			verdict(expr.VerdictAccept))},
	}
	if p.IsolateVMs {
		rules = append(rules, &nftables.Rule{UserData: comment("banger isolate_vms: no guest-to-guest traffic"),
			Exprs: concat(in, out, verdict(expr.VerdictDrop))})
	}
	rules = append(rules,
		&nftables.Rule{UserData: comment("banger: replies to guests"), Exprs: concat(out,
			ctStateIn(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))},
		&nftables.Rule{UserData: comment("banger: guest to guest"), Exprs: concat(in, out,
			[]expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: ChainGuests}})},
		&nftables.Rule{UserData: comment("banger: no link-local from guests"), Exprs: concat(in,
			ipPrefixIs(ipDaddrOffset, netip.MustParsePrefix(linkLocalNet)), verdict(expr.VerdictDrop))},
	)
	for _, d := range p.EgressDeny {
		rules = append(rules, &nftables.Rule{UserData: comment("banger egress_deny " + d.String()), Exprs: concat(in,
			ipPrefixIs(ipDaddrOffset, d), verdict(expr.VerdictDrop))})
	}
	rules = append(rules, &nftables.Rule{UserData: comment("banger: guests' egress"), Exprs: concat(in,
		[]expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: ChainGuests}})})
	return rules
}

// forwardRecord reads the state chain's record of IPv4 forwarding before banger:
// recorded is false when there is none (no table, or a table made by an older banger).
func (n *Net) forwardRecord(c *nftables.Conn) (before, recorded bool, err error) {
	ok, err := n.tableExists(c, nftables.TableFamilyIPv4)
	if err != nil || !ok {
		return false, false, err
	}
	t := n.ipTable()
	rules, err := c.GetRules(t, &nftables.Chain{Name: ChainState, Table: t})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, false, nil
		}
		return false, false, fmt.Errorf("nftables: read chain %s of table ip %s: %w", ChainState, n.table, err)
	}
	for _, r := range rules {
		s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		switch s {
		case statePrefix + "0":
			return false, true, nil
		case statePrefix + "1":
			return true, true, nil
		}
	}
	return false, false, nil
}

// EnsureNAT adds (enable) or removes (!enable) one guest's rules:
//
//	bridge guests:   iifname TAP ether saddr MAC ip saddr GUEST accept
//	bridge guests:   iifname TAP ether saddr MAC arp (ethernet/IPv4) saddr ether MAC saddr ip GUEST accept
//	ip guests:       ip saddr GUEST accept
//	ip postrouting:  ip saddr GUEST oifname != BRIDGE masquerade
//
// The bridge rules are the anti-spoofing: the guest's tap may send IPv4 only from its
// lease and MAC, and ARP only about itself, so it can pose neither as the gateway nor
// as another guest; everything else from the tap (IPv6, VLAN tags, other ethertypes,
// forged ARP) meets the bridge table's drop. Because of them the ip rules may key on
// the source address: only this guest's tap can send from it.
//
// Each rule's comment (banger-nat guest=IP mac=MAC tap=TAP bridge=BRIDGE rule=ROLE)
// is how the rules are found again. A guest's rules are all rules whose comment names
// its address, whatever the tap: leases are unique, and a guest that came back on
// another tap must not keep the old tap's rules.
//
// Enable first checks that the tap is scope's (checkTap) and gives it this root's
// interface group, which makes the bridge table's policy apply to it; a device that
// is not scope's tap is refused before anything changes. Enable when the guest's rules
// are already in place (judged by their comments) changes nothing; otherwise it
// replaces whatever the guest had. Disable when there is nothing (or no table)
// succeeds. Each change is one batch, so a failure leaves the tables as they were.
// Enable needs the tables from EnsureBaseRules.
func (n *Net) EnsureNAT(ctx context.Context, scope privileged.TapScope, g privileged.GuestNAT, enable bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	guest := g.Guest
	if !guest.Is4() {
		return fmt.Errorf("nat for guest %s: only IPv4 guests are supported", guest)
	}
	// Both names go into the rules' comments, which must read back as written for the
	// rules to be found again.
	if err := privileged.ValidateTapName(g.Tap); err != nil {
		return fmt.Errorf("nat for guest %s: %w", guest, err)
	}
	if err := validIfName(scope.Bridge); err != nil {
		return fmt.Errorf("nat for guest %s: %w", guest, err)
	}
	var want []*nftables.Rule
	if enable {
		if _, err := privileged.ParseGuestMAC(g.MAC.String()); err != nil {
			return fmt.Errorf("nat for guest %s: %w", guest, err)
		}
		want = n.natRules(scope.Bridge, g)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if enable {
		l, err := n.checkTapLocked(scope, g.Tap)
		if err != nil {
			return fmt.Errorf("nat for guest %s: %w", guest, err)
		}
		if l == nil {
			return fmt.Errorf("nat for guest %s: tap %q does not exist: create it first (CreateTap)", guest, g.Tap)
		}
		if err := n.ensureGroup(l); err != nil {
			return fmt.Errorf("nat for guest %s: %w", guest, err)
		}
	}
	return n.replaceGuestRules(guest, want)
}

// ensureGroup gives the tap this root's interface group (taps made before groups
// were used have the default group 0).
func (n *Net) ensureGroup(l *rawLink) error {
	if l.group == n.group {
		return nil
	}
	if err := n.h.LinkSetGroup(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Index: int(l.index), Name: l.name}}, int(n.group)); err != nil {
		return fmt.Errorf("tap %q: set interface group: %w", l.name, err)
	}
	return nil
}

// guestChains are the chains that hold guests' rules.
func (n *Net) guestChains() []*nftables.Chain {
	it, bt := n.ipTable(), n.bridgeTable()
	return []*nftables.Chain{
		{Name: ChainPostrouting, Table: it},
		{Name: ChainGuests, Table: it},
		{Name: ChainGuests, Table: bt},
	}
}

// replaceGuestRules makes the guest's rules exactly want (none when want is empty), in
// one batch, or changes nothing when they already are.
func (n *Net) replaceGuestRules(guest netip.Addr, want []*nftables.Rule) error {
	c, err := n.nft()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyBridge} {
		ok, err := n.tableExists(c, fam)
		if err != nil {
			return err
		}
		if !ok {
			if len(want) == 0 {
				continue
			}
			return fmt.Errorf("nat for guest %s: nftables table %s %s does not exist: set up banger's network first (the helper's EnsureBridge)", guest, familyName(fam), n.table)
		}
	}
	var have []*nftables.Rule
	for _, ch := range n.guestChains() {
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			if len(want) == 0 && errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("nat for guest %s: list chain %s %s %s (rerun the helper's EnsureBridge if it is missing): %w", guest, familyName(ch.Table.Family), n.table, ch.Name, err)
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
	MAC    string
	Tap    string
	Bridge string
	Rule   string // l2-ip, l2-arp, forward or masquerade
}

func (g natTag) String() string {
	return fmt.Sprintf("%sguest=%s mac=%s tap=%s bridge=%s rule=%s", natPrefix, g.Guest, g.MAC, g.Tap, g.Bridge, g.Rule)
}

// parseNATTag reads a rule's comment back; ok is false for rules that are not a
// guest's rules.
func parseNATTag(ud []byte) (natTag, bool) {
	s, ok := userdata.GetString(ud, userdata.TypeComment)
	if !ok {
		return natTag{}, false
	}
	var g natTag
	var guest string
	if _, err := fmt.Sscanf(s, natPrefix+"guest=%s mac=%s tap=%s bridge=%s rule=%s", &guest, &g.MAC, &g.Tap, &g.Bridge, &g.Rule); err != nil {
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

// natRules builds one guest's rules.
func (n *Net) natRules(bridge string, g privileged.GuestNAT) []*nftables.Rule {
	tag := func(role string) []byte {
		return comment(natTag{Guest: g.Guest, MAC: g.MAC.String(), Tap: g.Tap, Bridge: bridge, Rule: role}.String())
	}
	it, bt := n.ipTable(), n.bridgeTable()
	post := &nftables.Chain{Name: ChainPostrouting, Table: it}
	ipGuests := &nftables.Chain{Name: ChainGuests, Table: it}
	brGuests := &nftables.Chain{Name: ChainGuests, Table: bt}
	a := g.Guest.As4()
	fromTap := concat(
		ifnameIs(expr.MetaKeyIIFNAME, expr.CmpOpEq, g.Tap),
		[]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(g.MAC)},
		},
	)
	return []*nftables.Rule{
		{Table: bt, Chain: brGuests, UserData: tag("l2-ip"), Exprs: concat(fromTap,
			etherTypeIs(unix.ETH_P_IP),
			ipAddrIs(ipSaddrOffset, g.Guest),
			verdict(expr.VerdictAccept),
		)},
		{Table: bt, Chain: brGuests, UserData: tag("l2-arp"), Exprs: concat(fromTap,
			etherTypeIs(unix.ETH_P_ARP),
			[]expr.Any{
				// htype 1 (ethernet), ptype 0x0800 (IPv4), hlen 6, plen 4: the layout
				// the next two offsets assume.
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 6},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 1, 8, 0, 6, 4}},
				// sender hardware address
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 6},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(g.MAC)},
				// sender protocol address
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 14, Len: 4},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
			},
			verdict(expr.VerdictAccept),
		)},
		{Table: it, Chain: ipGuests, UserData: tag("forward"), Exprs: concat(
			ipAddrIs(ipSaddrOffset, g.Guest),
			verdict(expr.VerdictAccept),
		)},
		{Table: it, Chain: post, UserData: tag("masquerade"), Exprs: concat(
			ipAddrIs(ipSaddrOffset, g.Guest),
			ifnameIs(expr.MetaKeyOIFNAME, expr.CmpOpNeq, bridge),
			[]expr.Any{&expr.Masq{}},
		)},
	}
}

// dnsRedirect is: iifname BRIDGE ip daddr ADDR PROTO dport 53 dnat to ADDR:PORT.
func dnsRedirect(bridge string, addr netip.Addr, proto byte, port uint16) []expr.Any {
	a := addr.As4()
	return concat(
		ifnameIs(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge),
		ipAddrIs(ipDaddrOffset, addr),
		l4Dport(proto, 53),
		[]expr.Any{
			&expr.Immediate{Register: 1, Data: a[:]},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(port)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		},
	)
}

// l4Dport is: PROTO dport PORT.
func l4Dport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
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

// ipPrefixIs is: ip saddr/daddr PREFIX (nft shows it as a prefix).
func ipPrefixIs(offset uint32, p netip.Prefix) []expr.Any {
	p = p.Masked()
	b := p.Addr().As4()
	mask := net.CIDRMask(p.Bits(), 32)
	if p.Bits() == 32 {
		return ipAddrIs(offset, p.Addr())
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b[:]},
	}
}

// etherTypeIs is: ether type TYPE (bridge family).
func etherTypeIs(t uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(t)},
	}
}

// groupIs is: meta iifgroup/oifgroup G.
func groupIs(key expr.MetaKey, g uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(g)},
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

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// otherBangerTables looks at the ip tables of other banger roots (named banger_*, or
// the single "banger" table of older versions): whether any exists, and whether any
// records that IPv4 forwarding was off before banger. RemoveNetwork leaves forwarding
// on while another root's guests need it, and EnsureBaseRules inherits an "off"
// record, so the last root removed turns it off. It only reads: table names and the
// other roots' state chains.
func (n *Net) otherBangerTables(c *nftables.Conn) (exists, recordsOff bool, err error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, false, fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == n.table || (t.Name != "banger" && !strings.HasPrefix(t.Name, "banger_")) {
			continue
		}
		exists = true
		rules, err := c.GetRules(t, &nftables.Chain{Name: ChainState, Table: t})
		if err != nil {
			continue // no state chain: an older banger, no record
		}
		for _, r := range rules {
			if s, _ := userdata.GetString(r.UserData, userdata.TypeComment); s == statePrefix+"0" {
				recordsOff = true
			}
		}
	}
	return exists, recordsOff, nil
}
