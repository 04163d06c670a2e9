package privileged

import (
	"context"
	"net/netip"
)

// NetOps is what the helper's server needs from the kernel. internal/linuxnet implements
// it with netlink and nftables; the server calls it only after validating every argument.
type NetOps interface {
	// EnsureBridge creates the bridge if missing, sets addr and mtu, and brings it up.
	EnsureBridge(ctx context.Context, name string, addr netip.Prefix, mtu int) (created bool, err error)
	// EnsureBaseRules makes table ip banger with its base chains and, when dnsPort != 0,
	// the redirect of guests' DNS (bridge address port 53, udp and tcp) to dnsPort.
	EnsureBaseRules(ctx context.Context, bridge string, addr netip.Prefix, dnsPort uint16) error
	// SetIPForward turns IPv4 forwarding on or off.
	SetIPForward(enable bool) error
	// CreateTap makes a persistent tap owned by uid/gid, attached and up on bridge.
	// A failure leaves no interface behind.
	CreateTap(ctx context.Context, name, bridge string, mtu, uid, gid int) error
	// DeleteTap deletes a tap; a missing one is not an error. It refuses non-tun links.
	DeleteTap(ctx context.Context, name string) error
	// ListTaps returns the tun/tap links whose names match banger's patterns, by name.
	ListTaps(ctx context.Context) ([]TapInfo, error)
	// EnsureNAT adds or removes one guest's forward and masquerade rules in one batch.
	EnsureNAT(ctx context.Context, bridge string, guest netip.Addr, tap string, enable bool) error
	// RemoveNetwork deletes table ip banger, banger's taps and the bridge.
	RemoveNetwork(ctx context.Context, bridge string) error
	// Status reads the current state without changing it.
	Status(ctx context.Context, bridge string, addr netip.Prefix) (NetStatus, error)
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
