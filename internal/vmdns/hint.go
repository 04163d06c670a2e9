package vmdns

import (
	"fmt"
	"net/netip"
	"strings"
)

// ResolveHint tells a person, for `banger system status` on a host without
// systemd-resolved, how to resolve VM names served at addr. Such a host does not
// route the domain anywhere, so only queries sent to addr see the names. A
// wildcard addr (0.0.0.0, ::) is shown as the loopback address, where it answers.
func ResolveHint(domain string, addr netip.AddrPort) string {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == "" {
		domain = DefaultDomain
	}
	ip := addr.Addr().WithZone("")
	if ip.IsUnspecified() {
		if ip.Is4() {
			ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		} else {
			ip = netip.IPv6Loopback()
		}
	}
	port := addr.Port()
	example := "NAME." + domain

	if port == 53 {
		return fmt.Sprintf("This host has no systemd-resolved, so VM names (%s) resolve only through banger's DNS server at %s: "+
			"query it with `dig @%s %s`, or put `nameserver %s` first in /etc/resolv.conf "+
			"(banger forwards every other name to the host's other resolvers), "+
			"or have a local resolver forward the %s domain to it (dnsmasq: `server=/%s/%s`).",
			example, netip.AddrPortFrom(ip, port), ip, example, ip, domain, domain, ip)
	}
	return fmt.Sprintf("This host has no systemd-resolved, so VM names (%s) resolve only through banger's DNS server at %s: "+
		"query it with `dig @%s -p %d %s`, or have a local resolver forward the %s domain to it "+
		"(dnsmasq: `server=/%s/%s#%d`); /etc/resolv.conf cannot point at it because its nameserver lines cannot carry a port.",
		example, netip.AddrPortFrom(ip, port), ip, port, example, domain, domain, ip, port)
}
