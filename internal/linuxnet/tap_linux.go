package linuxnet

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"banger/internal/privileged"
)

// tapFlags are the flags a tap is created with: a tap (layer 2), single queue, no
// packet-information header, virtio-net header on, as Firecracker opens its taps
// (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR). Only the mode and the single queue are fixed at
// creation: when a VMM attaches to the persistent tap, the kernel replaces NO_PI and
// VNET_HDR with the VMM's own flags, so QEMU (which asks for what it supports) works
// as well. IFF_TUN_EXCL makes the creation fail, rather than attach, if the name is
// taken meanwhile.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_TUN_EXCL

// CreateTap makes a persistent tap, owned by uid and group gid so that a VMM running
// as them can open it without privileges, with the given MTU (when mtu > 0), attached
// to bridge and up. When both are set the kernel wants both: the opener's euid must be
// uid and gid must be among its groups. A negative uid or gid leaves that one unset.
//
// It refuses a name outside banger's tap patterns, a missing bridge and a name that
// is already taken. A failure leaves no interface behind.
func (n *Net) CreateTap(ctx context.Context, name, bridge string, mtu, uid, gid int) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := privileged.ValidateTapName(name); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()

	br, err := n.linkByName(bridge)
	if err != nil {
		return fmt.Errorf("tap %q: %w", name, err)
	}
	if br == nil {
		return fmt.Errorf("tap %q: bridge %q does not exist: set up banger's network first (the helper's EnsureBridge)", name, bridge)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("tap %q: %q is a %s, not a bridge", name, bridge, br.Type())
	}
	old, err := n.linkByName(name)
	if err != nil {
		return fmt.Errorf("tap %q: %w", name, err)
	}
	if old != nil {
		return fmt.Errorf("tap %q: a %s link with that name already exists: delete it first", name, old.Type())
	}

	if err := n.makeTap(name, uid, gid); err != nil {
		return fmt.Errorf("tap %q: %w", name, err)
	}
	defer func() {
		if err != nil {
			if derr := n.h.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}}); derr != nil && !isNotFound(derr) {
				err = errors.Join(err, fmt.Errorf("tap %q: delete the half-made tap: %w", name, derr))
			}
		}
	}()
	l, err := n.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("tap %q: read back: %w", name, err)
	}
	if mtu > 0 && l.Attrs().MTU != mtu {
		if err := n.h.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("tap %q: set MTU %d: %w", name, mtu, err)
		}
	}
	// The group marks the tap as this root's (see checkTapLocked) and puts it under
	// the bridge table's guest policy: until EnsureNAT adds the guest's rules, nothing
	// it sends gets onto the bridge.
	if err := n.h.LinkSetGroup(l, int(n.group)); err != nil {
		return fmt.Errorf("tap %q: set interface group: %w", name, err)
	}
	if err := n.h.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("tap %q: attach to bridge %q: %w", name, bridge, err)
	}
	if err := n.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("tap %q: bring up: %w", name, err)
	}
	return nil
}

// makeTap creates the persistent tap through /dev/net/tun. Until TUNSETPERSIST
// succeeds the tap lives only as long as the file descriptor, so a failure before it
// leaves nothing behind.
func (n *Net) makeTap(name string, uid, gid int) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("interface name: %w", err)
	}
	ifr.SetUint16(tapFlags)
	fd := -1
	// The tap is created in the namespace of whoever opened /dev/net/tun.
	err = n.inNetNS(func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("open /dev/net/tun (is the tun module loaded?): %w", err)
	}
	defer unix.Close(fd)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("create (TUNSETIFF): %w", err)
	}
	if uid >= 0 {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, uid); err != nil {
			return fmt.Errorf("set owner uid %d: %w", uid, err)
		}
	}
	if gid >= 0 {
		if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, gid); err != nil {
			return fmt.Errorf("set group gid %d: %w", gid, err)
		}
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("make persistent: %w", err)
	}
	return nil
}

// DeleteTap deletes one of scope's taps (see checkTapLocked). A tap that does not
// exist is not an error; any other device of that name is refused and left alone.
func (n *Net) DeleteTap(ctx context.Context, scope privileged.TapScope, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := privileged.ValidateTapName(name); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	l, err := n.checkTapLocked(scope, name)
	if err != nil || l == nil {
		return err
	}
	return n.deleteLinkLocked(l)
}

