package privileged

// Fuzz targets for every op's decode+validate path, the protocol decoder and the
// client's answer decoding. Each op's target builds a request from fuzzed fields,
// runs it through the server's own handler table (strict decoding, the op's
// validator, then the op against recording fakes, never the kernel) and checks
// invariants with an oracle written independently of the validators:
//
//   - nothing panics;
//   - a refusal (invalid, forbidden, unknown op) reached no mutating fake;
//   - what was accepted is within the rules: names are banger's, paths are clean,
//     absolute and beneath the root in the op's own directories (checked on what the
//     helper actually opened), guest addresses are host addresses of the bridge's
//     network, tables use only banger's loops and targets.
//
// The seed corpus is checked in under testdata/fuzz/<FuzzName>/ (regenerate it with
// BANGER_WRITE_FUZZ_CORPUS=1 go test -run TestFuzzCorpus ./internal/privileged/);
// scripts/fuzz.sh runs every target for a bounded time.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/blockdev"
	"banger/internal/layout"
)

// The fuzzed server's configuration.
const (
	fzBridge = "bgfuzz0"
	fzMTU    = 1400
	fzVM     = "vm1"
)

var fzPrefix = netip.MustParsePrefix("172.31.250.1/24")

// The oracle's own rules, written from the protocol's documentation, not copied
// from the validators.
var (
	fzTapRe    = regexp.MustCompile(`^tap-(pool-(0|[1-9][0-9]*)|vm-[0-9a-f]+)$`)
	fzLoopRe   = regexp.MustCompile(`^/dev/loop(0|[1-9][0-9]*)$`)
	fzJailIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)
	fzLabelRe  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	fzCgroupRe = regexp.MustCompile(`^(cpu\.max=[1-9][0-9]* [1-9][0-9]*|memory\.max=[1-9][0-9]*)$`)
)

// fuzzJail is a JailRuntime that records, at Launch, where every descriptor the
// helper hands it really leads (so the oracle checks what was opened, not what was
// asked for).
type fuzzJail struct {
	mu       sync.Mutex // guards all following fields
	launches []fuzzLaunch
	signals  []string
	removes  []string
}

type fuzzLaunch struct {
	spec    JailSpec
	files   []string // readlink of each File's descriptor
	console string   // readlink of the console's descriptor
}

func fdPath(f *os.File) string {
	if f == nil {
		return ""
	}
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return "unreadable: " + err.Error()
	}
	return p
}

func (j *fuzzJail) Launch(_ context.Context, s JailSpec) (int, error) {
	l := fuzzLaunch{spec: s, console: fdPath(s.Console)}
	for _, f := range s.Files {
		l.files = append(l.files, fdPath(f.File))
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.launches = append(j.launches, l)
	return 4242, nil
}

func (j *fuzzJail) Signal(_ context.Context, id string, sig syscall.Signal, _ uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.signals = append(j.signals, id+" "+sig.String())
	return nil
}

func (j *fuzzJail) Remove(_ context.Context, id string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.removes = append(j.removes, id)
	return nil
}

func (j *fuzzJail) reset() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.launches, j.signals, j.removes = nil, nil, nil
}

func (j *fuzzJail) count() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.launches) + len(j.signals) + len(j.removes)
}

// fuzzEnv is a server over recording fakes in a temporary root holding a few
// files of each kind for the path ops to find.
type fuzzEnv struct {
	lay      layout.Layout
	realRoot string
	srv      *Server
	net      *recordingNet
	block    *recordingBlock
	jail     *fuzzJail
	uid, gid int
	loopRO   string // an injected read-only banger loop (over an image)
	loopRW   string // an injected writable banger loop (over a disk)
}

func newFuzzEnv(f testing.TB) *fuzzEnv {
	f.Helper()
	dir := f.TempDir()
	lay, err := layout.New(filepath.Join(dir, "root"))
	if err != nil {
		f.Fatal(err)
	}
	if err := lay.Create(-1, -1); err != nil {
		f.Fatal(err)
	}
	realRoot, err := filepath.EvalSymlinks(lay.Root)
	if err != nil {
		f.Fatal(err)
	}
	e := &fuzzEnv{lay: lay, realRoot: realRoot, net: &recordingNet{}, block: newRecordingBlock(), jail: &fuzzJail{}, uid: os.Getuid(), gid: os.Getgid()}
	write := func(p string, size int) {
		f.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte{'x'}, size), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	symlink := func(target, p string) {
		f.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			f.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			f.Fatal(err)
		}
	}
	outside := filepath.Join(dir, "outside")
	write(filepath.Join(outside, "secret"), 64) // hard-linked into the disks below
	write(filepath.Join(outside, "other"), 64)  // reached only through symlinks
	disks, images := lay.DisksDir(), lay.ImagesDir()
	write(filepath.Join(disks, fzVM, "root.ext4"), 4096)
	write(filepath.Join(disks, fzVM, "cow.img"), 4096)
	write(filepath.Join(disks, fzVM, "empty.img"), 0)
	write(filepath.Join(disks, "vm2", "root.ext4"), 4096)
	write(filepath.Join(images, "base.ext4"), 4096)
	write(filepath.Join(images, "vmlinux"), 4096)
	write(filepath.Join(lay.KernelsDir(), "k1", "vmlinux"), 4096)
	write(filepath.Join(lay.StateDir, "loose.img"), 4096)
	symlink(filepath.Join(outside, "other"), filepath.Join(disks, fzVM, "out.img"))
	symlink("../../images/base.ext4", filepath.Join(disks, fzVM, "base-link.img"))
	symlink(outside, filepath.Join(disks, "outdir"))
	symlink("/", filepath.Join(disks, "slash"))
	if err := os.Link(filepath.Join(outside, "secret"), filepath.Join(disks, fzVM, "hard.img")); err != nil {
		f.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(lay.LogDir, "vms"), 0o755); err != nil {
		f.Fatal(err)
	}
	jr := filepath.Join(JailBase(lay), "firecracker", fzVM, "root", "run")
	if err := os.MkdirAll(jr, 0o755); err != nil {
		f.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(jr, "api.sock"), Net: "unix"})
	if err != nil {
		f.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	symlink(filepath.Join(outside, "other"), filepath.Join(jr, "out.sock"))
	e.loopRO, e.loopRW = "/dev/loop90001", "/dev/loop90002"
	e.block.loops = []blockdev.Loop{
		{Device: e.loopRO, BackingFile: filepath.Join(images, "base.ext4"), ReadOnly: true},
		{Device: e.loopRW, BackingFile: filepath.Join(disks, fzVM, "cow.img")},
		{Device: "/dev/loop90003", BackingFile: filepath.Join(outside, "secret")},
	}
	e.block.dms = []string{DMPrefix(disks) + fzVM + DMOriginSuffix, "vg0-root"}
	srv, err := NewServer(ServerConfig{
		Layout:       lay,
		OwnerUID:     e.uid,
		OwnerGID:     e.gid,
		Bridge:       fzBridge,
		BridgePrefix: fzPrefix,
		MTU:          fzMTU,
		Net:          e.net,
		Resolver:     e.net,
		Block:        e.block,
		Jail:         e.jail,
		Audit:        NewAuditLogger(io.Discard),
		devices:      devPaths{mapperDir: filepath.Join(dir, "mapper"), devDir: filepath.Join(dir, "dev"), sysDevBlock: filepath.Join(dir, "sys")},
		// The console log itself, not a logger's pipe: the targets check which file
		// the jail would write to, and start no process per input.
		startConsole: func(log *os.File, _ string, _ int64, _ *syscall.Credential) (*os.File, error) {
			fd, err := unix.Dup(int(log.Fd()))
			if err != nil {
				return nil, err
			}
			return os.NewFile(uintptr(fd), log.Name()), nil
		},
	})
	if err != nil {
		f.Fatal(err)
	}
	e.srv = srv
	return e
}

