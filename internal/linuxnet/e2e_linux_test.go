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
)

// natTopology is three namespaces:
//
//	vm     eth0 10.66.0.2/24, default via 10.66.0.1
//	         | veth, host end tap-vm-1 enslaved to brt
//	host   brt 10.66.0.1/24 (made by Net), up0 198.18.0.1/30, forwarding on (by Net)
//	         | veth
//	remote up1 198.18.0.2/30, no route back to 10.66.0.0/24
type natTopology struct {
	host, vm, remote testNS
	n                *Net
}

var (
	e2eBridge = netip.MustParsePrefix("10.66.0.1/24")
	e2eGuest  = netip.MustParseAddr("10.66.0.2")
	e2eUplink = "198.18.0.1"
	e2eRemote = "198.18.0.2"
)

const e2eDNSPort = 5353

func newNATTopology(t *testing.T) *natTopology {
	t.Helper()
	top := &natTopology{host: newNS(t), vm: newNS(t), remote: newNS(t)}
	top.n = top.host.net(t)
	ctx := context.Background()

	top.host.ip(t, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", top.remote.Name)
	top.host.ip(t, "addr", "add", e2eUplink+"/30", "dev", "up0")
	top.host.ip(t, "link", "set", "up0", "up")
	top.remote.ip(t, "addr", "add", e2eRemote+"/30", "dev", "up1")
	top.remote.ip(t, "link", "set", "up1", "up")

	if _, err := top.n.EnsureBridge(ctx, "brt", e2eBridge, 1500); err != nil {
		t.Fatal(err)
	}
	if err := top.n.SetIPForward(true); err != nil {
		t.Fatal(err)
	}
	if err := top.n.EnsureBaseRules(ctx, "brt", e2eBridge, e2eDNSPort); err != nil {
		t.Fatal(err)
	}

	top.host.ip(t, "link", "add", "tap-vm-1", "type", "veth", "peer", "name", "eth0", "netns", top.vm.Name)
	top.host.ip(t, "link", "set", "tap-vm-1", "master", "brt", "up")
	top.vm.ip(t, "addr", "add", e2eGuest.String()+"/24", "dev", "eth0")
	top.vm.ip(t, "link", "set", "eth0", "up")
	top.vm.ip(t, "route", "add", "default", "via", e2eBridge.Addr().String())
	return top
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
		c, err := net.DialTimeout("tcp", addr, time.Second)
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

	if got, err := seenBy(t, top.vm, server); err == nil {
		t.Fatalf("without NAT the vm reached the remote as %s; want a failure (the remote has no route back)", got)
	}

	if err := top.n.EnsureNAT(ctx, "brt", e2eGuest, "tap-vm-1", true); err != nil {
		t.Fatal(err)
	}
	got, err := seenBy(t, top.vm, server)
	if err != nil {
		t.Fatalf("with NAT: %v", err)
	}
	if host, _, _ := net.SplitHostPort(got); host != e2eUplink {
		t.Errorf("remote saw the vm as %s, want the host's uplink address %s (masqueraded)", got, e2eUplink)
	}

	if err := top.n.EnsureNAT(ctx, "brt", e2eGuest, "tap-vm-1", false); err != nil {
		t.Fatal(err)
	}
	if got, err := seenBy(t, top.vm, server); err == nil {
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
	from := dnsEcho(t, top.host)

	for _, network := range []string{"udp", "tcp"} {
		if err := askPort53(t, top.vm, network); err != nil {
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
	if err := askPort53(t, top.vm, "udp"); err == nil {
		t.Errorf("udp to port 53 answered with the redirect removed")
	}
}