// deleteLinkLocked deletes a checked tap by index, so a tap renamed since the check
// is never confused with another of the same name.
func (n *Net) deleteLinkLocked(l *rawLink) error {
	if err := n.h.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Index: int(l.index), Name: l.name}}); err != nil && !isNotFound(err) {
		return fmt.Errorf("tap %q: delete: %w", l.name, err)
	}
	return nil
}

// checkTapLocked returns the link named name when it is scope's tap, nil when no link
// has that name, and an error saying why when it is something else. scope's tap is:
//
//   - a TAP device (tun driver in IFF_TAP mode: not a veth, bridge or TUN device),
//   - owned by scope.OwnerUID (the kernel's IFLA_TUN_OWNER; a tap with no owner is
//     root's and is refused),
//   - not marked for another banger root (its interface group is this root's or the
//     default 0), and
//   - attached to scope.Bridge, or attached to nothing and marked as this root's
//     (an idle tap whose bridge was recreated).
//
// A name alone says nothing about whose device it is: another user's tap-pool-7, or
// another banger root's, must survive every call.
func (n *Net) checkTapLocked(scope privileged.TapScope, name string) (*rawLink, error) {
	links, err := n.dumpLinks()
	if err != nil {
		return nil, err
	}
	var l *rawLink
	var bridge int32 = -1
	names := make(map[int32]string, len(links))
	for i := range links {
		names[links[i].index] = links[i].name
		switch links[i].name {
		case name:
			l = &links[i]
		case scope.Bridge:
			if links[i].kind == "bridge" {
				bridge = links[i].index
			}
		}
	}
	if l == nil {
		return nil, nil
	}
	if err := n.tapVerdict(scope, *l, bridge, names); err != nil {
		return nil, fmt.Errorf("tap %q: %w: banger touches only its own taps", name, err)
	}
	return l, nil
}

// tapVerdict applies checkTapLocked's rules to one link; bridge is the index of
// scope's bridge (-1 when it does not exist) and names maps indexes to names.
func (n *Net) tapVerdict(scope privileged.TapScope, l rawLink, bridge int32, names map[int32]string) error {
	switch {
	case !l.tun:
		kind := l.kind
		if kind == "" {
			kind = "device"
		}
		return fmt.Errorf("it is a %s, not a tap", kind)
	case l.tunType != unix.IFF_TAP:
		return fmt.Errorf("it is a TUN (layer 3) device, not a TAP")
	case l.owner < 0:
		return fmt.Errorf("it has no owner (it is root's), not the owner's (uid %d)", scope.OwnerUID)
	case l.owner != scope.OwnerUID:
		return fmt.Errorf("it belongs to uid %d, not to the owner (uid %d)", l.owner, scope.OwnerUID)
	case l.group != n.group && l.group != 0:
		return fmt.Errorf("it is marked for another banger root (interface group %#x, this root's is %#x)", l.group, n.group)
	case l.master != 0 && l.master == bridge:
		return nil
	case l.master != 0:
		return fmt.Errorf("it is attached to %q, not to banger's bridge %q", names[l.master], scope.Bridge)
	case l.group == n.group:
		return nil // an idle tap of this root, detached when its bridge went away
	}
	return fmt.Errorf("it is attached to no bridge and was not made by this root's helper")
}

// ListTaps returns the tun/tap links whose names match banger's patterns, sorted by
// name, with their bridge, owner uid (-1 when unset) and whether they are up. Those
// that are not scope's taps (see checkTapLocked) are marked Foreign: bangerd must
// neither adopt nor delete them, only avoid their names.
func (n *Net) ListTaps(ctx context.Context, scope privileged.TapScope) ([]privileged.TapInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.listTapsLocked(scope)
}

// rawLink is what ListTaps needs of one link.
type rawLink struct {
	index   int32
	name    string
	kind    string // IFLA_INFO_KIND: tun, bridge, veth; "" for a plain device
	master  int32
	group   uint32
	up      bool
	tun     bool
	tunType int // unix.IFF_TUN or unix.IFF_TAP, for tun links
	owner   int // -1 when the kernel reports no IFLA_TUN_OWNER
}