// expand replaces the placeholders fuzzed inputs use for what differs between runs:
// @ROOT@ is the temporary root, @PREFIX@ this root's device-mapper prefix. Without
// them the fuzzer could never name a file inside a root it cannot guess.
func (e *fuzzEnv) expand(s string) string {
	s = strings.ReplaceAll(s, "@ROOT@", e.lay.Root)
	return strings.ReplaceAll(s, "@PREFIX@", DMPrefix(e.lay.DisksDir()))
}

// mutations lists the fake calls that would have changed the host.
func (e *fuzzEnv) mutations() []string {
	var out []string
	for _, c := range e.net.Calls() {
		switch c.Op {
		case "Status", "ListTaps":
		default:
			out = append(out, c.Op)
		}
	}
	for _, c := range e.block.Mutations() {
		out = append(out, c.Op)
	}
	if n := e.jail.count(); n > 0 {
		out = append(out, fmt.Sprintf("%d jail calls", n))
	}
	return out
}

func (e *fuzzEnv) reset() {
	e.net.Reset()
	e.block.Reset()
	e.jail.reset()
}

// call runs op with body through the server's handler table, as the owner, and
// checks the invariants every op shares. It returns the decoded request (nil when
// the body was not decoded) and the error.
func (e *fuzzEnv) call(t testing.TB, op string, body []byte) (any, *Error) {
	t.Helper()
	e.reset()
	h := e.srv.handlers[op]
	if h == nil {
		t.Fatalf("no handler for op %s", op)
	}
	rec := auditRecord{peer: peerCred{UID: e.uid, GID: e.gid, PID: os.Getpid()}, op: op}
	resp, we := h(context.Background(), body, &rec)
	if we != nil {
		checkWireError(t, we)
		if we.Code != CodeFailed {
			if m := e.mutations(); len(m) > 0 {
				t.Fatalf("%s refused (%s: %s) after reaching the kernel layer: %v\nbody %q", op, we.Code, we.Message, m, body)
			}
		}
		return rec.args, we
	}
	if _, err := json.Marshal(resp); err != nil {
		t.Fatalf("%s answer %#v does not encode: %v", op, resp, err)
	}
	return rec.args, nil
}

// checkWireError wants a known code and a message.
func checkWireError(t testing.TB, we *Error) {
	t.Helper()
	switch we.Code {
	case CodeInvalid, CodeForbidden, CodeUnknownOp, CodeFailed:
	default:
		t.Fatalf("error code %q is not one of the protocol's", we.Code)
	}
	if we.Message == "" {
		t.Fatalf("error %s without a message", we.Code)
	}
}

// marshal builds a body from fuzzed fields; values may be of any JSON type.
func marshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jsonAddr lets the fuzzer send any string where an address goes.
func jsonAddr(s string) json.RawMessage { b, _ := json.Marshal(s); return b }

// cleanBeneath says whether p is an absolute, clean path strictly beneath dir.
func cleanBeneath(p, dir string) bool {
	return filepath.IsAbs(p) && filepath.Clean(p) == p && strings.HasPrefix(p, dir+"/") && !strings.ContainsRune(p, 0)
}

// underReal says whether real (a resolved path) is strictly beneath dir, which is
// given relative to the resolved root.
func (e *fuzzEnv) underReal(real, rel string) bool {
	return cleanBeneath(real, filepath.Join(e.realRoot, rel))
}

// checkGuest is the oracle for a guest address.
func checkGuest(t *testing.T, a netip.Addr) {
	t.Helper()
	n := fzPrefix.Masked()
	last := n.Addr().As4()
	bits := 32 - n.Bits()
	for i := 3; i >= 0 && bits > 0; i-- {
		take := min(bits, 8)
		last[i] |= byte(1<<take - 1)
		bits -= take
	}
	if !a.Is4() || !n.Contains(a) || a == n.Addr() || a == fzPrefix.Addr() || a == netip.AddrFrom4(last) {
		t.Fatalf("guest address %v accepted: not a host address of %s other than the gateway", a, n)
	}
}

func FuzzEnsureBridge(f *testing.F) {
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, name, addr string, mtu int64, dnsPort int64) {
		args, we := e.call(t, OpEnsureBridge, marshal(t, map[string]any{"name": name, "address": jsonAddr(addr), "mtu": mtu, "dns_port": dnsPort}))
		if we != nil {
			return
		}
		r := args.(*EnsureBridgeRequest)
		if r.Name != fzBridge || r.Address != fzPrefix || r.MTU < MinMTU || r.MTU > MaxMTU {
			t.Fatalf("EnsureBridge accepted %+v: want bridge %s, address %s, mtu %d-%d", r, fzBridge, fzPrefix, MinMTU, MaxMTU)
		}
	})
}

func FuzzCreateTap(f *testing.F) {
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, name, bridge string) {
		args, we := e.call(t, OpCreateTap, marshal(t, map[string]any{"name": name, "bridge": bridge}))
		if we != nil {
			return
		}
		r := args.(*CreateTapRequest)
		if !fzTapRe.MatchString(r.Name) || len(r.Name) > 15 || r.Bridge != fzBridge {
			t.Fatalf("CreateTap accepted %+v", r)
		}
		for _, c := range e.net.Calls() {
			if c.Op == "CreateTap" && (c.Args[0] != r.Name || c.Args[1] != fzBridge || c.Args[2] != fzMTU || c.Args[3] != e.uid || c.Args[4] != e.gid) {
				t.Fatalf("CreateTap reached the kernel layer as %v: want %s on %s, mtu %d, owner %d:%d", c.Args, r.Name, fzBridge, fzMTU, e.uid, e.gid)
			}
		}
	})
}

