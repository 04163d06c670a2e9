package privileged

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"banger/internal/config"
)

// MTU bounds accepted by the helper; the same range internal/config enforces, so a
// request can never ask for more than a valid configuration could.
const (
	MinMTU = 576
	MaxMTU = 9000
)

// maxSymlinkHops bounds symlink resolution in ChownToOwner paths, like the kernel's ELOOP.
const maxSymlinkHops = 40

// dnsLabelRe is one lowercase RFC 1123 label.
var dnsLabelRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// validator checks every request argument against the helper's configuration before
// anything reaches the kernel. It only reads: its filesystem accesses resolve
// ChownToOwner and LoopAttach paths, and the block checks that need the kernel's
// state (which loops are banger's, which dm devices exist) take it as arguments.
// Immutable after construction.
type validator struct {
	root     string       // layout root: absolute, clean
	bridge   string       // the configured bridge, the only one the helper touches
	prefix   netip.Prefix // the bridge address with the guests' prefix
	ownerUID int
	// disksRel and imagesRel are the layout's disks and images directories relative
	// to root (state/disks, state/images): the only places whose files the helper
	// binds to loop devices.
	disksRel, imagesRel string
	// kernelsRel is the kernels directory relative to root (state/kernels), from
	// which JailLaunch places kernels and initrds read-only.
	kernelsRel string
	// dmPrefix is DMPrefix of the layout's disks directory: every dm name this root
	// may create or remove starts with it.
	dmPrefix string
	// logDir is the layout's log directory; jails' console logs go to its vms/.
	logDir string
	// jailBase is JailBase of the layout: the only place ChownToOwner acts.
	jailBase string
	// dnsDomain and dnsListen are the configured VM domain and DNS server: the only
	// routing ResolverRouting sets up.
	dnsDomain string
	dnsListen netip.AddrPort
}