// listTapsLocked reads the taps from one raw RTM_GETLINK dump. netlink's Tuntap type
// cannot say whether a tap has an owner (an unset owner and uid 0 both read as 0):
// the kernel reports IFLA_TUN_OWNER only when one is set, so the attribute's presence
// is the answer. (sysfs's owner file would say so too, but /sys shows the namespace
// sysfs was mounted in, not the one this Net works in.)
func (n *Net) listTapsLocked(scope privileged.TapScope) ([]privileged.TapInfo, error) {
	links, err := n.dumpLinks()
	if err != nil {
		return nil, err
	}
	names := make(map[int32]string, len(links))
	var bridge int32 = -1
	for _, l := range links {
		names[l.index] = l.name
		if l.name == scope.Bridge && l.kind == "bridge" {
			bridge = l.index
		}
	}
	var taps []privileged.TapInfo
	for _, l := range links {
		if !l.tun || privileged.ValidateTapName(l.name) != nil {
			continue
		}
		taps = append(taps, privileged.TapInfo{Name: l.name, Master: names[l.master], OwnerUID: l.owner, Up: l.up,
			Foreign: n.tapVerdict(scope, l, bridge, names) != nil})
	}
	sort.Slice(taps, func(i, j int) bool { return taps[i].Name < taps[j].Name })
	return taps, nil
}

// dumpLinks dumps every link of the namespace, retrying a dump that a concurrent
// change interrupted.
func (n *Net) dumpLinks() ([]rawLink, error) {
	var err error
	for range 5 {
		var (
			links []rawLink
			perr  error
		)
		req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: n.raw}
		req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
		err = req.ExecuteIter(unix.NETLINK_ROUTE, unix.RTM_NEWLINK, func(msg []byte) bool {
			l, err := parseLink(msg)
			if err != nil {
				perr = err
				return false
			}
			links = append(links, l)
			return true
		})
		if err == nil && perr != nil {
			return nil, fmt.Errorf("list links: decode: %w", perr)
		}
		if err == nil {
			return links, nil
		}
		if !errors.Is(err, nl.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list links: %w", err)
}

// parseLink decodes one RTM_NEWLINK message.
func parseLink(msg []byte) (rawLink, error) {
	if len(msg) < unix.SizeofIfInfomsg {
		return rawLink{}, fmt.Errorf("short link message")
	}
	ifi := nl.DeserializeIfInfomsg(msg)
	l := rawLink{index: ifi.Index, up: ifi.Flags&unix.IFF_UP != 0, owner: -1}
	attrs, err := nl.ParseRouteAttr(msg[unix.SizeofIfInfomsg:])
	if err != nil {
		return rawLink{}, err
	}
	for _, a := range attrs {
		switch a.Attr.Type & nlaTypeMask {
		case unix.IFLA_IFNAME:
			l.name = strings.TrimRight(string(a.Value), "\x00")
		case unix.IFLA_MASTER:
			if len(a.Value) >= 4 {
				l.master = int32(nl.NativeEndian().Uint32(a.Value))
			}
		case unix.IFLA_GROUP:
			if len(a.Value) >= 4 {
				l.group = nl.NativeEndian().Uint32(a.Value)
			}
		case unix.IFLA_LINKINFO:
			l.kind, l.tunType, l.owner = parseLinkInfo(a.Value)
			l.tun = l.kind == "tun"
		}
	}
	return l, nil
}

// parseLinkInfo reads IFLA_LINKINFO: the link's kind and, for a tun link, its mode
// (IFF_TUN or IFF_TAP) and owner (-1 when none is set).
func parseLinkInfo(b []byte) (kind string, tunType, owner int) {
	owner = -1
	info, err := nl.ParseRouteAttr(b)
	if err != nil {
		return "", 0, -1
	}
	var data []byte
	for _, a := range info {
		switch a.Attr.Type & nlaTypeMask {
		case unix.IFLA_INFO_KIND:
			kind = strings.TrimRight(string(a.Value), "\x00")
		case unix.IFLA_INFO_DATA:
			data = a.Value
		}
	}
	if kind != "tun" || data == nil {
		return kind, 0, -1
	}
	attrs, err := nl.ParseRouteAttr(data)
	if err != nil {
		return kind, 0, -1
	}
	for _, a := range attrs {
		switch a.Attr.Type & nlaTypeMask {
		case nl.IFLA_TUN_OWNER:
			if len(a.Value) >= 4 {
				owner = int(nl.NativeEndian().Uint32(a.Value))
			}
		case nl.IFLA_TUN_TYPE:
			if len(a.Value) >= 1 {
				tunType = int(a.Value[0])
			}
		}
	}
	return kind, tunType, owner
}

// nlaTypeMask strips the nested and byte-order flags from a netlink attribute type.
const nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