func FuzzDeleteTap(f *testing.F) {
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, name string) {
		args, we := e.call(t, OpDeleteTap, marshal(t, map[string]any{"name": name}))
		if we != nil {
			return
		}
		if r := args.(*DeleteTapRequest); !fzTapRe.MatchString(r.Name) || len(r.Name) > 15 {
			t.Fatalf("DeleteTap accepted %q", r.Name)
		}
	})
}

func FuzzEnsureNAT(f *testing.F) {
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, guest, mac, tap string, enable bool) {
		args, we := e.call(t, OpEnsureNAT, marshal(t, map[string]any{"guest_ip": jsonAddr(guest), "mac": mac, "tap": tap, "enable": enable}))
		if we != nil {
			return
		}
		r := args.(*EnsureNATRequest)
		checkGuest(t, r.GuestIP)
		if !fzTapRe.MatchString(r.Tap) || len(r.Tap) > 15 {
			t.Fatalf("EnsureNAT accepted tap %q", r.Tap)
		}
		if r.Enable {
			hw, err := net.ParseMAC(r.MAC)
			if err != nil || len(hw) != 6 {
				t.Fatalf("EnsureNAT enabled a guest with MAC %q (%v): want a 6-byte MAC", r.MAC, err)
			}
		}
	})
}

func FuzzResolverRouting(f *testing.F) {
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, bridge, domain, dns string, enable bool) {
		args, we := e.call(t, OpResolverRouting, marshal(t, map[string]any{"enable": enable, "bridge": bridge, "domain": domain, "dns": jsonAddr(dns)}))
		if we != nil {
			return
		}
		r := args.(*ResolverRoutingRequest)
		if r.Bridge != fzBridge {
			t.Fatalf("ResolverRouting accepted bridge %q", r.Bridge)
		}
		if !r.Enable {
			return
		}
		if r.Domain == "" || len(r.Domain) > 253 {
			t.Fatalf("ResolverRouting enabled domain %q", r.Domain)
		}
		for _, l := range strings.Split(r.Domain, ".") {
			if !fzLabelRe.MatchString(l) || len(l) > 63 {
				t.Fatalf("ResolverRouting enabled domain %q: label %q", r.Domain, l)
			}
		}
		a := r.DNS.Addr()
		if !r.DNS.IsValid() || !a.Is4() || r.DNS.Port() == 0 || (a != fzPrefix.Addr() && !a.IsLoopback()) {
			t.Fatalf("ResolverRouting enabled DNS server %v: want the bridge address or loopback, with a port", r.DNS)
		}
	})
}

func FuzzChownToOwner(f *testing.F) {
	e := newFuzzEnv(f)
	base := JailBase(e.lay)
	f.Fuzz(func(t *testing.T, path string) {
		args, we := e.call(t, OpChownToOwner, marshal(t, map[string]any{"path": e.expand(path)}))
		if we != nil {
			return
		}
		p := args.(*ChownToOwnerRequest).Path
		if !cleanBeneath(p, base) {
			t.Fatalf("ChownToOwner accepted %q: not a clean path beneath the jail base %s", p, base)
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil || real != filepath.Join(e.realRoot, strings.TrimPrefix(p, e.lay.Root)) {
			t.Fatalf("ChownToOwner accepted %q, which resolves to %q (%v): a symlink on the way", p, real, err)
		}
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode().Type() != os.ModeSocket {
			t.Fatalf("ChownToOwner accepted %q, which is %v (%v): want a socket", p, fi.Mode(), err)
		}
	})
}

func FuzzRemoveNetwork(f *testing.F) {
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, bridge string) {
		args, we := e.call(t, OpRemoveNetwork, marshal(t, map[string]any{"bridge": bridge}))
		if we == nil && args.(*RemoveNetworkRequest).Bridge != fzBridge {
			t.Fatalf("RemoveNetwork accepted bridge %q", args.(*RemoveNetworkRequest).Bridge)
		}
	})
}

func FuzzLoopAttach(f *testing.F) {
	e := newFuzzEnv(f)
	disks, _ := filepath.Rel(e.lay.Root, e.lay.DisksDir())
	images, _ := filepath.Rel(e.lay.Root, e.lay.ImagesDir())
	f.Fuzz(func(t *testing.T, path string, readOnly bool) {
		args, we := e.call(t, OpLoopAttach, marshal(t, map[string]any{"path": e.expand(path), "read_only": readOnly}))
		if we != nil {
			return
		}
		r := args.(*LoopAttachRequest)
		m := e.block.Mutations()
		if len(m) != 1 || m[0].Op != "LoopAttach" {
			t.Fatalf("LoopAttach %q accepted, kernel layer saw %v", r.Path, m)
		}
		// The fake records where the helper's descriptor really leads.
		real, _ := m[0].Args[0].(string)
		inImages := e.underReal(real, images)
		if !e.underReal(real, disks) && !inImages {
			t.Fatalf("LoopAttach %q bound %q: not under %s or %s", r.Path, real, disks, images)
		}
		if inImages && !r.ReadOnly {
			t.Fatalf("LoopAttach %q bound the base %q writable", r.Path, real)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(real, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG || int(st.Uid) != e.uid || st.Size == 0 {
			t.Fatalf("LoopAttach %q bound %q (%+v, %v): want a non-empty regular file of the owner", r.Path, real, st, err)
		}
	})
}

func FuzzLoopDetach(f *testing.F) {
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, device string) {
		args, we := e.call(t, OpLoopDetach, marshal(t, map[string]any{"device": device}))
		if we != nil {
			return
		}
		r := args.(*LoopDetachRequest)
		if !fzLoopRe.MatchString(r.Device) {
			t.Fatalf("LoopDetach accepted %q", r.Device)
		}
		for _, c := range e.block.Mutations() {
			if c.Op == "LoopDetach" && c.Args[0] != e.loopRO && c.Args[0] != e.loopRW {
				t.Fatalf("LoopDetach detached %v, not one of banger's loops", c.Args[0])
			}
		}
	})
}

func FuzzDMCreate(f *testing.F) {
	e := newFuzzEnv(f)
	prefix := DMPrefix(e.lay.DisksDir())
	f.Fuzz(func(t *testing.T, name, table string) {
		_, we := e.call(t, OpDMCreate, marshal(t, map[string]any{"name": e.expand(name), "table": e.expand(table)}))
		for _, c := range e.block.Mutations() {
			if c.Op != "DMCreate" {
				continue
			}
			n, tbl := c.Args[0].(string), c.Args[1].(string)
			if !strings.HasPrefix(n, prefix) || strings.ContainsAny(n, "/ \x00") {
				t.Fatalf("DMCreate made %q: not this root's (prefix %s)", n, prefix)
			}
			checkDMTable(t, e, n, tbl)
		}
		_ = we
	})
}

