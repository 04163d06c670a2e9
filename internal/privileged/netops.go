package privileged

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
)

// NetOps is what the helper's server needs from the kernel. internal/linuxnet implements
// it with netlink and nftables; the server calls it only after validating every argument.
//
// Every operation that touches a tap takes the helper's TapScope: the kernel layer
// checks the device itself (a real TAP, owned by the owner, on banger's bridge or an
// idle tap of this root) before touching it, because a name alone says nothing about
// whose device it is.
type NetOps interface {
	// EnsureBridge creates the bridge if missing, sets addr and mtu, and brings it up.
	EnsureBridge(ctx context.Context, name string, addr netip.Prefix, mtu int) (created bool, err error)
	// EnsureBaseRules makes this root's nftables tables with their base chains: the
	// guest policy (what guests may reach) and, when dnsPort != 0, the redirect of
	// guests' DNS (bridge address port 53, udp and tcp) to dnsPort. It remembers,
	// inside the table, whether IPv4 forwarding was on before banger turned it on.
	EnsureBaseRules(ctx context.Context, bridge string, addr netip.Prefix, dnsPort uint16) error
	// SetIPForward turns IPv4 forwarding on or off.
	SetIPForward(enable bool) error
	// CreateTap makes a persistent tap owned by uid/gid, attached and up on bridge.
	// A failure leaves no interface behind.
	CreateTap(ctx context.Context, name, bridge string, mtu, uid, gid int) error
	// DeleteTap deletes one of scope's taps; a missing one is not an error. It
	// refuses any device that is not scope's tap.
	DeleteTap(ctx context.Context, scope TapScope, name string) error
	// ListTaps returns scope's taps, by name.
	ListTaps(ctx context.Context, scope TapScope) ([]TapInfo, error)
	// EnsureNAT adds or removes one guest's policy, forward and masquerade rules in
	// one batch. Enabling checks that g.Tap is scope's tap.
	EnsureNAT(ctx context.Context, scope TapScope, g GuestNAT, enable bool) error
	// RemoveNetwork deletes this root's tables, scope's taps and the bridge, and turns
	// IPv4 forwarding off again if banger turned it on.
	RemoveNetwork(ctx context.Context, scope TapScope) error
	// Status reads the current state without changing it.
	Status(ctx context.Context, bridge string, addr netip.Prefix) (NetStatus, error)
}

// TapScope is whose taps an operation may touch: taps of the helper's owner on the
// helper's bridge. It comes from the helper's own configuration, never from a request.
type TapScope struct {
	Bridge   string
	OwnerUID int
}

// GuestNAT is one guest's identity on the bridge: the only source address and MAC
// its tap may send from.
type GuestNAT struct {
	Guest netip.Addr
	MAC   net.HardwareAddr // nil when removing
	Tap   string
}

// NetStatus is the read-only host network state.
type NetStatus struct {
	BridgeUp  bool
	NFTTable  bool
	IPForward bool
}

// ResolverOps routes the VM domain through the host resolver (systemd-resolved).
type ResolverOps interface {
	// Route enables or disables routing of domain to dns via bridge. applied is false,
	// with a human reason, when the host has no systemd-resolved.
	Route(ctx context.Context, bridge, domain string, dns netip.AddrPort, enable bool) (applied bool, reason string, err error)
}

// rootID is the first bytes of sha256(root): what tells two banger roots on one host
// apart in the kernel's shared namespaces (nftables, interface groups).
func rootID(root string) [sha256.Size]byte { return sha256.Sum256([]byte(root)) }

// NFTTableName is the name of a banger root's nftables tables (one ip, one bridge):
// banger_ and 8 hex digits of sha256(root). Two roots on one host get different
// tables, so neither ever flushes or deletes the other's rules.
func NFTTableName(root string) string {
	id := rootID(root)
	return "banger_" + hex.EncodeToString(id[:4])
}

// TapGroup is the interface group (IFLA_GROUP) the helper of a banger root gives its
// taps. Only a process with CAP_NET_ADMIN can set it, so it marks a tap as made by
// this root's helper even while no bridge holds it; the bridge-family guest policy
// matches on it too. The top byte is fixed (0xba) to keep clear of small groups an
// administrator may use; 0 (the default group) is never returned.
func TapGroup(root string) uint32 {
	id := rootID(root)
	return 0xba000000 | binary.BigEndian.Uint32(id[:4])&0x00ffffff
}

// ParseGuestMAC parses a guest's MAC address: six bytes, unicast, not all zero. A
// multicast or zero source is never a NIC's own address, and the guest policy pins
// the tap to this address.
func ParseGuestMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("mac %q is not a MAC address: write six hex bytes such as 02:00:ac:1e:00:02", s)
	}
	if mac[0]&1 != 0 {
		return nil, fmt.Errorf("mac %s is a multicast address: a guest's MAC must be unicast (lowest bit of the first byte clear)", mac)
	}
	zero := true
	for _, b := range mac {
		zero = zero && b == 0
	}
	if zero {
		return nil, fmt.Errorf("mac %s is all zeros: send the guest's own MAC address", mac)
	}
	return mac, nil
}
