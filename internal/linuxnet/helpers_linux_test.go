package linuxnet

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"banger/internal/privileged"
)

// requireRoot skips a test that creates network namespaces when it cannot.
func requireRoot(tb testing.TB, tools ...string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces, links and nftables tables")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("needs %s on PATH (apt-get install iproute2 nftables) for test setup and read-back", tool)
		}
	}
}

// testNS is a named network namespace that the test created and removes.
type testNS struct {
	Name string
	Path string
}

// newNS creates a network namespace named banger-t-<random> with lo up, removed
// again when the test ends.
func newNS(tb testing.TB) testNS {
	tb.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	ns := testNS{Name: "banger-t-" + hex.EncodeToString(b)}
	ns.Path = "/run/netns/" + ns.Name
	run(tb, "ip", "netns", "add", ns.Name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
			tb.Errorf("remove namespace %s: %v: %s", ns.Name, err, out)
		}
	})
	ns.ip(tb, "link", "set", "lo", "up")
	return ns
}

// ip runs `ip -n NS args...`.
func (ns testNS) ip(tb testing.TB, args ...string) string {
	tb.Helper()
	return run(tb, "ip", append([]string{"-n", ns.Name}, args...)...)
}

// veth adds a veth pair NAME / NAME-p: a link that is neither a tap nor a bridge
// (the dummy driver is not available on every test kernel).
func (ns testNS) veth(tb testing.TB, name string) {
	tb.Helper()
	ns.ip(tb, "link", "add", name, "type", "veth", "peer", "name", name+"-p")
}

// exec runs a command inside the namespace.
func (ns testNS) exec(tb testing.TB, args ...string) string {
	tb.Helper()
	return run(tb, "ip", append([]string{"netns", "exec", ns.Name}, args...)...)
}

// nft runs nft inside the namespace with script on stdin (`nft -f -`).
func (ns testNS) nftScript(tb testing.TB, script string) {
	tb.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("nft -f - in %s: %v: %s\nscript:\n%s", ns.Name, err, out, script)
	}
}

// listTable returns `nft list table ip NAME` in the namespace, and whether it exists.
func (ns testNS) listTable(tb testing.TB, name string) (string, bool) {
	tb.Helper()
	return ns.listTableOf(tb, "ip", name)
}

// listTableOf returns `nft list table FAMILY NAME` in the namespace, and whether it exists.
func (ns testNS) listTableOf(tb testing.TB, family, name string) (string, bool) {
	tb.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns.Name, "nft", "list", "table", family, name).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such file or directory") {
			return "", false
		}
		tb.Fatalf("nft list table %s %s in %s: %v: %s", family, name, ns.Name, err, out)
	}
	return string(out), true
}

// handle opens an independent netlink handle on the namespace, to read back what the
// code under test did through a connection other than its own.
func (ns testNS) handle(tb testing.TB) *netlink.Handle {
	tb.Helper()
	h, err := netns.GetFromPath(ns.Path)
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nh.Close)
	return nh
}

// testOwner is the uid the tests' taps belong to (no such user needs to exist).
const testOwner = 4242

// scopeOf is the TapScope of the tests' owner on bridge.
func scopeOf(bridge string) privileged.TapScope {
	return privileged.TapScope{Bridge: bridge, OwnerUID: testOwner}
}

// testRoot is the banger root the namespace's default Net serves.
func (ns testNS) root() string { return "/test/" + ns.Name }

// net opens a Net on the namespace for the root ns.root(), closed when the test ends.
func (ns testNS) net(tb testing.TB) *Net {
	tb.Helper()
	return ns.netWith(tb, Options{})
}

// netWith opens a Net on the namespace with opts (Root defaults to ns.root()).
func (ns testNS) netWith(tb testing.TB, opts Options) *Net {
	tb.Helper()
	opts.NetNS = ns.Path
	if opts.Root == "" {
		opts.Root = ns.root()
	}
	n, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := n.Close(); err != nil {
			tb.Error(err)
		}
	})
	return n
}

// do runs f on a locked OS thread inside the namespace (sockets it creates stay
// there) and restores the thread.
func (ns testNS) do(tb testing.TB, f func() error) error {
	tb.Helper()
	target, err := netns.GetFromPath(ns.Path)
	if err != nil {
		tb.Fatal(err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("restore namespace (thread discarded): %w", err)
			return // thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// mustLink reads a link back through h.
func mustLink(tb testing.TB, h *netlink.Handle, name string) netlink.Link {
	tb.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		tb.Fatalf("link %q: %v", name, err)
	}
	return l
}

// assertNoLink fails if a link named name exists.
func assertNoLink(tb testing.TB, h *netlink.Handle, name string) {
	tb.Helper()
	l, err := h.LinkByName(name)
	if err == nil {
		tb.Fatalf("link %q exists (a %s), want none", name, l.Type())
	}
	if !isNotFound(err) {
		tb.Fatalf("link %q: %v", name, err)
	}
}

// hostIPForward reads the test process's own ip_forward, to prove a Net on another
// namespace never touched it.
func hostIPForward(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