// checkDMTable is the oracle for a table that reached dmsetup: only linear, zero and
// snapshot lines, contiguous from 0, within MaxDMSectors, over banger's loops (the
// base read-only, the COW writable) or the device's own origin.
func checkDMTable(t *testing.T, e *fuzzEnv, name, table string) {
	t.Helper()
	var next int64
	for _, line := range strings.Split(strings.TrimSuffix(table, "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || strings.Join(f, " ") != line {
			t.Fatalf("DMCreate %s: table line %q is not canonical", name, line)
		}
		start, err1 := strconv.ParseInt(f[0], 10, 64)
		length, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil || start != next || length <= 0 || start+length > MaxDMSectors {
			t.Fatalf("DMCreate %s: table line %q: bad sectors", name, line)
		}
		next += length
		args := f[3:]
		switch f[2] {
		case "zero":
			if len(args) != 0 {
				t.Fatalf("DMCreate %s: zero with arguments %q", name, line)
			}
		case "linear":
			if len(args) != 2 || args[0] != e.loopRO {
				t.Fatalf("DMCreate %s: linear over %q: want banger's read-only loop %s", name, line, e.loopRO)
			}
		case "snapshot":
			own := blockdev.MapperDir + "/" + strings.TrimSuffix(name, DMOriginSuffix) + DMOriginSuffix
			if len(args) != 4 || (args[0] != e.loopRO && args[0] != own) || args[1] != e.loopRW || args[2] != "P" {
				t.Fatalf("DMCreate %s: snapshot %q: want origin %s or %s, COW %s, persistent", name, line, e.loopRO, own, e.loopRW)
			}
		default:
			t.Fatalf("DMCreate %s: target %q", name, f[2])
		}
	}
}

func FuzzDMRemove(f *testing.F) {
	e := newFuzzEnv(f)
	prefix := DMPrefix(e.lay.DisksDir())
	f.Fuzz(func(t *testing.T, name string) {
		args, we := e.call(t, OpDMRemove, marshal(t, map[string]any{"name": e.expand(name)}))
		if we != nil {
			return
		}
		if n := args.(*DMRemoveRequest).Name; !strings.HasPrefix(n, prefix) || len(n) == len(prefix) || strings.ContainsAny(n, "/ \x00") {
			t.Fatalf("DMRemove accepted %q (prefix %s)", n, prefix)
		}
	})
}

func FuzzJailLaunch(f *testing.F) {
	e := newFuzzEnv(f)
	disks, _ := filepath.Rel(e.lay.Root, e.lay.DisksDir())
	images, _ := filepath.Rel(e.lay.Root, e.lay.ImagesDir())
	kernels, _ := filepath.Rel(e.lay.Root, e.lay.KernelsDir())
	prefix := DMPrefix(e.lay.DisksDir())
	f.Fuzz(func(t *testing.T, id, kernel, rootfs, initrd string, rootfsWritable bool, cgroup, level, console string) {
		files := []map[string]any{
			{"src": e.expand(kernel), "dst": JailDstKernel},
			{"src": e.expand(rootfs), "dst": JailDstRootfs, "writable": rootfsWritable},
		}
		if initrd != "" {
			files = append(files, map[string]any{"src": e.expand(initrd), "dst": JailDstInitrd})
		}
		req := map[string]any{"id": id, "files": files, "console_log": e.expand(console),
			"firecracker_args": []string{"--api-sock", "/run/firecracker.socket", "--level", level}}
		if cgroup != "" {
			req["cgroups"] = []string{cgroup}
		}
		_, we := e.call(t, OpJailLaunch, marshal(t, req))
		e.jail.mu.Lock()
		launches := append([]fuzzLaunch(nil), e.jail.launches...)
		e.jail.mu.Unlock()
		if we == nil && len(launches) != 1 {
			t.Fatalf("JailLaunch accepted without launching")
		}
		for _, l := range launches {
			s := l.spec
			if !fzJailIDRe.MatchString(s.ID) {
				t.Fatalf("JailLaunch launched jail %q", s.ID)
			}
			for _, c := range s.Cgroups {
				if !fzCgroupRe.MatchString(c) {
					t.Fatalf("JailLaunch set cgroup %q", c)
				}
			}
			for i, jf := range s.Files {
				real := l.files[i]
				own := e.underReal(real, filepath.Join(disks, s.ID))
				shared := e.underReal(real, images) || e.underReal(real, kernels)
				dm := strings.HasPrefix(jf.Src, blockdev.MapperDir+"/"+prefix+s.ID) && jf.Dst == JailDstRootfs
				switch {
				case dm:
				case jf.Writable && !own:
					t.Fatalf("JailLaunch %s placed %q (%s) writable: not the VM's own file", s.ID, real, jf.Dst)
				case !own && !shared:
					t.Fatalf("JailLaunch %s placed %q (%s): not the VM's own file, an image or a kernel", s.ID, real, jf.Dst)
				}
				if jf.Writable && jf.Dst != JailDstRootfs {
					t.Fatalf("JailLaunch %s placed %s writable", s.ID, jf.Dst)
				}
			}
			if filepath.Dir(l.console) != filepath.Join(e.realRoot, strings.TrimPrefix(e.lay.LogDir, e.lay.Root), "vms") ||
				!strings.HasSuffix(l.console, ".console.log") || !strings.HasPrefix(s.ID, strings.TrimSuffix(filepath.Base(l.console), ".console.log")) {
				t.Fatalf("JailLaunch %s wrote its console to %q: not the VM's own console log", s.ID, l.console)
			}
		}
	})
}

func FuzzJailSignal(f *testing.F) {
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, id, signal string, start uint64) {
		args, we := e.call(t, OpJailSignal, marshal(t, map[string]any{"id": id, "signal": signal, "pid_start": start}))
		if we != nil {
			return
		}
		r := args.(*JailSignalRequest)
		if !fzJailIDRe.MatchString(r.ID) || (r.Signal != "SIGTERM" && r.Signal != "SIGKILL" && r.Signal != "SIGINT") {
			t.Fatalf("JailSignal accepted %+v", r)
		}
	})
}

func FuzzJailRemove(f *testing.F) {
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, id string) {
		args, we := e.call(t, OpJailRemove, marshal(t, map[string]any{"id": id}))
		if we == nil && !fzJailIDRe.MatchString(args.(*JailRemoveRequest).ID) {
			t.Fatalf("JailRemove accepted %q", args.(*JailRemoveRequest).ID)
		}
	})
}

