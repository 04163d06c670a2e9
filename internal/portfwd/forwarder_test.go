package portfwd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestForwardCarriesBytesBothWays(t *testing.T) {
	g := startGuest(t, echo)
	f := newForwarder(t, Config{})
	addr := publish(t, f, "vm1", g)
	c := dial(t, addr)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: more than any socket buffer
	errc := make(chan error, 1)
	go func() { _, err := c.Write(big); errc <- err }()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Error("the echoed megabyte differs from what was sent")
	}
	list := f.List()
	if len(list) != 1 || list[0].Active != 1 || list[0].Guest != netip.AddrPortFrom(guestIP, g.port) || list[0].VMID != "vm1" {
		t.Errorf("List: got %v, want one forward of vm1 to %s with 1 active connection", list, netip.AddrPortFrom(guestIP, g.port))
	}
}

func TestForwardPassesHalfCloseFromClient(t *testing.T) {
	// The guest answers only after it has read EOF, like an HTTP/1.0 server or `nc -N`.
	g := startGuest(t, func(c *net.TCPConn) {
		b, err := io.ReadAll(c)
		if err == nil {
			c.Write(bytes.ToUpper(b))
		}
	})
	f := newForwarder(t, Config{})
	c := dial(t, publish(t, f, "vm1", g))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "PING" {
		t.Errorf("got %q, want %q", got, "PING")
	}
}

func TestForwardPassesHalfCloseFromGuest(t *testing.T) {
	// The guest says its piece and shuts its write side, then still listens.
	heard := make(chan string, 1)
	g := startGuest(t, func(c *net.TCPConn) {
		c.Write([]byte("banner"))
		c.CloseWrite()
		b, _ := io.ReadAll(c)
		heard <- string(b)
	})
	f := newForwarder(t, Config{})
	c := dial(t, publish(t, f, "vm1", g))
	got, err := io.ReadAll(c) // ends at the guest's half-close
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "banner" {
		t.Errorf("client read %q, want %q", got, "banner")
	}
	if _, err := c.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	select {
	case h := <-heard:
		if h != "after" {
			t.Errorf("guest read %q, want %q", h, "after")
		}
	case <-testCtx(t).Done():
		t.Fatal("the guest never got the client's bytes after its own half-close")
	}
}

func TestRemoveClosesListenersAndConnections(t *testing.T) {
	g := startGuest(t, echo)
	f := newForwarder(t, Config{})
	addr := publish(t, f, "vm1", g)
	other := publish(t, f, "vm2", startGuest(t, echo))
	c := dial(t, addr)
	roundTrip(t, c, "hello")
	guestSide := <-g.accepted

	f.Remove("vm1")
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("client read after Remove: got data, want the connection closed")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Error("client connection still open after Remove")
	}
	guestSide.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := guestSide.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("guest side after Remove: got %v, want EOF", err)
	}
	if c, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		c.Close()
		t.Errorf("dial %s after Remove: connected, want refused", addr)
	}
	// vm2's forward is untouched.
	roundTrip(t, dial(t, other), "still here")
	if l := f.List(); len(l) != 1 || l[0].VMID != "vm2" {
		t.Errorf("List after Remove(vm1): got %v, want vm2's forward only", l)
	}
	f.Remove("vm1") // again: nothing to do
	f.Remove("never")
}

func TestAddPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := uint16(busy.Addr().(*net.TCPAddr).Port)
	f := newForwarder(t, Config{})
	err = f.Add(testCtx(t), "vm1", Spec{HostIP: DefaultHostIP(), HostPort: port, GuestPort: 80}, guestIP)
	p := strconv.Itoa(int(port))
	if err == nil || !strings.Contains(err.Error(), "host port "+p) || !strings.Contains(err.Error(), "already in use") || !strings.Contains(err.Error(), "choose another host port") {
		t.Fatalf("got %v, want an error naming port %s and what to do", err, p)
	}
	if l := f.List(); len(l) != 0 {
		t.Errorf("List after a failed Add: got %v, want nothing", l)
	}
}

func TestAddPortPublishedByAnotherVM(t *testing.T) {
	g := startGuest(t, echo)
	f := newForwarder(t, Config{})
	addr := publish(t, f, "vm1", g)
	port := netip.MustParseAddrPort(addr).Port()
	for _, ip := range []string{"127.0.0.1", "0.0.0.0"} {
		err := f.Add(testCtx(t), "vm2", Spec{HostIP: netip.MustParseAddr(ip), HostPort: port, GuestPort: 80}, guestIP)
		if err == nil || !strings.Contains(err.Error(), `already published by VM "vm1"`) {
			t.Errorf("%s: got %v, want an error naming vm1", ip, err)
		}
	}
}

func TestAddAllIsAllOrNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	g := startGuest(t, echo)
	f := newForwarder(t, Config{})
	kept := publish(t, f, "vm1", g) // from an earlier call: must survive

	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freePort := uint16(free.Addr().(*net.TCPAddr).Port)
	free.Close()
	specs := []Spec{
		{HostIP: DefaultHostIP(), HostPort: freePort, GuestPort: g.port},
		{HostIP: DefaultHostIP(), HostPort: uint16(busy.Addr().(*net.TCPAddr).Port), GuestPort: g.port},
	}
	if err := f.AddAll(testCtx(t), "vm1", specs, guestIP); err == nil {
		t.Fatal("AddAll with a busy port: got nil error")
	}
	if l := f.List(); len(l) != 1 || l[0].Spec.HostAddr().String() != kept {
		t.Errorf("List: got %v, want only the earlier forward on %s", l, kept)
	}
	// The first spec's listener was closed again: its port is free.
	ln, err := net.Listen("tcp", netip.AddrPortFrom(DefaultHostIP(), freePort).String())
	if err != nil {
		t.Errorf("port %d still held after the rollback: %v", freePort, err)
	} else {
		ln.Close()
	}
	if err := f.AddAll(testCtx(t), "vm2", []Spec{{DefaultHostIP(), 0, 1}, {DefaultHostIP(), 0, 2}}, guestIP); err != nil {
		t.Errorf("AddAll of two free ports: %v", err)
	}
	if n := len(f.List()); n != 3 {
		t.Errorf("List: got %d forwards, want 3", n)
	}
}

func TestGuestRefusingResetsTheClient(t *testing.T) {
	// A guest port nothing listens on.
	ln, err := net.Listen("tcp", netip.AddrPortFrom(guestIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	// One slot: the later rounds get through only if each failed dial gave it back.
	f := newForwarder(t, Config{DialTimeout: 5 * time.Second, MaxConnsPerPort: 1})
	if err := f.Add(testCtx(t), "vm1", Spec{HostIP: DefaultHostIP(), GuestPort: port}, guestIP); err != nil {
		t.Fatal(err)
	}
	addr := f.List()[0].Spec.HostAddr().String()
	for range 3 {
		// On loopback the reset may come before connect(2) has even reported success.
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if !errors.Is(err, unix.ECONNRESET) {
			t.Errorf("read from a forward to a closed guest port: got %v, want connection reset", err)
		}
	}
	// The handler finishes just after the client sees the reset.
	waitFor(t, "no active connection", func() bool {
		l := f.List()
		return len(l) == 1 && l[0].Active == 0
	})
}

func TestConnectionsPerPortAreBounded(t *testing.T) {
	g := startGuest(t, echo)
	f := newForwarder(t, Config{MaxConnsPerPort: 2})
	addr := publish(t, f, "vm1", g)
	c1, c2 := dial(t, addr), dial(t, addr)
	roundTrip(t, c1, "one")
	roundTrip(t, c2, "two")

	// The third client connects (the kernel's backlog takes it) but is not forwarded
	// while two are: its bytes get no echo. This can only fail if the bound is broken.
	c3 := dial(t, addr)
	if _, err := c3.Write([]byte("three")); err != nil {
		t.Fatal(err)
	}
	c3.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c3.Read(make([]byte, 5)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("third connection over a limit of 2: got %d bytes, %v; want no answer yet", n, err)
	}
	if l := f.List(); l[0].Active != 2 {
		t.Errorf("Active: got %d, want 2", l[0].Active)
	}

	// One ends: the third is forwarded.
	c1.Close()
	c3.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c3, buf); err != nil || string(buf) != "three" {
		t.Fatalf("third connection after one closed: got %q, %v; want the echo", buf, err)
	}
	if p := g.peak.Load(); p > 2 {
		t.Errorf("the guest held %d connections at once, want at most 2", p)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	g := startGuest(t, echo)
	f := newForwarder(t, Config{})
	c := dial(t, publish(t, f, "vm1", g))
	roundTrip(t, c, "x")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after Close: got %v, want the connection closed", err)
	}
	if err := f.Add(testCtx(t), "vm1", Spec{HostIP: DefaultHostIP(), GuestPort: 1}, guestIP); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: got %v, want ErrClosed", err)
	}
}

