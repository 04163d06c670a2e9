package privileged

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

type hostileCase struct {
	name string
	call func(ctx context.Context, c *Client) error
}

func createTapCase(name, tap, bridge string) hostileCase {
	return hostileCase{name, func(ctx context.Context, c *Client) error {
		return c.CreateTap(ctx, CreateTapRequest{Name: tap, Bridge: bridge})
	}}
}

func deleteTapCase(name, tap string) hostileCase {
	return hostileCase{name, func(ctx context.Context, c *Client) error {
		return c.DeleteTap(ctx, DeleteTapRequest{Name: tap})
	}}
}

func natCase(name, tap string, ip netip.Addr) hostileCase {
	return hostileCase{name, func(ctx context.Context, c *Client) error {
		return c.EnsureNAT(ctx, EnsureNATRequest{GuestIP: ip, MAC: testGuestMAC, Tap: tap, Enable: true})
	}}
}

func bridgeCase(name string, req EnsureBridgeRequest) hostileCase {
	return hostileCase{name, func(ctx context.Context, c *Client) error {
		_, err := c.EnsureBridge(ctx, req)
		return err
	}}
}

func resolverCase(name string, req ResolverRoutingRequest) hostileCase {
	return hostileCase{name, func(ctx context.Context, c *Client) error {
		_, err := c.ResolverRouting(ctx, req)
		return err
	}}
}

func chownCase(name, path string) hostileCase {
	return hostileCase{name, func(ctx context.Context, c *Client) error {
		return c.ChownToOwner(ctx, ChownToOwnerRequest{Path: path})
	}}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func ownerOf(t *testing.T, path string) (uid, gid int) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return int(st.Uid), int(st.Gid)
}

