package linuxnet

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/config"
	"banger/internal/privileged"
)

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// EnsureBridge creates the bridge if missing, sets its MTU (when mtu > 0) and address,
// and brings it up. It returns whether it created the bridge. Idempotent.
//
// It refuses, without changing anything, a link of that name that is not a bridge.
//
// The bridge is banger's own (RemoveNetwork deletes it), so its IPv4 addresses are made
// exactly addr: any other IPv4 address is left from an earlier bridge_cidr, and since
// config.CheckOverlap ignores routes on the bridge, its stale connected route would
// otherwise go unnoticed and keep claiming the old range. IPv6 addresses (the kernel's
// link-local one) are left alone.
//
// A bridge created here gets a fixed random locally administered MAC address: without
// one the kernel gives the bridge the lowest MAC of its ports, so the gateway's MAC
// would change as taps come and go and guests' ARP entries for it would go stale.
//
// If a step fails after the bridge was created, the bridge is deleted again.
func (n *Net) EnsureBridge(ctx context.Context, name string, addr netip.Prefix, mtu int) (created bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if !addr.IsValid() || !addr.Addr().Is4() {
		return false, fmt.Errorf("bridge %q: address %s is not an IPv4 prefix", name, addr)
	}
	n.mu.Lock()
	defer n.mu.Unlock()

	l, err := n.linkByName(name)
	if err != nil {
		return false, err
	}
	if l != nil && l.Type() != "bridge" {
		return false, fmt.Errorf("bridge %q: a %s link with that name exists and banger will not take it over: delete it or set network.bridge to another name", name, l.Type())
	}
	if l == nil {
		mac, err := randomMAC()
		if err != nil {
			return false, fmt.Errorf("bridge %q: %w", name, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, HardwareAddr: mac}}
		if err := n.h.LinkAdd(br); err != nil {
			return false, fmt.Errorf("bridge %q: create: %w", name, err)
		}
		created = true
		defer func() {
			if err != nil {
				if derr := n.h.LinkDel(br); derr != nil {
					err = errors.Join(err, fmt.Errorf("bridge %q: delete the half-made bridge: %w", name, derr))
				}
			}
		}()
		if l, err = n.h.LinkByName(name); err != nil {
			return created, fmt.Errorf("bridge %q: read back: %w", name, err)
		}
	}
	if mtu > 0 && l.Attrs().MTU != mtu {
		if err := n.h.LinkSetMTU(l, mtu); err != nil {
			return created, fmt.Errorf("bridge %q: set MTU %d: %w", name, mtu, err)
		}
	}
	if err := n.setOnlyAddr(l, addr); err != nil {
		return created, fmt.Errorf("bridge %q: %w", name, err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := n.h.LinkSetUp(l); err != nil {
			return created, fmt.Errorf("bridge %q: bring up: %w", name, err)
		}
	}
	return created, nil
}

// setOnlyAddr makes addr the link's only IPv4 address.
func (n *Net) setOnlyAddr(l netlink.Link, addr netip.Prefix) error {
	addrs, err := n.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	have := false
	for _, a := range addrs {
		if prefixOf(a.IPNet) == addr {
			have = true
			continue
		}
		// Deleting a primary address can take its secondaries with it, so an address
		// already gone by the time its turn comes is fine.
		if err := n.h.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale address %s: %w", a.IPNet, err)
		}
	}
	if have {
		return nil
	}
	want := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}}
	if err := n.h.AddrAdd(l, want); err != nil {
		return fmt.Errorf("add address %s: %w", addr, err)
	}
	return nil
}

// prefixOf converts a netlink address to the address-with-prefix form banger uses.
func prefixOf(ipn *net.IPNet) netip.Prefix {
	if ipn == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(ipn.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := ipn.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// randomMAC returns a random unicast, locally administered MAC address.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := io.ReadFull(rand.Reader, mac); err != nil {
		return nil, fmt.Errorf("random MAC address: %w", err)
	}
	mac[0] = mac[0]&^0x01 | 0x02
	return mac, nil
}

// SetIPForward turns IPv4 forwarding on or off in the namespace.
func (n *Net) SetIPForward(enable bool) error {
	v := "0\n"
	if enable {
		v = "1\n"
	}
	err := n.inNetNS(func() error {
		return os.WriteFile(ipForwardPath, []byte(v), 0o644)
	})
	if err != nil {
		return fmt.Errorf("set %s to %s: %w", ipForwardPath, strings.TrimSpace(v), err)
	}
	return nil
}