func TestAddRefusesBadArguments(t *testing.T) {
	f := newForwarder(t, Config{})
	tests := []struct {
		name  string
		vm    string
		spec  Spec
		guest netip.Addr
	}{
		{"no vm", "", Spec{DefaultHostIP(), 0, 80}, guestIP},
		{"no host ip", "vm1", Spec{netip.Addr{}, 0, 80}, guestIP},
		{"no guest port", "vm1", Spec{DefaultHostIP(), 0, 0}, guestIP},
		{"no guest", "vm1", Spec{DefaultHostIP(), 0, 80}, netip.Addr{}},
		{"unspecified guest", "vm1", Spec{DefaultHostIP(), 0, 80}, netip.IPv4Unspecified()},
		{"foreign host ip", "vm1", Spec{netip.MustParseAddr("192.0.2.1"), 0, 80}, guestIP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := f.Add(testCtx(t), tt.vm, tt.spec, tt.guest); err == nil {
				t.Error("got nil error, want one")
			}
		})
	}
	if l := f.List(); len(l) != 0 {
		t.Errorf("List: got %v, want nothing", l)
	}
}

// TestPrivilegedPortMessage binds a port below 1024 without CAP_NET_BIND_SERVICE, as
// the unprivileged bangerd does: the capability is dropped from the effective set of
// one locked thread, which Go then discards with its goroutine.
func TestPrivilegedPortMessage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop CAP_NET_BIND_SERVICE (as an ordinary user the kernel refuses the port anyway)")
	}
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		t.Skipf("no ip_unprivileged_port_start: %v", err)
	}
	start, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || start < 2 {
		t.Skipf("ip_unprivileged_port_start is %q: every port is unprivileged here", b)
	}
	port := uint16(min(start-1, 1023))
	f := newForwarder(t, Config{})
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capget: %w", err)
			return
		}
		data[unix.CAP_NET_BIND_SERVICE/32].Effective &^= 1 << (unix.CAP_NET_BIND_SERVICE % 32)
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capset: %w", err)
			return
		}
		errc <- f.Add(context.Background(), "vm1", Spec{HostIP: DefaultHostIP(), HostPort: port, GuestPort: 80}, guestIP)
	}()
	err = <-errc
	if err == nil {
		t.Fatalf("Add of port %d without CAP_NET_BIND_SERVICE: got nil error", port)
	}
	for _, want := range []string{"host port " + strconv.Itoa(int(port)) + " is privileged", "CAP_NET_BIND_SERVICE", "sysctl net.ipv4.ip_unprivileged_port_start"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to contain %q", err, want)
		}
	}
}

func TestConcurrentAddRemove(t *testing.T) {
	g := startGuest(t, echo)
	f := newForwarder(t, Config{Logger: slog.New(slog.DiscardHandler)})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vm := fmt.Sprintf("vm%d", i)
			for range 5 {
				if err := f.Add(context.Background(), vm, Spec{HostIP: DefaultHostIP(), GuestPort: g.port}, guestIP); err != nil {
					t.Error(err)
					return
				}
				for _, fw := range f.List() {
					if fw.VMID == vm {
						c, err := net.Dial("tcp", fw.Spec.HostAddr().String())
						if err == nil {
							c.Close()
						}
					}
				}
				f.Remove(vm)
			}
		}()
	}
	wg.Wait()
	if l := f.List(); len(l) != 0 {
		t.Errorf("List: got %v, want nothing", l)
	}
}

// TestCheckBeforeBoot: Check finds every reason Add would fail, before a VM boots,
// and names other VMs by name.
func TestCheckBeforeBoot(t *testing.T) {
	g := startGuest(t, echo)
	f := newForwarder(t, Config{Name: func(id string) string { return map[string]string{"id1": "web"}[id] }})
	addr := publish(t, f, "id1", g)
	published := netip.MustParseAddrPort(addr).Port()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	taken := netip.MustParseAddrPort(busy.Addr().String()).Port()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freePort := netip.MustParseAddrPort(free.Addr().String()).Port()
	free.Close()
	lo := netip.MustParseAddr("127.0.0.1")
	spec := func(port uint16) Spec { return Spec{HostIP: lo, HostPort: port, GuestPort: 80} }
	for _, tt := range []struct {
		name  string
		vmID  string
		specs []Spec
		want  string // "" means no error
	}{
		{"free port", "", []Spec{spec(freePort)}, ""},
		{"another VM's port, named by name", "", []Spec{spec(published)}, `already published by VM "web"`},
		{"the VM's own port on restart", "id1", []Spec{spec(published)}, ""},
		{"a port another program holds", "", []Spec{spec(taken)}, "already in use by another program"},
		{"two specs on one port", "", []Spec{spec(freePort), spec(freePort)}, "both use host port"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := f.Check(tt.vmID, tt.specs)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// Check publishes nothing.
	if n := len(f.List()); n != 1 {
		t.Errorf("List after Check: %d forwards, want only the first VM's", n)
	}
}
