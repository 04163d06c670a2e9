package initsys

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestAnnounce sends the gratuitous ARP from one end of a veth pair, in a network
// namespace of the test's own, and reads it off the wire at the other end.
func TestAnnounce(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	done := make(chan error, 1)
	var frame []byte
	go func() {
		// The thread enters a fresh namespace and is never unlocked, so the runtime
		// discards it when this goroutine ends instead of reusing it elsewhere.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		mac := net.HardwareAddr{0x02, 0xba, 0x00, 0x00, 0x00, 0x07}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "guest0", HardwareAddr: mac}, PeerName: "host0"}
		if err := netlink.LinkAdd(veth); err != nil {
			done <- err
			return
		}
		for _, n := range []string{"guest0", "host0"} {
			l, err := netlink.LinkByName(n)
			if err == nil {
				err = netlink.LinkSetUp(l)
			}
			if err != nil {
				done <- err
				return
			}
		}
		host, _ := netlink.LinkByName("host0")
		guest, _ := netlink.LinkByName("guest0")
		rfd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(rfd)
		if err := unix.Bind(rfd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: host.Attrs().Index}); err != nil {
			done <- err
			return
		}
		tv := unix.NsecToTimeval(int64(5 * time.Second))
		_ = unix.SetsockoptTimeval(rfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		if err := announce(guest.Attrs().Index, guest.Attrs().HardwareAddr, netip.MustParseAddr("172.30.77.9")); err != nil {
			done <- err
			return
		}
		buf := make([]byte, 128)
		n, _, err := unix.Recvfrom(rfd, buf, 0)
		if err != nil {
			done <- err
			return
		}
		frame = buf[:n]
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mac := net.HardwareAddr{0x02, 0xba, 0x00, 0x00, 0x00, 0x07}
	if len(frame) < 42 {
		t.Fatalf("frame of %d bytes: %x", len(frame), frame)
	}
	eth, arp := frame[:14], frame[14:42]
	if !bytes.Equal(eth[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) || !bytes.Equal(eth[6:12], mac) {
		t.Errorf("ethernet header %x: want broadcast from %s", eth, mac)
	}
	ip := []byte{172, 30, 77, 9}
	if arp[7] != 1 || !bytes.Equal(arp[8:14], mac) || !bytes.Equal(arp[14:18], ip) || !bytes.Equal(arp[24:28], ip) {
		t.Errorf("ARP payload %x: want a request from %s with sender and target 172.30.77.9", arp, mac)
	}
}