// ipForward reads whether IPv4 forwarding is on in the namespace.
func (n *Net) ipForward() (bool, error) {
	var b []byte
	err := n.inNetNS(func() error {
		var err error
		b, err = os.ReadFile(ipForwardPath)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("read %s: %w", ipForwardPath, err)
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

// Status reads the bridge, table and forwarding state without changing anything.
// BridgeUp means the bridge exists, is a bridge, is administratively up and holds addr.
func (n *Net) Status(ctx context.Context, bridge string, addr netip.Prefix) (privileged.NetStatus, error) {
	var st privileged.NetStatus
	if err := ctx.Err(); err != nil {
		return st, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()

	l, err := n.linkByName(bridge)
	if err != nil {
		return st, err
	}
	if l != nil && l.Type() == "bridge" && l.Attrs().Flags&net.FlagUp != 0 {
		addrs, err := n.h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return st, fmt.Errorf("bridge %q: list addresses: %w", bridge, err)
		}
		for _, a := range addrs {
			if prefixOf(a.IPNet) == addr {
				st.BridgeUp = true
			}
		}
	}
	c, err := n.nft()
	if err != nil {
		return st, fmt.Errorf("nftables: %w", err)
	}
	if st.NFTTable, err = n.tableExists(c, nftables.TableFamilyIPv4); err != nil {
		return st, err
	}
	if st.NFTTable {
		if st.NFTTable, err = n.tableExists(c, nftables.TableFamilyBridge); err != nil {
			return st, err
		}
	}
	if st.IPForward, err = n.ipForward(); err != nil {
		return st, err
	}
	return st, nil
}

// RemoveNetwork deletes this root's nftables tables, scope's taps (see
// checkTapLocked: another user's or another root's taps with banger's names stay), and
// the bridge. Whatever is already gone is skipped; it goes on after a failure and
// reports all of them. It refuses to delete a link named like the bridge that is not
// a bridge.
//
// IPv4 forwarding is turned off again only when the table's record says it was off
// before banger turned it on, and no other banger root's table remains (its guests
// still need it); otherwise it is left as it is, since something else on the host may
// rely on it.
func (n *Net) RemoveNetwork(ctx context.Context, scope privileged.TapScope) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()

	var errs []error
	restore := false
	if c, err := n.nft(); err != nil {
		errs = append(errs, fmt.Errorf("nftables: %w", err))
	} else if before, recorded, err := n.forwardRecord(c); err != nil {
		errs = append(errs, err)
	} else if recorded && !before {
		other, _, err := n.otherBangerTables(c)
		if err != nil {
			errs = append(errs, err)
		}
		restore = err == nil && !other
	}
	if err := n.deleteTables(); err != nil {
		errs = append(errs, err)
		restore = false
	}
	if restore {
		if err := n.SetIPForward(false); err != nil {
			errs = append(errs, fmt.Errorf("restore IPv4 forwarding to off, as it was before banger: %w", err))
		}
	}
	taps, err := n.listTapsLocked(scope)
	if err != nil {
		errs = append(errs, err)
	}
	for _, t := range taps {
		if t.Foreign {
			continue
		}
		if l, err := n.checkTapLocked(scope, t.Name); err != nil {
			errs = append(errs, err)
		} else if l != nil {
			if err := n.deleteLinkLocked(l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	l, err := n.linkByName(scope.Bridge)
	switch {
	case err != nil:
		errs = append(errs, err)
	case l == nil:
	case l.Type() != "bridge":
		errs = append(errs, fmt.Errorf("bridge %q: the link of that name is a %s, not a bridge: banger leaves it alone", scope.Bridge, l.Type()))
	default:
		if err := n.h.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("bridge %q: delete: %w", scope.Bridge, err))
		}
	}
	return errors.Join(errs...)
}

// Routes returns the IPv4 routes of the main table with their devices, for
// config.CheckOverlap. The default route has Dst 0.0.0.0/0; a multipath route is
// reported on its first hop's device; a route without a device (blackhole,
// unreachable) has Device "".
func (n *Net) Routes(ctx context.Context) ([]config.Route, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()

	links, err := n.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	rs, err := n.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	out := make([]config.Route, 0, len(rs))
	for _, r := range rs {
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if r.Dst != nil {
			dst = prefixOf(r.Dst)
		}
		idx := r.LinkIndex
		if idx == 0 && len(r.MultiPath) > 0 {
			idx = r.MultiPath[0].LinkIndex
		}
		out = append(out, config.Route{Dst: dst, Device: names[idx]})
	}
	return out, nil
}
