package portfwd

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultHostIP is where a published port listens when the spec names no address:
// loopback, so a VM's service is reachable from this machine only. Docker binds
// 0.0.0.0 by default and so exposes every published port to the network; banger makes
// that an explicit choice (-p 0.0.0.0:8080:80).
func DefaultHostIP() netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, 1}) }

// Spec is one published port: TCP connections to HostIP:HostPort on the host are
// forwarded to GuestPort on the VM's address.
type Spec struct {
	// HostIP is the address to listen on; never the zero Addr after ParseSpec.
	HostIP netip.Addr
	// HostPort is the port to listen on, 1-65535.
	HostPort uint16
	// GuestPort is the port in the guest, 1-65535.
	GuestPort uint16
}

// ParseSpec parses a -p/--publish value: HOST:GUEST, IP:HOST:GUEST or [IPv6]:HOST:GUEST,
// each optionally followed by /tcp. UDP, port ranges and docker's "random host port"
// forms (GUEST alone, IP::GUEST) are refused with an error saying what to write instead.
func ParseSpec(s string) (Spec, error) {
	spec, err := parseSpec(s)
	if err != nil {
		return Spec{}, fmt.Errorf("publish %q: %w", s, err)
	}
	return spec, nil
}

func parseSpec(s string) (Spec, error) {
	rest, proto, hasProto := strings.Cut(s, "/")
	if hasProto {
		switch strings.ToLower(proto) {
		case "tcp":
		case "udp":
			return Spec{}, errors.New("UDP is not supported yet: only TCP ports can be published (HOST:GUEST or HOST:GUEST/tcp)")
		default:
			return Spec{}, fmt.Errorf("unknown protocol %q: only tcp can be published", proto)
		}
	}
	spec := Spec{HostIP: DefaultHostIP()}
	var hostPort, guestPort string
	if strings.HasPrefix(rest, "[") { // [IPv6]:HOST:GUEST
		addr, ports, ok := strings.Cut(rest[1:], "]:")
		if !ok {
			return Spec{}, errors.New("an IPv6 address must be written [ADDR]:HOST:GUEST, e.g. [::1]:8080:80")
		}
		ip, err := parseHostIP(addr)
		if err != nil {
			return Spec{}, err
		}
		spec.HostIP = ip
		if hostPort, guestPort, ok = strings.Cut(ports, ":"); !ok {
			return Spec{}, errors.New("expected [ADDR]:HOST:GUEST, e.g. [::1]:8080:80")
		}
	} else {
		parts := strings.Split(rest, ":")
		switch len(parts) {
		case 1:
			return Spec{}, errors.New("no host port: banger does not pick host ports, write HOST:GUEST, e.g. 8080:80")
		case 2:
			hostPort, guestPort = parts[0], parts[1]
		case 3:
			ip, err := parseHostIP(parts[0])
			if err != nil {
				return Spec{}, err
			}
			spec.HostIP = ip
			hostPort, guestPort = parts[1], parts[2]
		default:
			return Spec{}, errors.New("expected HOST:GUEST or IP:HOST:GUEST (IPv6 as [ADDR]:HOST:GUEST)")
		}
	}
	var err error
	if spec.HostPort, err = parsePort("host", hostPort); err != nil {
		return Spec{}, err
	}
	if spec.GuestPort, err = parsePort("guest", guestPort); err != nil {
		return Spec{}, err
	}
	return spec, nil
}

func parseHostIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("host address %q is not an IP address: use 127.0.0.1 (the default), 0.0.0.0 for every interface, or one of this machine's addresses", s)
	}
	if err := checkHostIP(ip); err != nil {
		return netip.Addr{}, err
	}
	return ip, nil
}

func checkHostIP(ip netip.Addr) error {
	switch {
	case !ip.IsValid():
		return errors.New("no host address")
	case ip.Zone() != "":
		return fmt.Errorf("host address %s has a zone, which is not supported: use a global address", ip)
	case ip.IsMulticast():
		return fmt.Errorf("host address %s is a multicast address: use 127.0.0.1, 0.0.0.0 or an address of this machine", ip)
	}
	return nil
}

func parsePort(which, s string) (uint16, error) {
	if s == "" {
		if which == "host" {
			return 0, errors.New("no host port: banger does not pick host ports, write HOST:GUEST, e.g. 8080:80")
		}
		return 0, errors.New("no guest port: write HOST:GUEST, e.g. 8080:80")
	}
	if strings.Contains(s, "-") {
		return 0, fmt.Errorf("%s port %q: port ranges are not supported: publish each port with its own -p", which, s)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%s port %q is not a port number: use 1-65535", which, s)
	}
	return uint16(n), nil
}

// String is the canonical form, which ParseSpec reads back: "127.0.0.1:8080:80/tcp".
func (s Spec) String() string {
	return netip.AddrPortFrom(s.HostIP, s.HostPort).String() + ":" + strconv.Itoa(int(s.GuestPort)) + "/tcp"
}

// HostAddr is the address and port the forwarder listens on.
func (s Spec) HostAddr() netip.AddrPort { return netip.AddrPortFrom(s.HostIP, s.HostPort) }

// Validate checks a Spec built by hand (ParseSpec's results are already valid).
func (s Spec) Validate() error {
	if err := checkHostIP(s.HostIP); err != nil {
		return fmt.Errorf("publish %s: %w", s, err)
	}
	if s.HostPort == 0 || s.GuestPort == 0 {
		return fmt.Errorf("publish %s: ports must be 1-65535", s)
	}
	return nil
}

// overlaps reports whether a and b would need the same listening socket: the same
// port on the same address, or on any address where one of them is a wildcard (a
// wildcard IPv6 socket also takes IPv4 on Linux, so families are not told apart).
// Port 0 (any free port) overlaps nothing.
func (s Spec) overlaps(o Spec) bool {
	if s.HostPort != o.HostPort || s.HostPort == 0 {
		return false
	}
	return s.HostIP == o.HostIP || s.HostIP.IsUnspecified() || o.HostIP.IsUnspecified()
}

// ParseSpecs parses every value of repeated -p flags and refuses two that would listen
// on the same host port. The same guest port may be published more than once.
func ParseSpecs(values []string) ([]Spec, error) {
	specs := make([]Spec, 0, len(values))
	for _, v := range values {
		s, err := ParseSpec(v)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	if err := CheckConflicts(specs); err != nil {
		return nil, err
	}
	return specs, nil
}

// CheckConflicts returns an error naming the first two specs that would listen on the
// same host port.
func CheckConflicts(specs []Spec) error {
	for i, a := range specs {
		for _, b := range specs[:i] {
			if a.overlaps(b) {
				return fmt.Errorf("publish %s and %s both use host port %d: give each -p its own host port", b, a, a.HostPort)
			}
		}
	}
	return nil
}
