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
	// dmPrefix is DMPrefix of the layout's disks directory: every dm name this root
	// may create or remove starts with it.
	dmPrefix string
	// logDir is the layout's log directory, where jails' console logs go.
	logDir string
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

func (v validator) ensureNAT(r *EnsureNATRequest) *Error {
	if err := checkTap("tap", r.Tap); err != nil {
		return err
	}
	return v.checkGuestIP(r.GuestIP)
}

// resolverRouting requires a domain and a DNS server when enabling. The server must be
// the bridge address or a loopback address (where bangerd's DNS server can listen), on
// a real port.
func (v validator) resolverRouting(r *ResolverRoutingRequest) *Error {
	if err := v.checkBridge("bridge", r.Bridge); err != nil {
		return err
	}
	if r.Enable || r.Domain != "" {
		if err := checkDomain(r.Domain); err != nil {
			return err
		}
	}
	if !r.Enable && !r.DNS.IsValid() {
		return nil
	}
	a := r.DNS.Addr()
	switch {
	case !r.DNS.IsValid():
		return invalidf("dns is missing: send the DNS server's address and port, e.g. %s:%d", v.prefix.Addr(), config.DefaultDNSPort)
	case !a.Is4():
		return invalidf("dns %s is not IPv4: banger's DNS server listens on the bridge address or loopback", r.DNS)
	case a != v.prefix.Addr() && !a.IsLoopback():
		return invalidf("dns %s is neither the bridge address %s nor loopback: banger's DNS server listens on one of those (dns.listen in config.toml)", r.DNS, v.prefix.Addr())
	case r.DNS.Port() == 0:
		return invalidf("dns %s has port 0: use the DNS server's port, 1-65535", r.DNS)
	}
	return nil
}

func (v validator) removeNetwork(r *RemoveNetworkRequest) *Error {
	return v.checkBridge("bridge", r.Bridge)
}

// chownTarget is a ChownToOwner path that passed validation: Rel, relative to the
// symlink-free Root, names a file with no symlink on the way.
type chownTarget struct {
	Root string
	Rel  string
}

// chownToOwner checks a path for ChownToOwner. The path must be absolute and clean, and
// must name, after resolving every symlink component by component (each step staying
// inside the root), a regular file or a socket strictly under the layout root, with a
// single link, currently owned by root or the owner. Everything else is refused: the
// root itself, directories, devices, FIFOs, paths that leave the root on the way.
// The chown itself re-checks on a file descriptor (chownBeneath), so a path swapped
// after this check still cannot lead outside the root.
func (v validator) chownToOwner(r *ChownToOwnerRequest) (chownTarget, *Error) {
	p := r.Path
	if e := checkPathSyntax(p, v.root); e != nil {
		return chownTarget{}, e
	}
	realRoot, err := filepath.EvalSymlinks(v.root)
	if err != nil {
		return chownTarget{}, &Error{Code: CodeFailed, Message: fmt.Sprintf("resolve banger root %s: %v", v.root, err)}
	}
	// The request may name the file through the configured root or through its
	// resolved form; anything else is outside.
	rel, ok := beneath(v.root, p)
	if !ok {
		if rel, ok = beneath(realRoot, p); !ok {
			return chownTarget{}, invalidf("path %q is not under the banger root %s: the helper hands over only banger's own files", p, v.root)
		}
	}
	if rel == "." {
		return chownTarget{}, invalidf("path %q is the banger root itself: the helper hands over only files under it", p)
	}
	real, ierr := resolveBeneath(realRoot, v.root, rel)
	if ierr != nil {
		return chownTarget{}, invalidf("path %q: %v", p, ierr)
	}
	if real == realRoot {
		return chownTarget{}, invalidf("path %q resolves to the banger root itself: the helper hands over only files under it", p)
	}
	fi, err := os.Lstat(real)
	if err != nil {
		return chownTarget{}, invalidf("path %q: %v", p, err)
	}
	if e := v.checkChownFile(p, factsOf(fi)); e != nil {
		return chownTarget{}, e
	}
	// Cross-check with the library's resolution; a difference means the tree changed
	// while we looked, and we would rather refuse than guess.
	if ev, err := filepath.EvalSymlinks(p); err != nil || ev != real {
		return chownTarget{}, invalidf("path %q changed while it was being checked: retry", p)
	}
	relReal, _ := beneath(realRoot, real)
	return chownTarget{Root: realRoot, Rel: relReal}, nil
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

// fileFacts is what the ChownToOwner rules look at, from lstat or from fstat.
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

// checkChownFile applies the file rules of ChownToOwner: a regular file or a socket,
// one link (a hard link to a file elsewhere must not be a way out of the root), owned
// by root (a VMM started by root made it) or already by the owner.
func (v validator) checkChownFile(p string, f fileFacts) *Error {
	if !f.mode.IsRegular() && f.mode.Type() != fs.ModeSocket {
		return invalidf("path %q is a %s: the helper hands over only regular files and sockets", p, fileKind(f.mode))
	}
	if f.nlink != 1 {
		return invalidf("path %q has %d hard links: the helper hands over only files with exactly one", p, f.nlink)
	}
	if f.uid != 0 && f.uid != v.ownerUID {
		return invalidf("path %q belongs to uid %d: the helper hands over only files owned by root or the owner (uid %d)", p, f.uid, v.ownerUID)
	}
	return nil
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
