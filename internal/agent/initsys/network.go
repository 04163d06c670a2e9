package initsys

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
)

// setupNetwork brings up lo and, when the host configured one, the VM's interface
// with its address, MTU and default route, through netlink (no ip binary needed).
func setupNetwork(c BootConfig) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	if !c.Address.IsValid() {
		return nil
	}
	link, err := netlink.LinkByName(c.Iface)
	if err != nil {
		return fmt.Errorf("interface %s: %w (is the VM's network device attached?)", c.Iface, err)
	}
	if c.MTU > 0 {
		if err := netlink.LinkSetMTU(link, c.MTU); err != nil {
			return fmt.Errorf("interface %s mtu %d: %w", c.Iface, c.MTU, err)
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   c.Address.Addr().AsSlice(),
		Mask: net.CIDRMask(c.Address.Bits(), c.Address.Addr().BitLen()),
	}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("interface %s address %s: %w", c.Iface, c.Address, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("interface %s up: %w", c.Iface, err)
	}
	if c.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: c.Gateway.AsSlice()}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("default route via %s: %w", c.Gateway, err)
		}
	}
	// Tell the host this address now lives at this MAC (see announce). A failure
	// only costs the speed-up, so it does not fail the network set-up.
	if err := announce(link.Attrs().Index, link.Attrs().HardwareAddr, c.Address.Addr()); err != nil {
		fmt.Fprintf(os.Stderr, "banger-agent: %v\n", err)
	}
	return nil
}

// writeResolvConf points the guest's resolver at banger's DNS server. It replaces
// a symlink (systemd-resolved images) with a file, since nothing runs resolved here.
func writeResolvConf(etc string, c BootConfig) error {
	if len(c.DNS) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("# written by banger-agent at boot\n")
	for _, a := range c.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	if len(c.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(c.Search, " "))
	}
	p := filepath.Join(etc, "resolv.conf")
	_ = os.Remove(p)
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// writeHostname makes /etc/hostname say the VM's name, so that what the image
// shipped ("banger", "localhost", a builder's name) does not contradict the kernel's
// hostname, and an init that reads the file (systemd, hostname(1)) keeps the name.
// A file that already says it is not rewritten.
func writeHostname(etc, hostname string) error {
	p := filepath.Join(etc, "hostname")
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == hostname {
		return nil
	}
	if err := os.WriteFile(p, []byte(hostname+"\n"), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// writeHostsEntry makes the hostname resolve locally (sudo and others complain
// otherwise), the way Debian's installer does: "127.0.1.1 <hostname>". An existing
// line for the name is left alone.
func writeHostsEntry(etc, hostname string) error {
	p := filepath.Join(etc, "hosts")
	b, err := os.ReadFile(p)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("read %s: %w", p, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		for _, f := range fields[min(1, len(fields)):] {
			if f == hostname {
				return nil
			}
		}
	}
	if len(b) == 0 {
		b = []byte("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
	} else if b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	b = append(b, "127.0.1.1 "+hostname+"\n"...)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}