// FuzzDecodeStrict feeds raw bodies to the protocol decoder for every request type:
// what it accepts is exactly one JSON object with only the type's fields, and
// decoding is stable (the re-encoded request decodes to the same value).
func FuzzDecodeStrict(f *testing.F) {
	types := []func() any{
		func() any { return &StatusRequest{} }, func() any { return &EnsureBridgeRequest{} },
		func() any { return &CreateTapRequest{} }, func() any { return &DeleteTapRequest{} },
		func() any { return &EnsureNATRequest{} }, func() any { return &ResolverRoutingRequest{} },
		func() any { return &ChownToOwnerRequest{} }, func() any { return &RemoveNetworkRequest{} },
		func() any { return &LoopAttachRequest{} }, func() any { return &LoopDetachRequest{} },
		func() any { return &DMCreateRequest{} }, func() any { return &DMRemoveRequest{} },
		func() any { return &JailLaunchRequest{} }, func() any { return &JailSignalRequest{} },
		func() any { return &JailRemoveRequest{} },
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, mk := range types {
			v := mk()
			if e := decodeStrict(body, v); e != nil {
				if e.Code != CodeInvalid || e.Message == "" {
					t.Fatalf("decodeStrict(%T) refused with %+v: want code invalid and a message", v, e)
				}
				continue
			}
			if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(body) {
				t.Fatalf("decodeStrict(%T) accepted %q: not one JSON object", v, body)
			}
			again, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("decoded %T does not encode: %v", v, err)
			}
			w := mk()
			if e := decodeStrict(again, w); e != nil {
				t.Fatalf("decodeStrict(%T) refused its own re-encoding %s: %v", v, again, e)
			}
			if !reflect.DeepEqual(v, w) {
				t.Fatalf("decodeStrict(%T) is not stable: %q gave %+v, its re-encoding %+v", v, body, v, w)
			}
		}
	})
}

// FuzzServeHTTP drives whole requests (method, path, body, caller) through the
// server's HTTP handler: every answer is JSON with a known status; a caller that is
// not the owner is always forbidden and reaches nothing.
func FuzzServeHTTP(f *testing.F) {
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, method, path string, body []byte, asOther bool) {
		if !validMethod(method) {
			return // net/http refuses to build such a request; the server never sees one
		}
		req, err := http.NewRequest(method, "http://banger-helper/", bytes.NewReader([]byte(e.expand(string(body)))))
		if err != nil {
			return
		}
		req.URL.Path = path // raw, as a hostile client could send it
		uid := e.uid
		if asOther {
			uid = e.uid + 4242
		}
		req = req.WithContext(context.WithValue(req.Context(), peerKey{}, peerCred{UID: uid, GID: e.gid, PID: 1}))
		e.reset()
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound,
			http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge, http.StatusInternalServerError:
		default:
			t.Fatalf("%s %q: status %d is not one the protocol uses", method, path, w.Code)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %q: answer %q is not JSON", method, path, w.Body.Bytes())
		}
		if w.Code != http.StatusOK {
			var we Error
			if err := json.Unmarshal(w.Body.Bytes(), &we); err != nil {
				t.Fatalf("%s %q: refusal %q is not an Error: %v", method, path, w.Body.Bytes(), err)
			}
			checkWireError(t, &we)
			if we.Code != CodeFailed {
				if m := e.mutations(); len(m) > 0 {
					t.Fatalf("%s %q refused (%s) after reaching the kernel layer: %v", method, path, we.Code, m)
				}
			}
		}
		if asOther && (w.Code != http.StatusForbidden || len(e.mutations()) > 0 || len(e.net.Calls()) > 0) {
			t.Fatalf("%s %q as uid %d (not the owner): status %d, kernel layer saw %v", method, path, uid, w.Code, e.net.Calls())
		}
	})
}

// validMethod is what net/http accepts as a method token.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}

// roundTripFunc answers the client's requests in-process.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// FuzzClientResponse feeds arbitrary answers to the client bangerd uses: it never
// panics, a 200 that decodes is a success, and anything else is a *Error with a
// known code, so a broken or hostile answer cannot pass for a success.
func FuzzClientResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 999 {
			return // not an HTTP status line the transport would deliver
		}
		c := &Client{socket: "/nonexistent", hc: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: status, Status: strconv.Itoa(status) + " X", Body: io.NopCloser(bytes.NewReader(body)), Header: http.Header{}, Request: r}, nil
		})}}
		var resp StatusResponse
		err := c.call(context.Background(), OpStatus, StatusRequest{}, &resp)
		if status != http.StatusOK {
			var we *Error
			if !errors.As(err, &we) {
				t.Fatalf("status %d answered %v (%T): want a *Error", status, err, err)
			}
			if we.Code == "" {
				t.Fatalf("status %d gave an Error without a code: %+v", status, we)
			}
			return
		}
		var want StatusResponse
		if json.Unmarshal(body, &want) == nil {
			if err != nil {
				t.Fatalf("a 200 answer that decodes (%q) failed: %v", body, err)
			}
		} else if err == nil {
			t.Fatalf("a 200 answer that does not decode (%q) passed for a success", body)
		}
	})
}

