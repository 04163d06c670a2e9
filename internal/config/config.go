// Package config loads and validates banger's configuration file (ROOT/config.toml).
//
// Every field has a default, so the file is optional. Validation names the field and
// the fix, because a bad value here is found at start-up by someone reading a terminal.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"banger/internal/bytesize"
)

// Defaults. The bridge CIDR is a /24 from the private 172.16/12 range chosen to be
// unlikely to collide with docker (172.17/16) or home networks; start-up still checks it
// against the host's routes.
const (
	DefaultBridge      = "banger0"
	DefaultBridgeCIDR  = "172.30.77.1/24"
	DefaultTapPoolSize = 4
	DefaultMTU         = 1500
	DefaultDNSDomain   = "vm"
	DefaultDNSPort     = 5353
	DefaultDriver      = "auto"
	// DefaultDNSMaxInFlight bounds the VM DNS server's forwarded queries in flight
	// at once, over all guests; past it a query is answered SERVFAIL at once.
	DefaultDNSMaxInFlight = 256
	// DefaultDNSMaxInFlightPerSource bounds them per guest address, so one guest
	// cannot take the whole budget from the others.
	DefaultDNSMaxInFlightPerSource = 32
	// DefaultConsoleMaxSize caps a VM's console log; the newest bytes are kept.
	DefaultConsoleMaxSize = "1MiB"
)

// PrivateRanges are the IPv4 ranges a network.egress_deny entry "private" stands for:
// RFC 1918 and the shared address space of carrier-grade NAT.
var PrivateRanges = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"}

// Config is the whole configuration. Field tags are the TOML keys.
type Config struct {
	Network Network `toml:"network"`
	DNS     DNS     `toml:"dns"`
	VMM     VMM     `toml:"vmm"`
	Console Console `toml:"console"`
	Disk    Disk    `toml:"disk"`
}

// DiskStrategies are the names [disk] strategy and --disk-strategy take; auto tries
// the others fastest first (internal/disk).
var DiskStrategies = []string{"auto", "dm-snapshot", "reflink", "qcow2", "copy"}

// Disk configures VMs' copy-on-write root disks.
type Disk struct {
	// Strategy is the default for VMs created without --disk-strategy.
	Strategy string `toml:"strategy"`
}

// Network configures the bridge, the guest address range and the TAP pool.
type Network struct {
	// Bridge is the host bridge every VM tap joins.
	Bridge string `toml:"bridge"`
	// BridgeCIDR is the bridge's own address with the guests' prefix, e.g. 172.30.77.1/24.
	// The bridge address is every guest's gateway; guests lease the other host addresses.
	BridgeCIDR string `toml:"bridge_cidr"`
	// TapPoolSize is how many idle taps are kept ready; 0 disables the pool.
	TapPoolSize int `toml:"tap_pool_size"`
	// MTU of the bridge and taps.
	MTU int `toml:"mtu"`
	// IsolateVMs drops traffic between guests. Off by default: users run a database
	// VM and an application VM that talk to each other.
	IsolateVMs bool `toml:"isolate_vms"`
	// EgressDeny lists IPv4 prefixes guests may not reach through NAT (the LAN, a
	// VPN); "private" stands for PrivateRanges. The guests' own network and the
	// gateway's DNS are never affected. Read by banger-helper from the root-owned
	// config, so the owner cannot lift it.
	EgressDeny []string `toml:"egress_deny"`
}

// DNS configures the VM name server.
type DNS struct {
	// Domain is the zone VM names live in: <name>.<domain>.
	Domain string `toml:"domain"`
	// Listen is host:port for the server; empty means <bridge address>:5353. Guests reach
	// it on port 53 of their gateway through a redirect in banger's nftables table.
	Listen string `toml:"listen"`
	// MaxInFlight bounds forwarded queries in flight over all guests; past it the
	// server answers SERVFAIL at once instead of opening another upstream socket.
	MaxInFlight int `toml:"max_inflight"`
	// MaxInFlightPerSource bounds forwarded queries in flight from one guest address.
	MaxInFlightPerSource int `toml:"max_inflight_per_source"`
	// Upstreams are the resolvers guests' queries for other names are forwarded
	// to ("192.0.2.53" or "192.0.2.53:53"), tried in order; empty means the
	// host's, from /etc/resolv.conf.
	Upstreams []string `toml:"upstreams"`
}

// Console configures VM console logs.
type Console struct {
	// MaxSize caps each VM's console log (e.g. "1MiB", "256K"); older bytes are
	// dropped so a guest writing without end cannot fill the host's disk.
	MaxSize string `toml:"max_size"`
}