func invalidf(format string, args ...any) *Error {
	return &Error{Code: CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

func (v validator) checkBridge(field, name string) *Error {
	if name != v.bridge {
		return invalidf("%s %q is not banger's bridge: this helper manages only %q (network.bridge in config.toml)", field, name, v.bridge)
	}
	return nil
}

func checkTap(field, name string) *Error {
	if err := ValidateTapName(name); err != nil {
		return invalidf("%s: %v", field, err)
	}
	return nil
}

// checkGuestIP accepts only an IPv4 host address of the configured network that is not
// the network, gateway (bridge) or broadcast address.
func (v validator) checkGuestIP(a netip.Addr) *Error {
	net := v.prefix.Masked()
	switch {
	case !a.IsValid():
		return invalidf("guest_ip is missing: send the guest's IPv4 address inside %s", net)
	case !a.Is4():
		return invalidf("guest_ip %s is not IPv4: banger's guests have IPv4 addresses inside %s", a, net)
	case !net.Contains(a):
		return invalidf("guest_ip %s is outside banger's network %s (network.bridge_cidr)", a, net)
	case a == net.Addr():
		return invalidf("guest_ip %s is the network address of %s, not a guest's", a, net)
	case a == v.prefix.Addr():
		return invalidf("guest_ip %s is the bridge (gateway) address, not a guest's", a)
	case a == config.Broadcast(v.prefix):
		return invalidf("guest_ip %s is the broadcast address of %s, not a guest's", a, net)
	}
	return nil
}

func checkMTU(mtu int) *Error {
	if mtu < MinMTU || mtu > MaxMTU {
		return invalidf("mtu %d is out of range: use %d to %d (network.mtu in config.toml)", mtu, MinMTU, MaxMTU)
	}
	return nil
}

func checkDomain(d string) *Error {
	if d == "" || len(d) > 253 {
		return invalidf("domain %q is not a valid DNS name: use lowercase labels such as %q", d, config.DefaultDNSDomain)
	}
	for _, l := range strings.Split(d, ".") {
		if !dnsLabelRe.MatchString(l) {
			return invalidf("domain %q is not a valid DNS name: use lowercase labels such as %q", d, config.DefaultDNSDomain)
		}
	}
	return nil
}

func (v validator) ensureBridge(r *EnsureBridgeRequest) *Error {
	if err := v.checkBridge("name", r.Name); err != nil {
		return err
	}
	if !r.Address.IsValid() {
		return invalidf("address is missing: send the configured bridge address %s (network.bridge_cidr in config.toml)", v.prefix)
	}
	if r.Address != v.prefix {
		return invalidf("address %v is not the configured bridge address %s (network.bridge_cidr in config.toml)", r.Address, v.prefix)
	}
	// DNSPort needs no check: any uint16 is a port and 0 means no redirect; JSON
	// decoding already refused anything outside 0-65535.
	return checkMTU(r.MTU)
}

func (v validator) createTap(r *CreateTapRequest) *Error {
	if err := checkTap("name", r.Name); err != nil {
		return err
	}
	return v.checkBridge("bridge", r.Bridge)
}

func (v validator) deleteTap(r *DeleteTapRequest) *Error { return checkTap("name", r.Name) }

// ensureNAT checks the tap name, the guest address and, when enabling, the guest's
// MAC (removal finds the rules by address and needs none).
func (v validator) ensureNAT(r *EnsureNATRequest) *Error {
	if err := checkTap("tap", r.Tap); err != nil {
		return err
	}
	if err := v.checkGuestIP(r.GuestIP); err != nil {
		return err
	}
	if !r.Enable && r.MAC == "" {
		return nil
	}
	if r.MAC == "" {
		return invalidf("mac is missing: send the guest's MAC address; its tap may send only from it")
	}
	if _, err := ParseGuestMAC(r.MAC); err != nil {
		return invalidf("%v", err)
	}
	return nil
}

// resolverRouting accepts only the routing of the helper's own configuration:
// systemd-resolved applies it for every user of the host, so a request for any
// other domain ("com") or server (one the owner runs on 127.0.0.1:9999) would let
// the owner answer other users' lookups. Enabling needs exactly dns.domain and
// dns.listen of config.toml; disabling may name the domain (or nothing) and no
// other server.
func (v validator) resolverRouting(r *ResolverRoutingRequest) *Error {
	if err := v.checkBridge("bridge", r.Bridge); err != nil {
		return err
	}
	if r.Enable || r.Domain != "" {
		if err := checkDomain(r.Domain); err != nil {
			return err
		}
		if r.Domain != v.dnsDomain {
			return invalidf("domain %q is not banger's: this helper routes only %q (dns.domain in config.toml), whose names only banger's DNS server answers", r.Domain, v.dnsDomain)
		}
	}
	if !r.Enable && !r.DNS.IsValid() {
		return nil
	}
	switch {
	case !r.DNS.IsValid():
		return invalidf("dns is missing: send banger's DNS server, %s (dns.listen in config.toml)", v.dnsListen)
	case r.DNS != v.dnsListen:
		return invalidf("dns %s is not banger's DNS server: this helper routes only to %s (dns.listen in config.toml)", r.DNS, v.dnsListen)
	}
	return nil
}

func (v validator) removeNetwork(r *RemoveNetworkRequest) *Error {
	return v.checkBridge("bridge", r.Bridge)
}

// jailRunEntryRe is a name the helper accepts in a ChownToOwner path: an exec file
// name, a jail id, a socket's name.
var jailRunEntryRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// chownToOwner checks a ChownToOwner path by its name and returns it relative to
// the jail base. The rule, and why it is this narrow:
//
// ChownToOwner exists for one thing: the sockets a jailed Firecracker makes in its
// jail's /run (its API socket, the vsock socket), which bangerd must reach. So the
// path must be a direct entry of a jail's /run, <JailBase>/<exec
// name>/<id>/root/run/<name>, and (chownBeneath checks on a descriptor) a socket
// with one link already owned by the owner, as the jailed Firecracker, which runs as
// the owner, makes it. Nothing else is ever handed over: not a regular file (say
// config.toml or install.json, whose owner decides what root runs), not a device,
// not a directory, not anything outside the root-owned jail base. A jail's /run is
// the owner's, so what is found there is treated as the owner's doing: a symlink
// on the way is refused, and a file of root's there is not one Firecracker made.
func (v validator) chownToOwner(r *ChownToOwnerRequest) (string, *Error) {
	p := r.Path
	if e := checkPathSyntax(p, v.jailBase); e != nil {
		return "", e
	}
	rel, ok := beneath(v.jailBase, p)
	parts := strings.Split(rel, "/")
	if !ok || len(parts) != 5 || parts[2] != "root" || parts[3] != "run" {
		return "", invalidf("path %q is not a jail's socket: the helper hands over only sockets a jailed firecracker made, %s/<firecracker>/<id>/root/run/<socket>", p, v.jailBase)
	}
	for _, el := range []string{parts[0], parts[1], parts[4]} {
		if !jailRunEntryRe.MatchString(el) {
			return "", invalidf("path %q: %q is not a name the helper accepts in a jail path (letters, digits, '.', '_', '-')", p, el)
		}
	}
	if e := checkJailID(parts[1]); e != nil {
		return "", e
	}
	return rel, nil
}

// checkPathSyntax refuses a path that is empty, holds a NUL byte, is relative,
// contains '..' or is not clean. where says where the path should be, for the message.
func checkPathSyntax(p, where string) *Error {
	switch {
	case p == "":
		return invalidf("path is empty: send the absolute path of a file under %s", where)
	case strings.IndexByte(p, 0) >= 0:
		return invalidf("path %q contains a NUL byte", p)
	case !filepath.IsAbs(p):
		return invalidf("path %q is relative: send an absolute path under %s", p, where)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return invalidf("path %q contains '..': send the plain path under %s", p, where)
		}
	}
	if c := filepath.Clean(p); c != p {
		return invalidf("path %q is not clean: send %q", p, c)
	}
	return nil
}

// fileFacts is what the loop ops' file rules look at, from lstat or from fstat.
type fileFacts struct {
	mode  fs.FileMode
	nlink uint64
	uid   int // -1 when unknown
}

// factsOf extracts fileFacts from an lstat result.
func factsOf(fi fs.FileInfo) fileFacts {
	f := fileFacts{mode: fi.Mode(), uid: -1}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		f.nlink, f.uid = uint64(st.Nlink), int(st.Uid)
	}
	return f
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	}
	return "special file"
}

