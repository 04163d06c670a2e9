package linuxnet

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"banger/internal/privileged"
)

// natTopology is a host with banger's bridge, an uplink to a "remote" (the internet,
// the LAN, a metadata server) and up to two guests behind real taps:
//
//	vm1    eth0 10.66.0.2/24 02:00:00:00:00:02, default via 10.66.0.1
//	vm2    eth0 10.66.0.3/24 02:00:00:00:00:03
//	         | tap relay, host end tap-vm-1 / tap-vm-2 (CreateTap), on brt
//	host   brt 10.66.0.1/24 (made by Net), up0 198.18.0.1/30, forwarding on (by Net);
//	       routes to 10.200.0.0/24 and 169.254.169.254 via the remote
//	         | veth
//	remote up1 198.18.0.2/30, 10.200.0.5/24 (a private address), 169.254.169.254/32;
//	       no route back to 10.66.0.0/24
type natTopology struct {
	host, remote testNS
	vm1, vm2     *testGuest
	n            *Net
}

var (
	e2eBridge  = netip.MustParsePrefix("10.66.0.1/24")
	e2eGuest   = netip.MustParseAddr("10.66.0.2")
	e2eGuest2  = netip.MustParseAddr("10.66.0.3")
	e2eUplink  = "198.18.0.1"
	e2eRemote  = "198.18.0.2"
	e2ePrivate = "10.200.0.5"
	e2eMeta    = "169.254.169.254"
)

const e2eDNSPort = 5353

// newNATTopology builds the topology with one guest (vm1), its tap made but no NAT.
func newNATTopology(t *testing.T) *natTopology {
	t.Helper()
	return newTopology(t, Options{}, false)
}