// fuzzSeeds is the checked-in seed corpus, by target: per seed, the fuzz function's
// arguments in order. Paths use the @ROOT@ and @PREFIX@ placeholders (see expand).
// Each target has seeds its invariants accept and seeds aimed at each rule.
var fuzzSeeds = map[string][][]any{
	"FuzzEnsureBridge": {
		{fzBridge, fzPrefix.String(), int64(fzMTU), int64(5353)},
		{fzBridge, fzPrefix.String(), int64(MinMTU), int64(0)},
		{fzBridge, fzPrefix.String(), int64(MaxMTU), int64(65535)},
		{fzBridge, fzPrefix.String(), int64(MinMTU - 1), int64(53)},
		{fzBridge, fzPrefix.String(), int64(MaxMTU + 1), int64(53)},
		{fzBridge, fzPrefix.String(), int64(fzMTU), int64(65536)},
		{fzBridge, fzPrefix.String(), int64(fzMTU), int64(-1)},
		{fzBridge, "172.31.250.1/16", int64(fzMTU), int64(53)},
		{fzBridge, "172.31.250.2/24", int64(fzMTU), int64(53)},
		{fzBridge, "172.31.250.1", int64(fzMTU), int64(53)},
		{fzBridge, "::ffff:172.31.250.1/120", int64(fzMTU), int64(53)},
		{"docker0", fzPrefix.String(), int64(fzMTU), int64(53)},
		{fzBridge + "\x00", fzPrefix.String(), int64(fzMTU), int64(53)},
		{"BGFUZZ0", fzPrefix.String(), int64(fzMTU), int64(53)},
		{"", "", int64(0), int64(0)},
	},
	"FuzzCreateTap": {
		{"tap-pool-0", fzBridge}, {"tap-pool-999999", fzBridge}, {"tap-vm-deadbeef", fzBridge},
		{"tap-pool-01", fzBridge}, {"tap-pool-1234567", fzBridge}, {"tap-vm-DEADBEEF", fzBridge},
		{"tap-vm-123456789", fzBridge}, {"tap-pool-0", "docker0"}, {"eth0", fzBridge},
		{"tap-pool-0;reboot", fzBridge}, {"tap-pool-0\n", fzBridge}, {"tap-pool-٣", fzBridge}, {"", ""},
	},
	"FuzzDeleteTap": {
		{"tap-pool-0"}, {"tap-vm-a1"}, {"tap-pool-"}, {"tap-vm-"}, {"lo"}, {fzBridge}, {"tap-pool-0 "},
		{"../tap-pool-0"}, {"tap-pool-0\x00eth0"}, {"tap-vm-abcdefgh0"}, {""},
	},
	"FuzzEnsureNAT": {
		{"172.31.250.5", "02:00:00:00:00:05", "tap-pool-0", true},
		{"172.31.250.254", "02:00:00:00:00:fe", "tap-vm-1", true},
		{"172.31.250.5", "", "tap-pool-0", false},
		{"172.31.250.0", "02:00:00:00:00:05", "tap-pool-0", true},
		{"172.31.250.1", "02:00:00:00:00:05", "tap-pool-0", true},
		{"172.31.250.255", "02:00:00:00:00:05", "tap-pool-0", false},
		{"172.31.251.5", "02:00:00:00:00:05", "tap-pool-0", true},
		{"::ffff:172.31.250.5", "02:00:00:00:00:05", "tap-pool-0", true},
		{"169.254.169.254", "02:00:00:00:00:05", "tap-pool-0", true},
		{"172.31.250.5", "", "tap-pool-0", true},
		{"172.31.250.5", "02:00:00:00:00:05:06:07", "tap-pool-0", true},
		{"172.31.250.5", "ff:ff:ff:ff:ff:ff", "tap-pool-0", true},
		{"172.31.250.5", "02-00-00-00-00-05", "tap-pool-0", true},
		{"172.31.250.5", "02:00:00:00:00:05", "eth0", true},
		{"", "", "", false},
	},
	"FuzzResolverRouting": {
		{fzBridge, "vm", "172.31.250.1:53", true},
		{fzBridge, "banger.internal", "127.0.0.1:5353", true},
		{fzBridge, "", "", false},
		{fzBridge, "com", "127.0.0.1:9999", true},
		{fzBridge, "vm", "8.8.8.8:53", true},
		{fzBridge, "vm", "[::1]:53", true},
		{fzBridge, "vm", "172.31.250.1:0", true},
		{fzBridge, "VM", "172.31.250.1:53", true},
		{fzBridge, "-vm", "172.31.250.1:53", true},
		{fzBridge, "vm.", "172.31.250.1:53", true},
		{fzBridge, "~.", "172.31.250.1:53", true},
		{fzBridge, strings.Repeat("a", 64), "172.31.250.1:53", true},
		{"docker0", "vm", "172.31.250.1:53", true},
		{fzBridge, "vm", "", true},
	},
	"FuzzChownToOwner": {
		{"@ROOT@/jail/firecracker/" + fzVM + "/root/run/api.sock"},
		{"@ROOT@/jail/firecracker/" + fzVM + "/root/run/out.sock"},
		{"@ROOT@/jail/firecracker/" + fzVM + "/root/run/../../../../../../config.toml"},
		{"@ROOT@/jail/firecracker/" + fzVM + "/root/run//api.sock"},
		{"@ROOT@/jail/firecracker/" + fzVM + "/root/run/api.sock/"},
		{"@ROOT@/jail/firecracker/" + fzVM + "/root/run/api.sock\x00"},
		{"@ROOT@/jail/firecracker/" + fzVM + "/root/run"},
		{"@ROOT@/jail/firecracker/" + fzVM + "/root/api.sock"},
		{"@ROOT@/jail/firecracker/VM1/root/run/api.sock"},
		{"@ROOT@/config.toml"}, {"@ROOT@/install.json"}, {"@ROOT@"}, {"/etc/shadow"},
		{"/proc/self/root@ROOT@/jail/firecracker/" + fzVM + "/root/run/api.sock"},
		{"jail/firecracker/" + fzVM + "/root/run/api.sock"}, {""},
	},
	"FuzzRemoveNetwork": {{fzBridge}, {"docker0"}, {""}, {fzBridge + " "}, {"BGFUZZ0"}},
	"FuzzLoopAttach": {
		{"@ROOT@/state/disks/" + fzVM + "/root.ext4", false},
		{"@ROOT@/state/disks/" + fzVM + "/root.ext4", true},
		{"@ROOT@/state/images/base.ext4", true},
		{"@ROOT@/state/images/base.ext4", false},
		{"@ROOT@/state/disks/" + fzVM + "/base-link.img", true},
		{"@ROOT@/state/disks/" + fzVM + "/base-link.img", false},
		{"@ROOT@/state/disks/" + fzVM + "/out.img", true},
		{"@ROOT@/state/disks/" + fzVM + "/hard.img", true},
		{"@ROOT@/state/disks/" + fzVM + "/empty.img", true},
		{"@ROOT@/state/disks/outdir/secret", true},
		{"@ROOT@/state/disks/slash/etc/passwd", true},
		{"@ROOT@/state/disks/../../config.toml", true},
		{"@ROOT@/state/loose.img", true},
		{"@ROOT@/state/disks", true},
		{"@ROOT@/state/disks/" + fzVM, true},
		{"@ROOT@//state/disks/" + fzVM + "/root.ext4", true},
		{"/etc/passwd", true}, {"/dev/loop0", true}, {"", true},
	},
	"FuzzLoopDetach": {{"/dev/loop90001"}, {"/dev/loop90002"}, {"/dev/loop90003"}, {"/dev/loop0"}, {"/dev/loop01"}, {"/dev/sda"}, {"/dev/../dev/loop90001"}, {"/dev/loop-control"}, {""}},
	"FuzzDMCreate": {
		{"@PREFIX@" + fzVM, "0 8 snapshot /dev/loop90001 /dev/loop90002 P 8\n"},
		{"@PREFIX@" + fzVM, "0 8 snapshot /dev/mapper/@PREFIX@" + fzVM + ".origin /dev/loop90002 P 8\n"},
		{"@PREFIX@" + fzVM + ".origin", "0 8 linear /dev/loop90001 0\n8 8 zero\n"},
		{"@PREFIX@" + fzVM, "0 8 snapshot /dev/loop90002 /dev/loop90001 P 8\n"},
		{"@PREFIX@" + fzVM, "0 8 snapshot /dev/loop90003 /dev/loop90002 P 8\n"},
		{"@PREFIX@" + fzVM, "0 8 snapshot /dev/loop90001 /dev/loop90003 P 8\n"},
		{"@PREFIX@" + fzVM, "0 8 snapshot /dev/loop90001 /dev/loop90002 N 8\n"},
		{"@PREFIX@" + fzVM, "0 8 snapshot /dev/loop90001 /dev/loop90002 P 7\n"},
		{"@PREFIX@" + fzVM, "0 8 snapshot /dev/mapper/vg0-root /dev/loop90002 P 8\n"},
		{"@PREFIX@" + fzVM, "0 8 linear /dev/loop90001 0\n"},
		{"@PREFIX@" + fzVM, "0 8 crypt aes-xts-plain64 00 0 /dev/loop90001 0\n"},
		{"@PREFIX@" + fzVM + ".origin", "0 8 linear /dev/loop90003 0\n8 8 zero\n"},
		{"@PREFIX@" + fzVM + ".origin", "0 8 linear /dev/loop90001 0\n8 8 zero\n16 8 linear /dev/sda 0\n"},
		{"@PREFIX@" + fzVM + ".origin", "0  8 linear /dev/loop90001 0\n8 8 zero\n"},
		{"@PREFIX@" + fzVM, "0 18446744073709551615 snapshot /dev/loop90001 /dev/loop90002 P 8\n"},
		{"vg0-root", "0 8 linear /dev/loop90001 0\n"},
		{"@PREFIX@../x", "0 8 zero\n"},
		{"", ""},
	},
	"FuzzDMRemove": {{"@PREFIX@" + fzVM}, {"@PREFIX@" + fzVM + ".origin"}, {"@PREFIX@"}, {"vg0-root"}, {"@PREFIX@../x"}, {"@PREFIX@" + fzVM + "/x"}, {"control"}, {""}},
	"FuzzJailLaunch": {
		{fzVM, "@ROOT@/state/images/vmlinux", "@ROOT@/state/disks/" + fzVM + "/root.ext4", "", true, "cpu.max=100000 100000", "Info", "@ROOT@/logs/vms/" + fzVM + ".console.log"},
		{fzVM, "@ROOT@/state/kernels/k1/vmlinux", "@ROOT@/state/disks/" + fzVM + "/root.ext4", "@ROOT@/state/images/base.ext4", true, "memory.max=1073741824", "Debug", "@ROOT@/logs/vms/" + fzVM + ".console.log"},
		{fzVM, "@ROOT@/state/images/vmlinux", "/dev/mapper/@PREFIX@" + fzVM, "", true, "", "Warning", "@ROOT@/logs/vms/" + fzVM + ".console.log"},
		{fzVM, "@ROOT@/state/images/vmlinux", "@ROOT@/state/disks/vm2/root.ext4", "", true, "", "Info", "@ROOT@/logs/vms/" + fzVM + ".console.log"},
		{fzVM, "@ROOT@/state/images/vmlinux", "@ROOT@/state/images/base.ext4", "", true, "", "Info", "@ROOT@/logs/vms/" + fzVM + ".console.log"},
		{fzVM, "@ROOT@/state/disks/" + fzVM + "/out.img", "@ROOT@/state/disks/" + fzVM + "/root.ext4", "", true, "", "Info", "@ROOT@/logs/vms/" + fzVM + ".console.log"},
		{fzVM, "@ROOT@/state/images/vmlinux", "@ROOT@/state/disks/" + fzVM + "/hard.img", "", true, "", "Info", "@ROOT@/logs/vms/" + fzVM + ".console.log"},
		{fzVM, "@ROOT@/config.toml", "@ROOT@/state/disks/" + fzVM + "/root.ext4", "", true, "", "Info", "@ROOT@/logs/vms/" + fzVM + ".console.log"},
		{fzVM, "@ROOT@/state/images/vmlinux", "@ROOT@/state/disks/" + fzVM + "/root.ext4", "", true, "", "Info", "@ROOT@/logs/helper-audit.log"},
		{fzVM, "@ROOT@/state/images/vmlinux", "@ROOT@/state/disks/" + fzVM + "/root.ext4", "", true, "", "Info", "@ROOT@/logs/vms/vm2.console.log"},
		{fzVM, "@ROOT@/state/images/vmlinux", "@ROOT@/state/disks/" + fzVM + "/root.ext4", "", true, "cgroup.procs=1", "Info", "@ROOT@/logs/vms/" + fzVM + ".console.log"},
		{fzVM, "@ROOT@/state/images/vmlinux", "@ROOT@/state/disks/" + fzVM + "/root.ext4", "", true, "", "Info --no-seccomp", "@ROOT@/logs/vms/" + fzVM + ".console.log"},
		{"../../x", "@ROOT@/state/images/vmlinux", "@ROOT@/state/disks/../../../x/root.ext4", "", true, "", "Info", "@ROOT@/logs/vms/x.console.log"},
		{"", "", "", "", false, "", "", ""},
	},
	"FuzzJailSignal": {{fzVM, "SIGTERM", uint64(0)}, {fzVM, "SIGKILL", uint64(12345)}, {fzVM, "SIGSTOP", uint64(0)}, {fzVM, "9", uint64(0)}, {"../x", "SIGINT", uint64(0)}, {"", "", uint64(0)}},
	"FuzzJailRemove": {{fzVM}, {"a-b-c"}, {"../x"}, {"A"}, {strings.Repeat("a", 65)}, {""}},
	"FuzzDecodeStrict": {
		{[]byte(`{}`)}, {[]byte(` {"name":"tap-pool-0","bridge":"bgfuzz0"}`)}, {[]byte(`{"path":"/x","path":"/y"}`)},
		{[]byte(`{"PATH":"/x"}`)}, {[]byte(`{"mtu":1e400}`)}, {[]byte(`{"mtu":1400.5}`)}, {[]byte(`{}{}`)}, {[]byte(`{} x`)},
		{[]byte(`[]`)}, {[]byte(`null`)}, {[]byte("\xef\xbb\xbf{}")}, {[]byte(`{"guest_ip":"::ffff:1.2.3.4"}`)},
		{[]byte(`{"address":"10.0.0.1/33"}`)}, {[]byte(`{"dns":"1.2.3.4:99999"}`)}, {[]byte(`{"pid_start":-1}`)},
		{[]byte(`{"files":[{"src":"/x","dst":"/vmlinux","writable":true,"extra":1}]}`)}, {[]byte(`{"name":"\ud800"}`)},
		{[]byte(`{"name":"a\u0000b"}`)}, {[]byte(`{"unknown":1}`)}, {[]byte(strings.Repeat("[", 100))},
	},
	"FuzzServeHTTP": {
		{"POST", "/v1/op/Status", []byte(`{}`), false},
		{"POST", "/v1/op/Status", []byte(`{}`), true},
		{"POST", "/v1/op/RemoveNetwork", []byte(`{"bridge":"bgfuzz0"}`), true},
		{"POST", "/v1/op/ChownToOwner", []byte(`{"path":"@ROOT@/jail/firecracker/` + fzVM + `/root/run/api.sock"}`), false},
		{"POST", "/v1/op/LoopAttach", []byte(`{"path":"@ROOT@/state/disks/` + fzVM + `/root.ext4","read_only":true}`), false},
		{"POST", "/v1/op/DeleteTap", []byte(`{"name":"eth0"}`), false},
		{"GET", "/v1/op/Status", []byte(`{}`), false},
		{"POST", "/v1/op/", []byte(`{}`), false},
		{"POST", "/v1/op/../op/Status", []byte(`{}`), false},
		{"POST", "/v1/op/Status\x00", []byte(`{}`), false},
		{"POST", "/v1/op/" + strings.Repeat("A", 200), []byte(`{}`), false},
		{"POST", "/v1/op/Status", []byte(strings.Repeat(" ", 70000)), false},
		{"DELETE", "/v1/op/RemoveNetwork", []byte(`{"bridge":"bgfuzz0"}`), false},
	},
	"FuzzClientResponse": {
		{200, []byte(`{"version":"1","pid":1,"owner_uid":0}`)}, {200, []byte(`not json`)}, {200, []byte(``)},
		{400, []byte(`{"code":"invalid","message":"no"}`)}, {403, []byte(`{"code":"forbidden","message":"no"}`)},
		{500, []byte(`<html>oops</html>`)}, {404, []byte(`{"code":"","message":"x"}`)}, {502, []byte(`{}`)},
		{200, []byte(`{"pid":"x"}`)}, {201, []byte(`{}`)}, {100, []byte(``)}, {999, []byte(`{"code":"failed"}`)},
	},
}