// TestHostileInputIsRefused sends hostile arguments through the real client, server
// and socket. Each must come back as CodeInvalid, nothing may reach the NetOps fake
// (that is, the kernel), no file outside the root may change owner, and each call must
// leave exactly one audit line.
func TestHostileInputIsRefused(t *testing.T) {
	h := newHarness(t)
	root := h.lay.Root
	state := h.lay.StateDir
	if err := os.MkdirAll(state, 0o750); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	mustWrite(t, secret)
	mustSymlink(t, secret, filepath.Join(state, "out-link"))
	mustSymlink(t, "chain2", filepath.Join(state, "chain1"))
	mustSymlink(t, secret, filepath.Join(state, "chain2"))
	mustSymlink(t, "/etc", filepath.Join(state, "etc-link"))
	rel, err := filepath.Rel(state, secret)
	if err != nil {
		t.Fatal(err)
	}
	mustSymlink(t, rel, filepath.Join(state, "rel-escape"))
	mustSymlink(t, root, filepath.Join(state, "root-link"))
	if err := unix.Mkfifo(filepath.Join(state, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(secret, filepath.Join(state, "hardlink")); err != nil {
		t.Fatal(err)
	}
	secretUID, secretGID := ownerOf(t, secret)
	shadowUID, shadowGID := ownerOf(t, "/etc/shadow")

	net := testPrefix.Masked().Addr().As4()
	ip := func(last byte) netip.Addr { return netip.AddrFrom4([4]byte{net[0], net[1], net[2], last}) }
	okBridge := EnsureBridgeRequest{Name: testBridge, Address: testPrefix, MTU: testMTU, DNSPort: 5353}
	withBridge := func(f func(*EnsureBridgeRequest)) EnsureBridgeRequest { r := okBridge; f(&r); return r }
	okDNS := netip.AddrPortFrom(testPrefix.Addr(), 5353)

	cases := []hostileCase{
		createTapCase("semicolon", "tap-pool-1;rm -rf /", testBridge),
		createTapCase("command substitution", "$(reboot)", testBridge),
		createTapCase("backticks", "tap-vm-`id`", testBridge),
		createTapCase("spaces", "tap pool 1", testBridge),
		createTapCase("newline", "tap-pool-1\n", testBridge),
		createTapCase("16 bytes", "tap-pool-1234567", testBridge),
		createTapCase("eth0", "eth0", testBridge),
		createTapCase("lo", "lo", testBridge),
		createTapCase("docker0", "docker0", testBridge),
		createTapCase("empty name", "", testBridge),
		createTapCase("fullwidth digit", "tap-pool-１", testBridge),
		createTapCase("unicode hyphen", "tap‐pool-1", testBridge),
		createTapCase("cyrillic a", "tap-vm-аbc", testBridge),
		createTapCase("leading zero", "tap-pool-01", testBridge),
		createTapCase("uppercase hex", "tap-vm-ABCDEF", testBridge),
		createTapCase("path in name", "../tap-pool-1", testBridge),
		createTapCase("NUL in name", "tap-pool-1\x00", testBridge),
		createTapCase("other bridge", "tap-pool-1", "docker0"),
		createTapCase("empty bridge", "tap-pool-1", ""),
		deleteTapCase("delete eth0", "eth0"),
		deleteTapCase("delete the bridge", testBridge),
		deleteTapCase("delete wildcard", "tap-pool-*"),
		natCase("nat on eth0", "eth0", ip(5)),
		natCase("guest outside CIDR", "tap-pool-1", netip.MustParseAddr("10.0.0.5")),
		natCase("guest is network address", "tap-pool-1", ip(0)),
		natCase("guest is broadcast", "tap-pool-1", ip(255)),
		natCase("guest is the gateway", "tap-pool-1", testPrefix.Addr()),
		natCase("guest is IPv6", "tap-pool-1", netip.MustParseAddr("fd00::5")),
		natCase("guest is IPv4-mapped IPv6", "tap-pool-1", netip.AddrFrom16(ip(5).As16())),
		natCase("guest missing", "tap-pool-1", netip.Addr{}),
		bridgeCase("bridge eth0", withBridge(func(r *EnsureBridgeRequest) { r.Name = "eth0" })),
		bridgeCase("bridge docker0", withBridge(func(r *EnsureBridgeRequest) { r.Name = "docker0" })),
		bridgeCase("wrong bridge address", withBridge(func(r *EnsureBridgeRequest) { r.Address = netip.PrefixFrom(ip(2), 24) })),
		bridgeCase("wrong prefix length", withBridge(func(r *EnsureBridgeRequest) { r.Address = netip.PrefixFrom(testPrefix.Addr(), 16) })),
		bridgeCase("address outside", withBridge(func(r *EnsureBridgeRequest) { r.Address = netip.MustParsePrefix("192.168.1.1/24") })),
		bridgeCase("missing address", withBridge(func(r *EnsureBridgeRequest) { r.Address = netip.Prefix{} })),
		bridgeCase("huge MTU", withBridge(func(r *EnsureBridgeRequest) { r.MTU = 65536 })),
		bridgeCase("zero MTU", withBridge(func(r *EnsureBridgeRequest) { r.MTU = 0 })),
		bridgeCase("negative MTU", withBridge(func(r *EnsureBridgeRequest) { r.MTU = -1 })),
		resolverCase("domain with semicolon", ResolverRoutingRequest{Enable: true, Bridge: testBridge, Domain: "vm;reboot", DNS: okDNS}),
		resolverCase("domain with space", ResolverRoutingRequest{Enable: true, Bridge: testBridge, Domain: "my vm", DNS: okDNS}),
		resolverCase("empty domain", ResolverRoutingRequest{Enable: true, Bridge: testBridge, Domain: "", DNS: okDNS}),
		resolverCase("uppercase domain", ResolverRoutingRequest{Enable: true, Bridge: testBridge, Domain: "VM", DNS: okDNS}),
		resolverCase("foreign DNS server", ResolverRoutingRequest{Enable: true, Bridge: testBridge, Domain: "vm", DNS: netip.MustParseAddrPort("8.8.8.8:53")}),
		resolverCase("DNS port 0", ResolverRoutingRequest{Enable: true, Bridge: testBridge, Domain: "vm", DNS: netip.AddrPortFrom(testPrefix.Addr(), 0)}),
		resolverCase("resolver on eth0", ResolverRoutingRequest{Enable: true, Bridge: "eth0", Domain: "vm", DNS: okDNS}),
		// Valid names and servers that are not the configured ones: routing them would
		// send every user's lookups for the domain to a server the owner picked.
		resolverCase("a whole TLD", ResolverRoutingRequest{Enable: true, Bridge: testBridge, Domain: "com", DNS: okDNS}),
		resolverCase("a subdomain of the configured one", ResolverRoutingRequest{Enable: true, Bridge: testBridge, Domain: "x.vm", DNS: okDNS}),
		resolverCase("the owner's server on loopback", ResolverRoutingRequest{Enable: true, Bridge: testBridge, Domain: "vm", DNS: netip.MustParseAddrPort("127.0.0.1:9999")}),
		resolverCase("the bridge on another port", ResolverRoutingRequest{Enable: true, Bridge: testBridge, Domain: "vm", DNS: netip.AddrPortFrom(testPrefix.Addr(), 53)}),
		resolverCase("disable another domain", ResolverRoutingRequest{Enable: false, Bridge: testBridge, Domain: "com"}),
		{"remove eth0", func(ctx context.Context, c *Client) error {
			return c.RemoveNetwork(ctx, RemoveNetworkRequest{Bridge: "eth0"})
		}},
		{"remove empty bridge", func(ctx context.Context, c *Client) error {
			return c.RemoveNetwork(ctx, RemoveNetworkRequest{Bridge: ""})
		}},
		chownCase("relative dotdot", "../etc/shadow"),
		chownCase("dotdot out of root", root+"/../../etc/shadow"),
		chownCase("dotdot inside root", root+"/state/../state/out-link"),
		chownCase("etc shadow", "/etc/shadow"),
		chownCase("symlink out of root", filepath.Join(state, "out-link")),
		chownCase("symlink chain out of root", filepath.Join(state, "chain1")),
		chownCase("symlinked directory", filepath.Join(state, "etc-link", "shadow")),
		chownCase("relative symlink escape", filepath.Join(state, "rel-escape")),
		chownCase("symlink to the root", filepath.Join(state, "root-link")),
		chownCase("the root itself", root),
		chownCase("root with trailing slash", root+"/"),
		chownCase("a directory", state),
		chownCase("a fifo", filepath.Join(state, "fifo")),
		chownCase("a hard link to outside", filepath.Join(state, "hardlink")),
		chownCase("NUL byte", filepath.Join(state, "file")+"\x00/etc/shadow"),
		chownCase("relative path", "state/file"),
		chownCase("empty path", ""),
		chownCase("unclean path", root+"//state/./fifo"),
		chownCase("missing file", filepath.Join(state, "nope")),
	}
	if os.Getuid() == 0 {
		dev := filepath.Join(state, "null")
		if err := unix.Mknod(dev, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatalf("mknod: %v", err)
		}
		foreign := filepath.Join(state, "foreign")
		mustWrite(t, foreign)
		if err := os.Chown(foreign, 12345, 12345); err != nil {
			t.Fatal(err)
		}
		// Root's own files under the root: handing any of these to the owner would let
		// the owner decide what root runs (config.toml, install.json) or rewrite the
		// record of what it did (the audit log).
		for _, p := range []string{h.lay.ConfigPath(), h.lay.InstallMetadataPath(), h.lay.AuditLog()} {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cases = append(cases,
			chownCase("a device node", dev),
			chownCase("a file of another user", foreign),
			chownCase("config.toml", h.lay.ConfigPath()),
			chownCase("install.json", h.lay.InstallMetadataPath()),
			chownCase("the audit log", h.lay.AuditLog()),
		)
	}
	if len(cases) < 30 {
		t.Fatalf("only %d hostile cases; the brief asks for at least 30", len(cases))
	}

	ctx := context.Background()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(ctx, h.client)
			we := wantCode(t, err, CodeInvalid)
			if we.Message == "" {
				t.Errorf("refusal has no message")
			}
			t.Logf("refused: %s", we.Message)
			if calls := h.net.Calls(); len(calls) != 0 {
				t.Fatalf("hostile input reached NetOps: %s", fmtCalls(calls))
			}
		})
	}

	if u, g := ownerOf(t, secret); u != secretUID || g != secretGID {
		t.Errorf("file outside the root changed owner to %d:%d, want %d:%d", u, g, secretUID, secretGID)
	}
	if u, g := ownerOf(t, "/etc/shadow"); u != shadowUID || g != shadowGID {
		t.Errorf("/etc/shadow changed owner to %d:%d, want %d:%d", u, g, shadowUID, shadowGID)
	}
	lines := h.audit.Lines(t)
	if len(lines) != len(cases) {
		t.Fatalf("got %d audit lines for %d calls, want one per call", len(lines), len(cases))
	}
	for i, l := range lines {
		if l["result"] != CodeInvalid {
			t.Errorf("audit line %d: got result %v, want %q", i, l["result"], CodeInvalid)
		}
	}
}

