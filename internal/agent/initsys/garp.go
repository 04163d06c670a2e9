package initsys

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// announce broadcasts a gratuitous ARP for ip from the interface ifindex with
// hardware address mac: an ARP request whose sender and target are both ip. Guest
// addresses are reused: when a VM is removed and a new one leases its address, the
// host (and other guests) may still hold a neighbour entry with the old VM's MAC and
// would keep sending there until it times out, which stalled the new VM's first
// connections for 8-30 s. The announcement replaces those entries at once.
func announce(ifindex int, mac net.HardwareAddr, ip netip.Addr) error {
	if !ip.Is4() || len(mac) != 6 {
		return fmt.Errorf("gratuitous ARP: need an IPv4 address and a 6-byte MAC, have %v and %v", ip, mac)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return fmt.Errorf("gratuitous ARP: packet socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{
		Protocol: htons(unix.ETH_P_ARP),
		Ifindex:  ifindex,
		Halen:    6,
		Addr:     [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
	if err := unix.Sendto(fd, arpAnnouncement(mac, ip), 0, to); err != nil {
		return fmt.Errorf("gratuitous ARP: send: %w", err)
	}
	return nil
}

// arpAnnouncement is the ARP payload (the kernel adds the Ethernet header for a
// SOCK_DGRAM packet socket): Ethernet/IPv4, request, sender = target = ip.
func arpAnnouncement(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // hardware type: Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // protocol type: IPv4
	b[4], b[5] = 6, 4                         // address lengths
	binary.BigEndian.PutUint16(b[6:], 1)      // request
	copy(b[8:14], mac)
	a := ip.As4()
	copy(b[14:18], a[:])
	// target hardware address stays zero
	copy(b[24:28], a[:])
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