// newTopology builds the topology with the Net options opts; with two, vm2 too.
func newTopology(t *testing.T, opts Options, two bool) *natTopology {
	t.Helper()
	top := &natTopology{host: newNS(t), remote: newNS(t)}
	top.n = top.host.netWith(t, opts)
	ctx := context.Background()

	top.host.ip(t, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", top.remote.Name)
	top.host.ip(t, "addr", "add", e2eUplink+"/30", "dev", "up0")
	top.host.ip(t, "link", "set", "up0", "up")
	top.remote.ip(t, "addr", "add", e2eRemote+"/30", "dev", "up1")
	top.remote.ip(t, "addr", "add", e2ePrivate+"/24", "dev", "up1")
	top.remote.ip(t, "addr", "add", e2eMeta+"/32", "dev", "up1")
	top.remote.ip(t, "link", "set", "up1", "up")
	// The remote takes any source (no reverse-path filter, whatever the machine's
	// default), so a forged source address that got through would be seen.
	for _, k := range []string{"all", "default", "up1"} {
		top.remote.exec(t, "sysctl", "-qw", "net.ipv4.conf."+k+".rp_filter=0")
	}
	top.host.ip(t, "route", "add", "10.200.0.0/24", "via", e2eRemote)
	top.host.ip(t, "route", "add", e2eMeta+"/32", "via", e2eRemote)

	if _, err := top.n.EnsureBridge(ctx, "brt", e2eBridge, 1500); err != nil {
		t.Fatal(err)
	}
	if err := top.n.EnsureBaseRules(ctx, "brt", e2eBridge, e2eDNSPort); err != nil {
		t.Fatal(err)
	}
	if err := top.n.SetIPForward(true); err != nil {
		t.Fatal(err)
	}
	top.vm1 = newGuest(t, top.host, top.n, "brt", "tap-vm-1", e2eGuest, "02:00:00:00:00:02", e2eBridge.Addr())
	if two {
		top.vm2 = newGuest(t, top.host, top.n, "brt", "tap-vm-2", e2eGuest2, "02:00:00:00:00:03", e2eBridge.Addr())
	}
	return top
}

// enable turns on EnsureNAT for each guest.
func (top *natTopology) enable(t *testing.T, gs ...*testGuest) {
	t.Helper()
	for _, g := range gs {
		if err := top.n.EnsureNAT(context.Background(), scopeOf("brt"), g.nat(), true); err != nil {
			t.Fatal(err)
		}
	}
}

// peerServer listens on TCP in ns and answers each connection with the peer address
// it saw.
func peerServer(t *testing.T, ns testNS, addr string) string {
	t.Helper()
	var ln net.Listener
	if err := ns.do(t, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, c.RemoteAddr().String()+"\n")
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// seenBy connects from ns to addr and returns the peer address the server reports.
func seenBy(t *testing.T, ns testNS, addr string) (string, error) {
	t.Helper()
	var line string
	err := ns.do(t, func() error {
		// Long enough for a neighbour resolution that failed while the guest had
		// no rules to be retried (a second ARP round) on a loaded machine; the
		// blocked cases fail well inside it (refused or dropped, the same).
		c, err := net.DialTimeout("tcp", addr, 4*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(line), err
}

func TestNATEndToEnd(t *testing.T) {
	requireRoot(t)
	top := newNATTopology(t)
	ctx := context.Background()
	server := peerServer(t, top.remote, e2eRemote+":0")

	if got, err := seenBy(t, top.vm1.ns, server); err == nil {
		t.Fatalf("without NAT the vm reached the remote as %s; want a failure", got)
	}

	top.enable(t, top.vm1)
	got, err := seenBy(t, top.vm1.ns, server)
	if err != nil {
		t.Fatalf("with NAT: %v", err)
	}
	if host, _, _ := net.SplitHostPort(got); host != e2eUplink {
		t.Errorf("remote saw the vm as %s, want the host's uplink address %s (masqueraded)", got, e2eUplink)
	}

	if err := top.n.EnsureNAT(ctx, scopeOf("brt"), privileged.GuestNAT{Guest: e2eGuest, Tap: "tap-vm-1"}, false); err != nil {
		t.Fatal(err)
	}
	if got, err := seenBy(t, top.vm1.ns, server); err == nil {
		t.Errorf("after disabling NAT the vm reached the remote as %s; want a failure", got)
	}
}

// dnsEcho listens in ns on the bridge address at the DNS port (udp and tcp), echoes
// what it gets and reports who sent it.
func dnsEcho(t *testing.T, ns testNS) <-chan string {
	t.Helper()
	addr := net.JoinHostPort(e2eBridge.Addr().String(), "5353")
	var (
		pc net.PacketConn
		ln net.Listener
	)
	if err := ns.do(t, func() (err error) {
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	from := make(chan string, 16)
	go func() {
		buf := make([]byte, 512)
		for {
			n, src, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			from <- "udp " + src.(*net.UDPAddr).IP.String()
			pc.WriteTo(buf[:n], src)
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			from <- "tcp " + c.RemoteAddr().(*net.TCPAddr).IP.String()
			io.Copy(c, io.LimitReader(c, 4))
			c.Close()
		}
	}()
	return from
}

// askPort53 sends "ping" from ns to the bridge address port 53 and reads the echo.
func askPort53(t *testing.T, ns testNS, network string) error {
	t.Helper()
	return ns.do(t, func() error {
		c, err := net.DialTimeout(network, net.JoinHostPort(e2eBridge.Addr().String(), "53"), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := io.WriteString(c, "ping"); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != "ping" {
			return errors.New("echo was " + string(buf))
		}
		return nil
	})
}

func TestDNSRedirectEndToEnd(t *testing.T) {
	requireRoot(t)
	top := newNATTopology(t)
	top.enable(t, top.vm1)
	from := dnsEcho(t, top.host)

	for _, network := range []string{"udp", "tcp"} {
		if err := askPort53(t, top.vm1.ns, network); err != nil {
			t.Errorf("%s to %s:53 from the vm: %v", network, e2eBridge.Addr(), err)
			continue
		}
		select {
		case got := <-from:
			if want := network + " " + e2eGuest.String(); got != want {
				t.Errorf("DNS listener saw %q, want %q", got, want)
			}
		case <-time.After(time.Second):
			t.Errorf("DNS listener saw nothing for %s", network)
		}
	}

	// Without a DNS port the redirect is gone.
	if err := top.n.EnsureBaseRules(context.Background(), "brt", e2eBridge, 0); err != nil {
		t.Fatal(err)
	}
	if err := askPort53(t, top.vm1.ns, "udp"); err == nil {
		t.Errorf("udp to port 53 answered with the redirect removed")
	}
}
