package linuxnet

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"banger/internal/privileged"
)

var (
	_ privileged.NetOps      = (*Net)(nil)
	_ privileged.ResolverOps = (*Net)(nil)
)

// Default locations of the systemd-resolved pieces Route looks for.
const (
	DefaultResolvedDir = "/run/systemd/resolve"
	DefaultResolvectl  = "resolvectl"
)

// Options configures a Net. The zero value works in the process's own network
// namespace with the real systemd-resolved paths.
type Options struct {
	// NetNS is the path of a network namespace file (/run/netns/NAME,
	// /proc/PID/ns/net) to work in; empty means the calling process's own namespace.
	// Tests use it to work in a namespace they created without moving the process.
	NetNS string
	// ResolvedDir is the directory whose presence says systemd-resolved is running;
	// empty means DefaultResolvedDir.
	ResolvedDir string
	// Resolvectl is the resolvectl binary, a path or a name looked up on PATH at each
	// call; empty means DefaultResolvectl.
	Resolvectl string
	// Root is the banger root this helper serves (required). It names the nftables
	// tables (privileged.NFTTableName) and the taps' interface group
	// (privileged.TapGroup), so two roots on one host never touch each other's.
	Root string
	// Policy is the guest network policy from the helper's own configuration.
	Policy Policy
}

// Policy is what the helper's root-owned configuration says about guest traffic.
// It never comes from the owner's requests.
type Policy struct {
	// IsolateVMs drops traffic between guests (network.isolate_vms).
	IsolateVMs bool
	// EgressDeny are IPv4 prefixes guests may not reach through NAT
	// (network.egress_deny, "private" expanded).
	EgressDeny []netip.Prefix
	// DNSPort, when not 0, is the only DNS port EnsureBaseRules accepts (the port of
	// dns.listen): the one port on the host guests may reach.
	DNSPort uint16
}

// Net does the helper's kernel work in one network namespace. Its methods are safe
// for concurrent use. Close releases it; a closed Net must not be used.
type Net struct {
	// ns is the target namespace, or netns.None() for the process's own. Owned: closed
	// by Close. Immutable.
	ns netns.NsHandle
	// h is a netlink handle whose sockets live in ns. Immutable; never nil until Close.
	h *netlink.Handle
	// raw is a NETLINK_ROUTE socket in ns for the one dump netlink's Link types cannot
	// express (whether a tap has an owner at all; see ListTaps). Immutable.
	raw *nl.SocketHandle

	resolvedDir string // immutable
	resolvectl  string // immutable
	table       string // this root's nftables table name; immutable
	group       uint32 // this root's tap interface group; immutable
	policy      Policy // immutable

	// mu serializes every operation, so that check-then-act sequences (CreateTap's
	// name check, EnsureNAT's list-then-batch, EnsureBridge's address diff) are never
	// interleaved with one another. The helper's operations are short.
	mu sync.Mutex
}

// New opens a Net on the namespace in opts (the process's own when opts.NetNS is
// empty). It fails when the namespace cannot be opened or netlink is unavailable.
func New(opts Options) (n *Net, err error) {
	if opts.Root == "" {
		return nil, errors.New("linuxnet: Options.Root is required: it names this root's nftables tables and tap group")
	}
	for _, p := range opts.Policy.EgressDeny {
		if !p.IsValid() || !p.Addr().Is4() {
			return nil, fmt.Errorf("linuxnet: egress deny prefix %s is not an IPv4 prefix", p)
		}
	}
	n = &Net{
		ns:          netns.None(),
		resolvedDir: opts.ResolvedDir,
		resolvectl:  opts.Resolvectl,
		table:       privileged.NFTTableName(opts.Root),
		group:       privileged.TapGroup(opts.Root),
		policy:      opts.Policy,
	}
	if n.resolvedDir == "" {
		n.resolvedDir = DefaultResolvedDir
	}
	if n.resolvectl == "" {
		n.resolvectl = DefaultResolvectl
	}
	defer func() {
		if err != nil {
			n.Close()
			n = nil
		}
	}()
	if opts.NetNS != "" {
		if n.ns, err = netns.GetFromPath(opts.NetNS); err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", opts.NetNS, err)
		}
	}
	if n.h, err = netlink.NewHandleAt(n.ns, unix.NETLINK_ROUTE); err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	s, err := nl.GetNetlinkSocketAt(n.ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	n.raw = &nl.SocketHandle{Socket: s}
	return n, nil
}

// TableName is the name of this root's nftables tables (ip and bridge family).
func (n *Net) TableName() string { return n.table }

// TapGroup is the interface group of this root's taps.
func (n *Net) TapGroup() uint32 { return n.group }

// Close releases the netlink sockets and the namespace handle. It is safe to call
// more than once.
func (n *Net) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.h != nil {
		n.h.Close()
		n.h = nil
	}
	if n.raw != nil {
		n.raw.Close()
		n.raw = nil
	}
	if n.ns.IsOpen() {
		if err := n.ns.Close(); err != nil {
			return fmt.Errorf("close network namespace handle: %w", err)
		}
	}
	return nil
}

// nft returns a fresh nftables connection to the namespace. A fresh one per operation
// keeps each operation's batch to itself and means no stale acknowledgement from a
// failed batch can be read by the next one.
func (n *Net) nft() (*nftables.Conn, error) {
	if n.ns.IsOpen() {
		return nftables.New(nftables.WithNetNSFd(int(n.ns)))
	}
	return nftables.New()
}

// inNetNS runs f on a locked OS thread inside the target namespace, for the few
// things the kernel binds to the namespace of the calling thread rather than to a
// socket: opening /dev/net/tun (a tap is created in the opener's namespace) and
// /proc/sys/net (which shows the opener's namespace). With no target namespace f
// simply runs. f runs on another goroutine and must not touch goroutine-local state.
func (n *Net) inNetNS(f func() error) error {
	if !n.ns.IsOpen() {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("read this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			// The thread stays locked: when this goroutine returns, the runtime ends
			// the thread instead of reusing it in the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("return to the original network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// isNotFound reports whether err says a link does not exist.
func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// linkByName returns the link, or nil with no error when there is none.
func (n *Net) linkByName(name string) (netlink.Link, error) {
	l, err := n.h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up link %q: %w", name, err)
	}
	return l, nil
}
