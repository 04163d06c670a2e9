package linuxnet

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/privileged"
)

// testGuest is a "VM" for the policy tests: a namespace whose eth0 is a tap, relayed
// frame by frame to a real banger tap on the host's bridge, as a VMM relays its
// guest's NIC. Writing to host is the guest sending a frame of its own making, which
// is how the tests forge what a hostile guest would.
type testGuest struct {
	ns   testNS
	tap  string
	ip   netip.Addr
	mac  net.HardwareAddr
	host *os.File // the host tap's queue
}

// nat is the guest's identity for EnsureNAT.
func (g *testGuest) nat() privileged.GuestNAT {
	return privileged.GuestNAT{Guest: g.ip, MAC: g.mac, Tap: g.tap}
}

// newGuest makes the tap with n.CreateTap (owned by testOwner, on bridge), a guest
// namespace with eth0 (mac, ip/24, default route via gw) and the relay between them.
// EnsureNAT is left to the caller.
func newGuest(t *testing.T, host testNS, n *Net, bridge, tap string, ip netip.Addr, mac string, gw netip.Addr) *testGuest {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.CreateTap(context.Background(), tap, bridge, 1500, testOwner, testOwner); err != nil {
		t.Fatal(err)
	}
	g := &testGuest{ns: newNS(t), tap: tap, ip: ip, mac: hw}
	g.host = openTap(t, host, tap)
	eth0 := openTap(t, g.ns, "eth0")
	g.ns.ip(t, "link", "set", "eth0", "address", mac)
	g.ns.ip(t, "addr", "add", ip.String()+"/24", "dev", "eth0")
	g.ns.ip(t, "link", "set", "eth0", "up")
	g.ns.ip(t, "route", "add", "default", "via", gw.String())
	relay(t, g.host, eth0)
	relay(t, eth0, g.host)
	return g
}

// openTap attaches to (or, for a name that does not exist, creates) a tap in ns,
// without packet information: reads and writes are bare Ethernet frames.
func openTap(t *testing.T, ns testNS, name string) *os.File {
	t.Helper()
	fd := -1
	err := ns.do(t, func() error {
		var err error
		if fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0); err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		t.Fatalf("open tap %s in %s: %v", name, ns.Name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	t.Cleanup(func() { f.Close() })
	return f
}

// relay copies frames from a to b until either is closed.
func relay(t *testing.T, a, b *os.File) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := a.Read(buf)
			if err != nil {
				return
			}
			b.Write(buf[:n])
		}
	}()
	t.Cleanup(func() { a.Close(); b.Close(); wg.Wait() })
}

// Frames a guest may forge.

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// udpFrame is an Ethernet/IPv4/UDP frame with a valid IP header checksum and no UDP
// checksum (0, allowed in IPv4).
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], unix.ETH_P_IP)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // don't fragment
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := f[34:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	return f
}

// arpFrame is an Ethernet/ARP frame (op 1 request, 2 reply) from srcMAC to dst, with
// the given sender and target.
func arpFrame(srcMAC, dst net.HardwareAddr, op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	f := make([]byte, 14+28)
	copy(f[0:6], dst)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], unix.ETH_P_ARP)
	a := f[14:]
	copy(a[0:6], []byte{0, 1, 8, 0, 6, 4})
	binary.BigEndian.PutUint16(a[6:], op)
	s, d := spa.As4(), tpa.As4()
	copy(a[8:14], sha)
	copy(a[14:18], s[:])
	copy(a[18:24], tha)
	copy(a[24:28], d[:])
	return f
}

// send writes a forged frame as the guest.
func (g *testGuest) send(t *testing.T, frame []byte) {
	t.Helper()
	if _, err := g.host.Write(frame); err != nil {
		t.Fatalf("write frame to %s: %v", g.tap, err)
	}
}

// udpSink listens on UDP addr in ns and reports each datagram's payload.
func udpSink(t *testing.T, ns testNS, addr string) <-chan string {
	t.Helper()
	var pc net.PacketConn
	if err := ns.do(t, func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	got := make(chan string, 64)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	return got
}

// arpSniffer reports every ARP frame that reaches ifname in ns, as "SPA is-at SHA".
func arpSniffer(t *testing.T, ns testNS, ifname string) <-chan string {
	t.Helper()
	fd := -1
	err := ns.do(t, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ARP))
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000}); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index})
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		t.Fatal(err)
	}
	got := make(chan string, 64)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer unix.Close(fd)
		buf := make([]byte, 2048)
		for {
			select {
			case <-done:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				return
			}
			// SOCK_RAW: the Ethernet header is included.
			if n < 14+28 {
				continue
			}
			a := buf[14:n]
			spa, _ := netip.AddrFromSlice(a[14:18])
			select {
			case got <- spa.String() + " is-at " + net.HardwareAddr(a[8:14]).String():
			default:
			}
		}
	}()
	t.Cleanup(func() { close(done); wg.Wait() })
	return got
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// expect waits up to d for want on c (other values are skipped) and reports whether
// it came.
func expect(c <-chan string, want string, d time.Duration) bool {
	deadline := time.After(d)
	for {
		select {
		case got := <-c:
			if got == want {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// collectUntil reads c until marker arrives (or d passes), then keeps reading for
// linger, and returns everything else it saw; ok says whether the marker came.
func collectUntil(c <-chan string, marker string, d, linger time.Duration) (others []string, ok bool) {
	deadline := time.After(d)
	for !ok {
		select {
		case got := <-c:
			if got == marker {
				ok = true
			} else {
				others = append(others, got)
			}
		case <-deadline:
			return others, false
		}
	}
	end := time.After(linger)
	for {
		select {
		case got := <-c:
			if got != marker {
				others = append(others, got)
			}
		case <-end:
			return others, true
		}
	}
}