// beneath returns p relative to root when p is root or lexically inside it.
func beneath(root, p string) (string, bool) {
	if p == root {
		return ".", true
	}
	prefix := root
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if !strings.HasPrefix(p, prefix) {
		return "", false
	}
	return strings.TrimPrefix(p, prefix), true
}

var errEscapes = errors.New("leaves the banger root")

// resolveBeneath resolves rel under realRoot (absolute, symlink-free) one component at
// a time, following symlinks, and fails as soon as any step would leave the root: a
// '..' above it, or a symlink pointing outside (absolute targets are accepted only
// when they are inside realRoot or the configured root). It returns the resolved
// absolute path. A component that does not exist is an error.
func resolveBeneath(realRoot, cfgRoot, rel string) (string, error) {
	cur := realRoot
	todo := strings.Split(rel, "/")
	hops := 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			if cur == realRoot {
				return "", fmt.Errorf("a symlink on the way goes above the root: %w", errEscapes)
			}
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, name)
		fi, err := os.Lstat(next)
		if err != nil {
			return "", fmt.Errorf("%s: %w", next, unwrapPathErr(err))
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if len(todo) > 0 && !fi.IsDir() {
				return "", fmt.Errorf("%s is not a directory", next)
			}
			cur = next
			continue
		}
		if hops++; hops > maxSymlinkHops {
			return "", fmt.Errorf("more than %d symlinks on the way", maxSymlinkHops)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", fmt.Errorf("read symlink %s: %w", next, unwrapPathErr(err))
		}
		if filepath.IsAbs(target) {
			t := filepath.Clean(target)
			r, ok := beneath(realRoot, t)
			if !ok {
				r, ok = beneath(cfgRoot, t)
			}
			if !ok {
				return "", fmt.Errorf("symlink %s points to %s: %w", next, target, errEscapes)
			}
			cur = realRoot
			todo = append(strings.Split(r, "/"), todo...)
			continue
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return cur, nil
}

// unwrapPathErr drops the *PathError wrapper, whose path we already print.
func unwrapPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
