package linuxnet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/config"
)

// The guest policy, proven with real traffic from "guests" behind real taps (see
// testGuest): each attack is paired with the legitimate traffic it must not break,
// and every attack is shown to fail where, without the policy, it would succeed (the
// control frames prove the path itself works).

// refused connects over TCP from ns to addr and fails the test if it gets through.
func refused(t *testing.T, ns testNS, addr, what string) {
	t.Helper()
	if got, err := seenBy(t, ns, addr); err == nil {
		t.Errorf("%s: connected to %s (seen as %s); want it blocked", what, addr, got)
	}
}

// reached connects over TCP from ns to addr and fails the test unless it gets through.
func reached(t *testing.T, ns testNS, addr, what string) string {
	t.Helper()
	got, err := seenBy(t, ns, addr)
	if err != nil {
		t.Errorf("%s: %s: %v; want it reached", what, addr, err)
	}
	return got
}

func TestAttackGuestPolicy(t *testing.T) {
	requireRoot(t, "nft")
	top := newTopology(t, Options{}, true)
	top.enable(t, top.vm1, top.vm2)
	vm1, vm2 := top.vm1, top.vm2
	gw := e2eBridge.Addr()
	h := top.host.handle(t)
	gwMAC := mustLink(t, h, "brt").Attrs().HardwareAddr

	remote := peerServer(t, top.remote, e2eRemote+":0")
	hostBridgeSvc := peerServer(t, top.host, gw.String()+":2222") // e.g. an sshd on all addresses
	hostUplinkSvc := peerServer(t, top.host, e2eUplink+":2223")   // the host's other address
	metadata := peerServer(t, top.remote, e2eMeta+":80")          // a cloud metadata service
	vm2Svc := peerServer(t, vm2.ns, e2eGuest2.String()+":5432")   // a database VM
	dns := dnsEcho(t, top.host)

	t.Run("normal traffic", func(t *testing.T) {
		got := reached(t, vm1.ns, remote, "egress through NAT")
		if host, _, _ := net.SplitHostPort(got); got != "" && host != e2eUplink {
			t.Errorf("remote saw the guest as %s, want the uplink %s (masqueraded)", got, e2eUplink)
		}
		for _, network := range []string{"udp", "tcp"} {
			if err := askPort53(t, vm1.ns, network); err != nil {
				t.Errorf("DNS over %s: %v", network, err)
			}
		}
		if !expect(dns, "udp "+e2eGuest.String(), time.Second) {
			t.Errorf("DNS listener did not see the guest")
		}
		got = reached(t, vm1.ns, vm2Svc, "VM to VM (allowed by default)")
		if host, _, _ := net.SplitHostPort(got); got != "" && host != e2eGuest.String() {
			t.Errorf("vm2 saw vm1 as %s, want %s (no NAT between guests)", got, e2eGuest)
		}
		// The host reaches the guest (bangerd's SSH, the published ports' proxy) and
		// gets the replies.
		reached(t, top.host, vm2Svc, "host to guest")
		if err := ping(t, vm1.ns, gw); err != nil {
			t.Errorf("ping of the gateway: %v", err)
		}
	})

	t.Run("host services", func(t *testing.T) {
		refused(t, vm1.ns, hostBridgeSvc, "a host service on the bridge address")
		refused(t, vm1.ns, hostUplinkSvc, "a host service on another host address")
	})

	t.Run("link-local metadata", func(t *testing.T) {
		refused(t, vm1.ns, metadata, "169.254.169.254")
	})

	t.Run("spoofed source address", func(t *testing.T) {
		sink := udpSink(t, top.remote, e2eRemote+":9999")
		send := func(srcMAC net.HardwareAddr, src netip.Addr, tag string) {
			vm1.send(t, udpFrame(srcMAC, gwMAC, src, netip.MustParseAddr(e2eRemote), 4000, 9999, []byte(tag)))
		}
		send(vm1.mac, e2eGuest, "control")
		if !expect(sink, "control", 2*time.Second) {
			t.Fatalf("the guest's own forged-by-hand frame did not arrive: the test cannot see drops")
		}
		send(vm1.mac, netip.MustParseAddr("10.66.0.99"), "spoofed-ip")
		send(vm1.mac, e2eGuest2, "spoofed-other-vm")
		send(vm1.mac, gw, "spoofed-gateway")
		send(net.HardwareAddr{2, 0, 0, 0, 0, 0x99}, e2eGuest, "spoofed-mac")
		send(vm2.mac, e2eGuest2, "spoofed-vm2-mac-and-ip")
		send(vm1.mac, e2eGuest, "control2") // marker: everything before it was handled
		others, ok := collectUntil(sink, "control2", 2*time.Second, 300*time.Millisecond)
		if !ok {
			t.Fatalf("the second control frame did not arrive")
		}
		for _, got := range others {
			t.Errorf("forged frame %q reached the remote; want it dropped at the tap", got)
		}
	})

	t.Run("gratuitous ARP", func(t *testing.T) {
		sniff := arpSniffer(t, vm2.ns, "eth0")
		// The host learns vm2's MAC (a connection from the host to vm2).
		reached(t, top.host, vm2Svc, "host to vm2")
		announce := func(sha net.HardwareAddr, spa netip.Addr) {
			vm1.send(t, arpFrame(vm1.mac, broadcastMAC, 2, sha, spa, broadcastMAC, spa))
			vm1.send(t, arpFrame(vm1.mac, broadcastMAC, 1, sha, spa, net.HardwareAddr{0, 0, 0, 0, 0, 0}, spa))
		}
		announce(vm1.mac, e2eGuest)
		if !expect(sniff, e2eGuest.String()+" is-at "+vm1.mac.String(), 2*time.Second) {
			t.Fatalf("vm1's honest ARP announcement did not reach vm2: the test cannot see drops")
		}
		announce(vm1.mac, gw)        // "I am the gateway"
		announce(vm1.mac, e2eGuest2) // "I am vm2"
		announce(gwMAC, gw)          // the gateway's own MAC as sender, from vm1's tap
		announce(vm1.mac, e2eGuest)  // marker
		marker := e2eGuest.String() + " is-at " + vm1.mac.String()
		others, ok := collectUntil(sniff, marker, 2*time.Second, 300*time.Millisecond)
		if !ok {
			t.Fatalf("the marker announcement did not arrive")
		}
		for _, got := range others {
			t.Errorf("forged ARP %q reached vm2; want it dropped at the tap", got)
		}
		// The host still sends vm2's traffic to vm2.
		neigh := top.host.ip(t, "neigh", "show", e2eGuest2.String(), "dev", "brt")
		if !strings.Contains(neigh, vm2.mac.String()) {
			t.Errorf("host's neighbour entry for vm2 = %q, want vm2's MAC %s", neigh, vm2.mac)
		}
		reached(t, top.host, vm2Svc, "host to vm2 after the ARP attack")
	})

	t.Run("isolate_vms", func(t *testing.T) {
		iso := top.host.netWith(t, Options{Policy: Policy{IsolateVMs: true}})
		if err := iso.EnsureBaseRules(context.Background(), "brt", e2eBridge, e2eDNSPort); err != nil {
			t.Fatal(err)
		}
		refused(t, vm1.ns, vm2Svc, "VM to VM with isolate_vms")
		reached(t, vm1.ns, remote, "egress with isolate_vms")
		if err := askPort53(t, vm1.ns, "udp"); err != nil {
			t.Errorf("DNS with isolate_vms: %v", err)
		}
		// Back to the default: guests talk again.
		if err := top.n.EnsureBaseRules(context.Background(), "brt", e2eBridge, e2eDNSPort); err != nil {
			t.Fatal(err)
		}
		reached(t, vm1.ns, vm2Svc, "VM to VM after isolation is lifted")
	})

	t.Run("egress_deny", func(t *testing.T) {
		private := peerServer(t, top.remote, e2ePrivate+":0")
		reached(t, vm1.ns, private, "a private address without egress_deny")
		cfg := config.Default()
		cfg.Network.EgressDeny = []string{"private"}
		deny, err := cfg.EgressDenyPrefixes()
		if err != nil {
			t.Fatal(err)
		}
		strict := top.host.netWith(t, Options{Policy: Policy{EgressDeny: deny}})
		if err := strict.EnsureBaseRules(context.Background(), "brt", e2eBridge, e2eDNSPort); err != nil {
			t.Fatal(err)
		}
		refused(t, vm1.ns, private, "a private address with egress_deny = [\"private\"]")
		reached(t, vm1.ns, remote, "a public address with egress_deny")
		reached(t, vm1.ns, vm2Svc, "VM to VM (the guests' own network) with egress_deny")
		if err := askPort53(t, vm1.ns, "tcp"); err != nil {
			t.Errorf("DNS with egress_deny: %v", err)
		}
		if err := top.n.EnsureBaseRules(context.Background(), "brt", e2eBridge, e2eDNSPort); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("idle tap", func(t *testing.T) {
		// A tap with no guest rules (an idle pool tap the owner opens) gets nothing
		// onto the bridge, not even with a "valid" address.
		idle := newGuest(t, top.host, top.n, "brt", "tap-pool-0", netip.MustParseAddr("10.66.0.4"), "02:00:00:00:00:04", gw)
		refused(t, idle.ns, remote, "egress from a tap without guest rules")
		refused(t, idle.ns, vm2Svc, "VM to VM from a tap without guest rules")
		if err := askPort53(t, idle.ns, "udp"); err == nil {
			t.Errorf("DNS from a tap without guest rules answered")
		}
	})
}

// ping sends one ICMP echo from ns to dst over a raw socket and waits a second for
// the reply.
func ping(t *testing.T, ns testNS, dst netip.Addr) error {
	t.Helper()
	return ns.do(t, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
			return err
		}
		msg := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'b', 'g'}
		var sum uint32
		for i := 0; i < len(msg); i += 2 {
			sum += uint32(msg[i])<<8 | uint32(msg[i+1])
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		msg[2], msg[3] = byte(^sum>>8), byte(^sum)
		if err := unix.Sendto(fd, msg, 0, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return fmt.Errorf("no echo reply from %s: %w", dst, err)
			}
			sa, ok := from.(*unix.SockaddrInet4)
			if !ok || netip.AddrFrom4(sa.Addr) != dst || n < 20 {
				continue
			}
			ihl := int(buf[0]&0x0f) * 4
			if n >= ihl+8 && buf[ihl] == 0 && buf[ihl+4] == 0x12 && buf[ihl+5] == 0x34 {
				return nil
			}
		}
		return fmt.Errorf("no echo reply from %s", dst)
	})
}