// VMM selects and locates the virtual machine monitor.
type VMM struct {
	// Driver is auto, firecracker or qemu.
	Driver      string `toml:"driver"`
	Firecracker string `toml:"firecracker"`
	// Jailer runs Firecracker under this jailer binary through banger-helper
	// where it is installed; empty runs Firecracker unjailed.
	Jailer string `toml:"jailer"`
	QEMU   string `toml:"qemu"`
}

// Default returns the configuration used when no file exists.
func Default() Config {
	return Config{
		Network: Network{Bridge: DefaultBridge, BridgeCIDR: DefaultBridgeCIDR, TapPoolSize: DefaultTapPoolSize, MTU: DefaultMTU},
		DNS:     DNS{Domain: DefaultDNSDomain, MaxInFlight: DefaultDNSMaxInFlight, MaxInFlightPerSource: DefaultDNSMaxInFlightPerSource},
		VMM:     VMM{Driver: DefaultDriver, Firecracker: "firecracker", Jailer: "jailer", QEMU: "qemu-system-x86_64"},
		Console: Console{MaxSize: DefaultConsoleMaxSize},
		Disk:    Disk{Strategy: "auto"},
	}
}

// Load reads path over the defaults. A missing file is not an error; an unknown key is,
// so a typo does not silently fall back to a default.
func Load(path string) (Config, error) {
	cfg := Default()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, cfg.Validate()
	}
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse reads data, the content of the configuration file at path (for messages),
// over the defaults, as Load does. banger-helper reads the file itself, through a
// descriptor it checked (it must be root's), and parses it here.
func Parse(data []byte, path string) (Config, error) {
	cfg := Default()
	md, err := toml.Decode(string(data), &cfg)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return Config{}, fmt.Errorf("config %s: unknown key(s) %s: remove them or check their spelling", path, strings.Join(keys, ", "))
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ifaceName is what Linux accepts and what we are willing to manage: short, no
// separators, nothing a shell or a path would reinterpret.
var ifaceName = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_-]{0,14}$`)

// dnsLabel is one RFC 1123 label.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate checks every field and returns the first problem, naming the field and the fix.
func (c Config) Validate() error {
	n := c.Network
	if !ifaceName.MatchString(n.Bridge) {
		return fmt.Errorf("network.bridge %q is not a valid interface name: use 1-15 letters, digits, '-' or '_', starting with a letter", n.Bridge)
	}
	if strings.HasPrefix(n.Bridge, "tap-") {
		return fmt.Errorf("network.bridge %q uses the tap- prefix reserved for VM taps: pick another name such as %q", n.Bridge, DefaultBridge)
	}
	if _, err := c.BridgePrefix(); err != nil {
		return err
	}
	if n.TapPoolSize < 0 || n.TapPoolSize > 64 {
		return fmt.Errorf("network.tap_pool_size %d is out of range: use 0 (no pool) to 64", n.TapPoolSize)
	}
	if n.MTU < 576 || n.MTU > 9000 {
		return fmt.Errorf("network.mtu %d is out of range: use 576 to 9000 (usually 1500)", n.MTU)
	}
	for _, l := range strings.Split(c.DNS.Domain, ".") {
		if !dnsLabel.MatchString(l) {
			return fmt.Errorf("dns.domain %q is not a valid DNS name: use lowercase labels such as %q", c.DNS.Domain, DefaultDNSDomain)
		}
	}
	if _, err := c.DNSListen(); err != nil {
		return err
	}
	if d := c.DNS; d.MaxInFlight < 1 || d.MaxInFlight > 65536 {
		return fmt.Errorf("dns.max_inflight %d is out of range: use 1 to 65536 (default %d)", d.MaxInFlight, DefaultDNSMaxInFlight)
	}
	if d := c.DNS; d.MaxInFlightPerSource < 1 || d.MaxInFlightPerSource > d.MaxInFlight {
		return fmt.Errorf("dns.max_inflight_per_source %d is out of range: use 1 to dns.max_inflight (%d; default %d)", d.MaxInFlightPerSource, d.MaxInFlight, DefaultDNSMaxInFlightPerSource)
	}
	for _, u := range c.DNS.Upstreams {
		if _, err := ParseUpstream(u); err != nil {
			return err
		}
	}
	if _, err := c.EgressDenyPrefixes(); err != nil {
		return err
	}
	if _, err := c.ConsoleMaxBytes(); err != nil {
		return err
	}
	if !slices.Contains(DiskStrategies, c.Disk.Strategy) {
		return fmt.Errorf("disk.strategy %q is unknown: use one of %s", c.Disk.Strategy, strings.Join(DiskStrategies, ", "))
	}
	switch c.VMM.Driver {
	case "auto", "firecracker", "qemu":
	default:
		return fmt.Errorf("vmm.driver %q is unknown: use auto, firecracker or qemu", c.VMM.Driver)
	}
	return nil
}

// BridgePrefix is the bridge address with the guest prefix. It must be a private IPv4
// host address inside a prefix of /16 to /29.
func (c Config) BridgePrefix() (netip.Prefix, error) {
	p, err := netip.ParsePrefix(c.Network.BridgeCIDR)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("network.bridge_cidr %q is not an address with a prefix: write it like %q", c.Network.BridgeCIDR, DefaultBridgeCIDR)
	}
	a := p.Addr()
	switch {
	case !a.Is4():
		return netip.Prefix{}, fmt.Errorf("network.bridge_cidr %q: only IPv4 is supported, write it like %q", c.Network.BridgeCIDR, DefaultBridgeCIDR)
	case p.Bits() < 16 || p.Bits() > 29:
		return netip.Prefix{}, fmt.Errorf("network.bridge_cidr %q: prefix length must be /16 to /29", c.Network.BridgeCIDR)
	case !a.IsPrivate():
		return netip.Prefix{}, fmt.Errorf("network.bridge_cidr %q is not a private address: pick one in 10/8, 172.16/12 or 192.168/16", c.Network.BridgeCIDR)
	case a == p.Masked().Addr() || a == Broadcast(p):
		return netip.Prefix{}, fmt.Errorf("network.bridge_cidr %q: the bridge address must be a host address, not the network or broadcast address (e.g. %s)", c.Network.BridgeCIDR, p.Masked().Addr().Next())
	}
	return p, nil
}

// EgressDenyPrefixes is network.egress_deny parsed: masked IPv4 prefixes, "private" expanded,
// duplicates kept once, in the order given.
func (c Config) EgressDenyPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	add := func(entry, s string) error {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("network.egress_deny entry %q is not an IPv4 prefix: write it like \"10.0.0.0/8\", or \"private\" for %s", entry, strings.Join(PrivateRanges, ", "))
		}
		if !p.Addr().Is4() {
			return fmt.Errorf("network.egress_deny entry %q: only IPv4 is supported (guests have no IPv6 route)", entry)
		}
		if p = p.Masked(); !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
		return nil
	}
	for _, e := range c.Network.EgressDeny {
		if e == "private" {
			for _, r := range PrivateRanges {
				if err := add(e, r); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := add(e, e); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ConsoleMaxBytes is console.max_size in bytes: at least 4 KiB, at most 1 GiB.
func (c Config) ConsoleMaxBytes() (int64, error) {
	n, err := bytesize.Parse(c.Console.MaxSize)
	if err != nil {
		return 0, fmt.Errorf("console.max_size: %w", err)
	}
	if n < 4<<10 || n > 1<<30 {
		return 0, fmt.Errorf("console.max_size %q is out of range: use 4K to 1G (default %s)", c.Console.MaxSize, DefaultConsoleMaxSize)
	}
	return n, nil
}

// ParseUpstream parses a dns.upstreams entry: "ip" (port 53) or "ip:port"
// ("[ipv6]:port"). Hostnames are refused: resolving them would need DNS.
func ParseUpstream(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("dns.upstreams entry %q is not an IP address or IP:port: write it like \"192.0.2.53\" or \"192.0.2.53:53\" (hostnames cannot be used), or leave dns.upstreams out to use the host's resolvers", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// DNSListen is the address the VM DNS server binds.
func (c Config) DNSListen() (netip.AddrPort, error) {
	if c.DNS.Listen == "" {
		p, err := c.BridgePrefix()
		if err != nil {
			return netip.AddrPort{}, err
		}
		return netip.AddrPortFrom(p.Addr(), DefaultDNSPort), nil
	}
	ap, err := netip.ParseAddrPort(c.DNS.Listen)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("dns.listen %q is not host:port: write it like \"172.30.77.1:5353\", or leave it empty for the bridge address", c.DNS.Listen)
	}
	return ap, nil
}

// Broadcast returns the last address of p.
func Broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Route is one host route as the overlap check needs it.
type Route struct {
	Dst    netip.Prefix
	Device string
}

// CheckOverlap refuses a bridge prefix that overlaps a host route, except routes on the
// bridge itself (left from an earlier run) and the default route.
func (c Config) CheckOverlap(routes []Route) error {
	p, err := c.BridgePrefix()
	if err != nil {
		return err
	}
	pm := p.Masked()
	for _, r := range routes {
		if r.Device == c.Network.Bridge || r.Dst.Bits() == 0 || !r.Dst.Addr().Is4() {
			continue
		}
		if pm.Overlaps(r.Dst) {
			return fmt.Errorf("network.bridge_cidr %s overlaps the host route %s on %s: set network.bridge_cidr in %s to a free private /24 (for example 10.213.7.1/24) that no route on this host uses",
				pm, r.Dst, r.Device, "ROOT/config.toml")
		}
	}
	return nil
}
