package vmdns

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// Where the host's resolver configuration lives.
const (
	// DefaultResolvConf is the host's resolver configuration.
	DefaultResolvConf = "/etc/resolv.conf"
	// DefaultResolvedConf is where systemd-resolved writes the real upstream
	// servers when /etc/resolv.conf points at its local stub.
	DefaultResolvedConf = "/run/systemd/resolve/resolv.conf"
)

// ErrNoUpstreams is wrapped when the host's configuration names no usable resolver.
var ErrNoUpstreams = errors.New("vmdns: no upstream resolver")

// resolvedStubs are systemd-resolved's local listeners (the stub, and the proxy
// that passes DNSSEC through). They are reachable from the host but not from a
// guest, and they hide the real upstreams.
var resolvedStubs = [...]netip.AddrPort{
	netip.MustParseAddrPort("127.0.0.53:53"),
	netip.MustParseAddrPort("127.0.0.54:53"),
}

// UpstreamSource says where to find the host's resolvers and what never to use.
// The zero value reads the default paths and excludes nothing.
type UpstreamSource struct {
	// ResolvConf is the resolver configuration to read; "" means DefaultResolvConf.
	ResolvConf string
	// ResolvedConf is read when ResolvConf lists only systemd-resolved's stub;
	// "" means DefaultResolvedConf.
	ResolvedConf string
	// Exclude lists the VM DNS server's own addresses. Forwarding to them would
	// loop, so they are never returned. An unspecified address (0.0.0.0:5353)
	// excludes that port on loopback and on every local interface address.
	Exclude []netip.AddrPort
}

// HostUpstreams returns the resolvers listed in resolvConf ("" for
// /etc/resolv.conf) as "ip:port" strings, in file order, looking behind
// systemd-resolved's stub. See UpstreamSource.Upstreams.
func HostUpstreams(resolvConf string) ([]string, error) {
	return UpstreamSource{ResolvConf: resolvConf}.Upstreams()
}

// Upstreams returns the host's resolvers as "ip:port" strings ("[v6%zone]:port"
// for IPv6), in file order, without duplicates or excluded addresses.
//
// It reads the nameserver lines of ResolvConf: an address, or address:port
// (a form glibc does not read but some generators write), with '#' and ';'
// starting comments; lines it cannot parse are skipped, as glibc does. When
// every server there is systemd-resolved's stub (127.0.0.53 or 127.0.0.54), it
// returns the servers of ResolvedConf instead, the real upstreams behind the stub;
// if that file is missing or lists none, the stub itself is returned, since
// bangerd runs on the host, where the stub answers.
//
// The error wraps ErrNoUpstreams when nothing usable is left, and the file's
// error (fs.ErrNotExist, ...) when ResolvConf cannot be read.
func (u UpstreamSource) Upstreams() ([]string, error) {
	path := u.ResolvConf
	if path == "" {
		path = DefaultResolvConf
	}
	servers, err := readNameservers(path)
	if err != nil {
		return nil, err
	}
	if len(servers) > 0 && allStubs(servers) {
		rpath := u.ResolvedConf
		if rpath == "" {
			rpath = DefaultResolvedConf
		}
		if behind, err := readNameservers(rpath); err == nil && len(behind) > 0 {
			servers, path = behind, rpath
		}
	}
	local := localAddrs()
	var out []string
	for _, s := range servers {
		if isSelfAny(s, u.Exclude, local) {
			continue
		}
		out = append(out, s.String())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w: add a nameserver line with the host's resolver (guests' lookups of names outside the VM domain fail until then)", path, ErrNoUpstreams)
	}
	return out, nil
}

// readNameservers parses the nameserver lines of a resolv.conf, deduplicated.
func readNameservers(path string) ([]netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read resolver configuration: %w", err)
	}
	defer f.Close()
	var out []netip.AddrPort
	seen := map[netip.AddrPort]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line, _, _ = strings.Cut(line, ";")
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		ap, err := ParseUpstream(fields[1])
		if err != nil || seen[ap] {
			continue
		}
		seen[ap] = true
		out = append(out, ap)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read resolver configuration %s: %w", path, err)
	}
	return out, nil
}

// ParseUpstream parses an upstream resolver address: "ip" (port 53), "ip:port"
// or "[ipv6]:port"; IPv6 zones ("fe80::1%eth0") are kept. Hostnames are refused:
// resolving them would itself need DNS.
func ParseUpstream(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("upstream resolver %q is not an IP address or IP:port: write it like 192.0.2.53, 192.0.2.53:53 or [2001:db8::53]:53 (hostnames cannot be used: resolving them would need DNS)", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func allStubs(servers []netip.AddrPort) bool {
	for _, s := range servers {
		if s != resolvedStubs[0] && s != resolvedStubs[1] {
			return false
		}
	}
	return true
}

// isSelf reports whether forwarding to up would reach the server listening on
// self. A wildcard listener (0.0.0.0, ::) receives on every local address, so up
// is the server when it has the same port and is loopback or in local.
func isSelf(up, self netip.AddrPort, local map[netip.Addr]bool) bool {
	if up.Port() != self.Port() || !self.IsValid() {
		return false
	}
	if up.Addr().WithZone("") == self.Addr().WithZone("") {
		return true
	}
	if !self.Addr().IsUnspecified() {
		return false
	}
	a := up.Addr().WithZone("")
	return a.IsLoopback() || a.IsUnspecified() || local[a]
}

func isSelfAny(up netip.AddrPort, selves []netip.AddrPort, local map[netip.Addr]bool) bool {
	for _, s := range selves {
		if isSelf(up, s, local) {
			return true
		}
	}
	return false
}

// localAddrs is the host's interface addresses, read only (for isSelf). An error
// yields an empty set: loopback and exact matches are still caught.
func localAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out[p.Addr().Unmap()] = true
		}
	}
	return out
}