// TestValidInputReachesNetOps proves the server passes valid calls through exactly,
// with the owner identity from its own configuration.
func TestValidInputReachesNetOps(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	guest := netip.MustParseAddr("172.30.99.254")
	dns := netip.AddrPortFrom(testPrefix.Addr(), 5353)
	tests := []struct {
		name string
		call func() error
		want []netCall
	}{
		{"EnsureBridge", func() error {
			resp, err := h.client.EnsureBridge(ctx, EnsureBridgeRequest{Name: testBridge, Address: testPrefix, MTU: 9000, DNSPort: 5353})
			if err == nil && !resp.Created {
				t.Errorf("got created=false, want the fake's true")
			}
			return err
		}, []netCall{
			{"EnsureBridge", []any{testBridge, testPrefix, 9000}},
			{"EnsureBaseRules", []any{testBridge, testPrefix, uint16(5353)}},
			{"SetIPForward", []any{true}},
		}},
		{"CreateTap pool", func() error {
			return h.client.CreateTap(ctx, CreateTapRequest{Name: "tap-pool-0", Bridge: testBridge})
		}, []netCall{{"CreateTap", []any{"tap-pool-0", testBridge, testMTU, h.ownerUID, h.ownerGID}}}},
		{"CreateTap vm", func() error {
			return h.client.CreateTap(ctx, CreateTapRequest{Name: "tap-vm-deadbeef", Bridge: testBridge})
		}, []netCall{{"CreateTap", []any{"tap-vm-deadbeef", testBridge, testMTU, h.ownerUID, h.ownerGID}}}},
		{"DeleteTap", func() error {
			return h.client.DeleteTap(ctx, DeleteTapRequest{Name: "tap-pool-999999"})
		}, []netCall{{"DeleteTap", []any{h.scope(), "tap-pool-999999"}}}},
		{"EnsureNAT", func() error {
			return h.client.EnsureNAT(ctx, EnsureNATRequest{GuestIP: guest, MAC: testGuestMAC, Tap: "tap-pool-2", Enable: true})
		}, []netCall{{"EnsureNAT", []any{h.scope(), guest, testGuestMAC, "tap-pool-2", true}}}},
		{"EnsureNAT off", func() error {
			return h.client.EnsureNAT(ctx, EnsureNATRequest{GuestIP: netip.MustParseAddr("172.30.99.2"), Tap: "tap-vm-0", Enable: false})
		}, []netCall{{"EnsureNAT", []any{h.scope(), netip.MustParseAddr("172.30.99.2"), "", "tap-vm-0", false}}}},
		{"ResolverRouting", func() error {
			_, err := h.client.ResolverRouting(ctx, ResolverRoutingRequest{Enable: true, Bridge: testBridge, Domain: "vm", DNS: dns})
			return err
		}, []netCall{{"Route", []any{testBridge, "vm", dns, true}}}},
		{"ResolverRouting off naming the domain", func() error {
			_, err := h.client.ResolverRouting(ctx, ResolverRoutingRequest{Enable: false, Bridge: testBridge, Domain: "vm"})
			return err
		}, []netCall{{"Route", []any{testBridge, "vm", netip.AddrPort{}, false}}}},
		{"ResolverRouting off", func() error {
			_, err := h.client.ResolverRouting(ctx, ResolverRoutingRequest{Enable: false, Bridge: testBridge})
			return err
		}, []netCall{{"Route", []any{testBridge, "", netip.AddrPort{}, false}}}},
		{"RemoveNetwork", func() error {
			return h.client.RemoveNetwork(ctx, RemoveNetworkRequest{Bridge: testBridge})
		}, []netCall{{"RemoveNetwork", []any{h.scope()}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.net.Reset()
			if err := tc.call(); err != nil {
				t.Fatalf("got %v, want success", err)
			}
			got := h.net.Calls()
			if fmtCalls(got) != fmtCalls(tc.want) {
				t.Errorf("got calls %s\nwant %s", fmtCalls(got), fmtCalls(tc.want))
			}
		})
	}
}

// jailSocket binds a unix socket at a jail's /run/<name> under the harness's jail
// base, as a jailed firecracker would, owned by uid; it returns the socket's path.
func jailSocket(t *testing.T, base, id, name string, uid int) string {
	t.Helper()
	run := filepath.Join(base, "firecracker", id, "root", "run")
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(run, name)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(sock, uid, -1); err != nil {
		t.Fatal(err)
	}
	return sock
}

// TestChownToOwner hands a jailed firecracker's sockets to the owner, and nothing
// else: not a regular file or a socket outside a jail's /run, not a socket of
// root's, not through a symlink.
func TestChownToOwner(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("chown to another gid needs root")
	}
	h := newHarness(t)
	base := JailBase(h.lay)
	api := jailSocket(t, base, "vm1", "firecracker.socket", h.ownerUID)
	vsock := jailSocket(t, base, "vm1", "vsock.sock", h.ownerUID)
	for _, p := range []string{api, vsock} {
		if err := h.client.ChownToOwner(context.Background(), ChownToOwnerRequest{Path: p}); err != nil {
			t.Fatalf("%s: got %v, want success", p, err)
		}
		if u, g := ownerOf(t, p); u != h.ownerUID || g != h.ownerGID {
			t.Errorf("%s: got owner %d:%d, want %d:%d", p, u, g, h.ownerUID, h.ownerGID)
		}
	}

	run := filepath.Dir(api)
	file := filepath.Join(run, "firecracker.log")
	mustWrite(t, file)
	strangers := jailSocket(t, base, "vm1", "stranger.sock", 12345)
	outside := filepath.Join(h.lay.RunDir, "vms", "x.sock")
	if err := os.MkdirAll(filepath.Dir(outside), 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: outside}); err != nil {
		t.Fatal(err)
	}
	mustSymlink(t, outside, filepath.Join(run, "link.sock"))
	if err := os.Mkdir(filepath.Join(run, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(run, "x", "y.sock"))
	for _, tc := range []struct{ name, path, want string }{
		{"a regular file in a jail's run", file, "only sockets"},
		{"a socket of another uid", strangers, "belongs to uid 12345"},
		{"a socket outside the jail base", outside, "not a jail's socket"},
		{"a symlink to a socket", filepath.Join(run, "link.sock"), "symlink"},
		{"the jail's run directory", run, "not a jail's socket"},
		{"one level too deep", filepath.Join(run, "x", "y.sock"), "not a jail's socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, beforeG := ownerOf(t, tc.path)
			err := h.client.ChownToOwner(context.Background(), ChownToOwnerRequest{Path: tc.path})
			if we := wantCode(t, err, CodeInvalid); !strings.Contains(we.Message, tc.want) {
				t.Errorf("got %q, want it to say %q", we.Message, tc.want)
			}
			if u, g := ownerOf(t, tc.path); u != before || g != beforeG {
				t.Errorf("owner changed to %d:%d, want %d:%d", u, g, before, beforeG)
			}
		})
	}
	if calls := h.net.Calls(); len(calls) != 0 {
		t.Errorf("ChownToOwner reached NetOps: %s", fmtCalls(calls))
	}
}