// fuzzValue encodes one argument in Go's fuzz corpus format.
func fuzzValue(v any) string {
	switch x := v.(type) {
	case string:
		return "string(" + strconv.Quote(x) + ")"
	case []byte:
		return "[]byte(" + strconv.Quote(string(x)) + ")"
	case bool:
		return "bool(" + strconv.FormatBool(x) + ")"
	case int:
		return "int(" + strconv.Itoa(x) + ")"
	case int64:
		return "int64(" + strconv.FormatInt(x, 10) + ")"
	case uint64:
		return "uint64(" + strconv.FormatUint(x, 10) + ")"
	}
	panic(fmt.Sprintf("fuzz seed of type %T", v))
}

// TestFuzzCorpus checks that every fuzz target has its seed corpus checked in, as
// fuzzSeeds holds it; with BANGER_WRITE_FUZZ_CORPUS=1 it (re)writes the files.
func TestFuzzCorpus(t *testing.T) {
	write := os.Getenv("BANGER_WRITE_FUZZ_CORPUS") == "1"
	for name, seeds := range fuzzSeeds {
		dir := filepath.Join("testdata", "fuzz", name)
		for i, args := range seeds {
			var b strings.Builder
			b.WriteString("go test fuzz v1\n")
			for _, a := range args {
				b.WriteString(fuzzValue(a) + "\n")
			}
			p := filepath.Join(dir, fmt.Sprintf("seed-%03d", i))
			if write {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != b.String() {
				t.Errorf("%s: missing or stale (%v): regenerate with BANGER_WRITE_FUZZ_CORPUS=1 go test -run TestFuzzCorpus ./internal/privileged/", p, err)
			}
		}
	}
}

// TestFuzzSeedsReachAcceptance proves the fuzz targets are not vacuous: for every op,
// a valid request (one of the seeds) passes the handler and reaches the fakes, so
// the oracles' checks on accepted requests really run.
func TestFuzzSeedsReachAcceptance(t *testing.T) {
	e := newFuzzEnv(t)
	for _, c := range []struct {
		op   string
		body string
	}{
		{OpEnsureBridge, `{"name":"bgfuzz0","address":"172.31.250.1/24","mtu":1400,"dns_port":5353}`},
		{OpCreateTap, `{"name":"tap-pool-0","bridge":"bgfuzz0"}`},
		{OpDeleteTap, `{"name":"tap-pool-0"}`},
		{OpEnsureNAT, `{"guest_ip":"172.31.250.5","mac":"02:00:00:00:00:05","tap":"tap-pool-0","enable":true}`},
		{OpResolverRouting, `{"bridge":"bgfuzz0"}`},
		{OpChownToOwner, `{"path":"@ROOT@/jail/firecracker/` + fzVM + `/root/run/api.sock"}`},
		{OpRemoveNetwork, `{"bridge":"bgfuzz0"}`},
		{OpLoopAttach, `{"path":"@ROOT@/state/disks/` + fzVM + `/root.ext4"}`},
		{OpLoopDetach, `{"device":"/dev/loop90002"}`},
		{OpDMCreate, `{"name":"@PREFIX@` + fzVM + `.origin","table":"0 8 linear /dev/loop90001 0\n8 8 zero\n"}`},
		{OpDMRemove, `{"name":"@PREFIX@` + fzVM + `"}`},
		{OpJailLaunch, `{"id":"` + fzVM + `","files":[{"src":"@ROOT@/state/images/vmlinux","dst":"/vmlinux"},{"src":"@ROOT@/state/disks/` + fzVM + `/root.ext4","dst":"/rootfs","writable":true}],"firecracker_args":["--api-sock","/run/firecracker.socket"],"console_log":"@ROOT@/logs/vms/` + fzVM + `.console.log"}`},
		{OpJailSignal, `{"id":"` + fzVM + `","signal":"SIGTERM"}`},
		{OpJailRemove, `{"id":"` + fzVM + `"}`},
	} {
		t.Run(c.op, func(t *testing.T) {
			if _, we := e.call(t, c.op, []byte(e.expand(c.body))); we != nil {
				t.Fatalf("%s %s: refused (%s: %s); the fuzz oracle for accepted calls would never run", c.op, c.body, we.Code, we.Message)
			}
			// ChownToOwner chowns itself, through a descriptor: there is no fake to reach.
			if len(e.mutations()) == 0 && c.op != OpChownToOwner {
				t.Fatalf("%s: accepted without reaching the kernel layer", c.op)
			}
		})
	}
}