// TestChownBeneathRefusesSwappedPath plays the race the descriptor-based chown exists
// for: the path passes validation, then the owner swaps a symlink in (for the socket,
// or for the jail's run directory, which is the owner's) before the chown happens.
func TestChownBeneathRefusesSwappedPath(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to chown")
	}
	for _, tc := range []struct {
		name string
		swap func(t *testing.T, run, outside string)
	}{
		{"socket becomes a symlink", func(t *testing.T, run, outside string) {
			if err := os.Remove(filepath.Join(run, "firecracker.socket")); err != nil {
				t.Fatal(err)
			}
			mustSymlink(t, filepath.Join(outside, "firecracker.socket"), filepath.Join(run, "firecracker.socket"))
		}},
		{"run becomes a symlink", func(t *testing.T, run, outside string) {
			if err := os.RemoveAll(run); err != nil {
				t.Fatal(err)
			}
			mustSymlink(t, outside, run)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Short directories: socket paths must fit in 108 bytes.
			base, outside := shortTempDir(t), shortTempDir(t)
			sock := jailSocket(t, base, "vm1", "firecracker.socket", 1234)
			secret := jailSocket(t, outside, "x", "firecracker.socket", 1234)
			if err := os.Rename(secret, filepath.Join(outside, "firecracker.socket")); err != nil {
				t.Fatal(err)
			}
			secret = filepath.Join(outside, "firecracker.socket")
			v := validator{root: filepath.Dir(base), jailBase: base, bridge: testBridge, prefix: testPrefix, ownerUID: 1234}
			rel, e := v.chownToOwner(&ChownToOwnerRequest{Path: sock})
			if e != nil {
				t.Fatalf("validate: %v", e)
			}
			tc.swap(t, filepath.Dir(sock), outside)
			if err := chownBeneath(base, rel, 1234, 1234); err == nil {
				t.Fatal("chown through a swapped-in symlink succeeded, want a refusal")
			} else {
				t.Logf("refused: %v", err)
			}
			if u, g := ownerOf(t, secret); u != 1234 || g != 0 {
				t.Errorf("socket outside the jail changed owner to %d:%d, want 1234:0", u, g)
			}
		})
	}
}

// shortTempDir is a fresh root-owned directory directly under /tmp, removed at the
// end: t.TempDir's names are too long for the socket paths under it.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "bp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
