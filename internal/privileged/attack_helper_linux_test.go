package privileged_test

// Attacks on the helper's own trust: what it reads at start (config.toml,
// install.json), the binaries it runs as root, the files JailLaunch lends a jail,
// the resolver routing it applies for the whole host, and where it makes its
// socket. Each drives the real banger-helper as root for a created owner, makes the
// calls as that owner (attack_harness_linux_test.go), and checks the refusal and
// that the host is unchanged. The findings are issue 8's: 1 (config.toml chowned to
// the owner names a jailer script), 2 (binaries root runs), 4 (ResolverRouting for
// any domain), 5 (the socket made in the owner's run/), and the JailLaunch half of 2.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/privileged"
	"banger/internal/testutil"
)

// helperEnv is an attackEnv whose config.toml the test writes and whose helper it
// starts itself (or expects to refuse to start).
func helperEnv(t *testing.T) *attackEnv {
	t.Helper()
	testutil.RequireRoot(t, "useradd", "ip")
	t.Cleanup(testutil.Cleanup)
	e := newAttackUsersAndRoot(t)
	lay := e.lay
	e.sock = lay.HelperSocket()
	e.makeVictims(t)
	e.ns = testutil.NetNS(t)
	bin := copySelf(t, traversableTemp(t, "bt-atkbin-"))
	e.ownerDial = startDialer(t, bin, e.ownerUID, e.ownerGID)
	e.otherDial = startDialer(t, bin, e.otherUID, e.otherGID)
	return e
}

// writeConfig writes config.toml, root's and 0644, with the attack bridge and extra.
func (e *attackEnv) writeConfig(t *testing.T, extra string) {
	t.Helper()
	cfg := fmt.Sprintf("[network]\nbridge = %q\nbridge_cidr = %q\nmtu = %d\n%s", atkBridge, atkPrefix, atkMTU, extra)
	if err := os.WriteFile(e.lay.ConfigPath(), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(e.lay.ConfigPath(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// markerScript writes an executable script at p that, run by anyone, creates
// marker: the proof that root ran what the owner wrote.
func markerScript(t *testing.T, p, marker string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\nid -u > "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// helperRun runs the helper binary for the owner in the env's namespace until it
// exits or timeout passes; it returns its output and exit error (nil only if it was
// still running at the timeout, then it is stopped).
func (e *attackEnv) helperRun(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	bin := testutil.Binary(t, "banger-helper")
	all := append([]string{"netns", "exec", e.ns, bin, "--root", e.root}, args...)
	cmd := exec.Command("ip", all...)
	var out lockedOutput
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			err = errors.New("exited 0")
		}
		return out.String(), err
	case <-time.After(timeout):
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-done
		return out.String(), nil
	}
}

// lockedOutput collects a child's output while it runs.
type lockedOutput struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedOutput) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (e *attackEnv) ownerFlags() []string {
	return []string{"--owner-uid", strconv.Itoa(e.ownerUID), "--owner-gid", strconv.Itoa(e.ownerGID)}
}

// hostWatch is watch without a running helper; volatile are the helper's own
// directories, whose entries (its audit log, its socket) may come and go.
func (e *attackEnv) hostWatch(t *testing.T, volatile ...string) *testutil.HostState {
	t.Helper()
	return testutil.CaptureHost(t, testutil.Watch{
		Paths:    []string{e.root, e.victim},
		Volatile: volatile,
		PIDs:     []int{e.victimPID, e.ownerDial.pid, e.otherDial.pid},
		Netns:    e.ns,
	})
}

// TestAttackConfigOwnedByOwner is finding 1: with config.toml (or install.json)
// the owner's, the owner decides what root runs. The owner points vmm.jailer at its
// own script and waits for the helper to start: the helper must refuse to start,
// saying what to fix, and the script must never run.
func TestAttackConfigOwnedByOwner(t *testing.T) {
	e := helperEnv(t)
	script := filepath.Join(e.lay.StateDir, "evil-jailer")
	marker := filepath.Join(e.victim, "pwned")
	markerScript(t, script, marker)
	e.chownOwner(t, script)
	jail := fmt.Sprintf("\n[vmm]\njailer = %q\nfirecracker = %q\n", script, script)

	for _, tc := range []struct {
		name  string
		plant func(t *testing.T)
		flags []string
		want  []string
	}{
		{"config.toml the owner's", func(t *testing.T) {
			e.writeConfig(t, jail)
			e.chownOwner(t, e.lay.ConfigPath())
		}, e.ownerFlags(), []string{"refusing to start", "chown root:root " + e.lay.ConfigPath(), "chmod 644"}},
		{"config.toml group-writable", func(t *testing.T) {
			e.writeConfig(t, jail)
			if err := os.Chmod(e.lay.ConfigPath(), 0o664); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(e.lay.ConfigPath(), 0, e.ownerGID); err != nil {
				t.Fatal(err)
			}
		}, e.ownerFlags(), []string{"refusing to start", "writable by group or others", "chmod 644 " + e.lay.ConfigPath()}},
		{"config.toml a symlink to the owner's file", func(t *testing.T) {
			e.writeConfig(t, jail)
			own := filepath.Join(e.lay.StateDir, "config.toml")
			if err := os.Rename(e.lay.ConfigPath(), own); err != nil {
				t.Fatal(err)
			}
			e.chownOwner(t, own)
			if err := os.Symlink(own, e.lay.ConfigPath()); err != nil {
				t.Fatal(err)
			}
		}, e.ownerFlags(), []string{"refusing to start", "is a symlink"}},
		{"the root directory the owner's", func(t *testing.T) {
			// config.toml itself is root's, but the owner could rename it away and put
			// its own in place: the directory above it decides.
			e.writeConfig(t, jail)
			e.chownOwner(t, e.root)
			t.Cleanup(func() { _ = os.Chown(e.root, 0, 0) })
		}, e.ownerFlags(), []string{"refusing to start", "directory " + e.root + " belongs to uid", "chown root:root " + e.root}},
		{"install.json the owner's", func(t *testing.T) {
			e.writeConfig(t, "")
			if err := privileged.WriteInstallMetadata(e.lay.InstallMetadataPath(), privileged.InstallMetadata{OwnerUID: e.ownerUID, OwnerGID: e.ownerGID, Version: "test", Root: e.root}); err != nil {
				t.Fatal(err)
			}
			e.chownOwner(t, e.lay.InstallMetadataPath())
		}, nil, []string{"refusing to start", "chown root:root " + e.lay.InstallMetadataPath()}},
		{"install.json the owner's, owner from flags", func(t *testing.T) {
			e.writeConfig(t, "")
			if err := privileged.WriteInstallMetadata(e.lay.InstallMetadataPath(), privileged.InstallMetadata{OwnerUID: e.ownerUID, OwnerGID: e.ownerGID, Version: "test", Root: e.root}); err != nil {
				t.Fatal(err)
			}
			e.chownOwner(t, e.lay.InstallMetadataPath())
		}, e.ownerFlags(), []string{"refusing to start", "install.json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range []string{e.lay.ConfigPath(), e.lay.InstallMetadataPath()} {
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					t.Fatal(err)
				}
			}
			tc.plant(t)
			st := e.hostWatch(t)
			out, err := e.helperRun(t, 10*time.Second, tc.flags...)
			if err == nil {
				t.Fatalf("the helper started:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if _, err := os.Lstat(marker); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the owner's script ran (marker: %v)", err)
			}
			if _, err := os.Lstat(e.lay.HelperSocket()); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a socket was made by a helper that refused to start: %v", err)
			}
			st.AssertUnchanged(t)
		})
	}
}

// validLaunch is a JailLaunch the helper accepts when the VM's files exist: id's
// disk under state/disks/<id>/, a kernel under state/images/, its console log.
func (e *attackEnv) validLaunch(id string) privileged.JailLaunchRequest {
	return privileged.JailLaunchRequest{
		ID: id,
		Files: []privileged.JailFileSpec{
			{Src: filepath.Join(e.lay.ImagesDir(), "vmlinux"), Dst: privileged.JailDstKernel},
			{Src: filepath.Join(e.lay.DisksDir(), id, "root.img"), Dst: privileged.JailDstRootfs, Writable: true},
		},
		FirecrackerArgs: []string{"--api-sock", "/run/firecracker.socket"},
		ConsoleLog:      filepath.Join(e.lay.LogDir, "vms", id+".console.log"),
	}
}

// vmFiles writes the owner's files of VM id (and the shared kernel).
func (e *attackEnv) vmFiles(t *testing.T, id string) {
	t.Helper()
	e.ownerFile(t, filepath.Join(e.lay.ImagesDir(), "vmlinux"), 64)
	e.ownerFile(t, filepath.Join(e.lay.DisksDir(), id, "root.img"), 64)
	if err := os.MkdirAll(filepath.Join(e.lay.LogDir, "vms"), 0o750); err != nil {
		t.Fatal(err)
	}
	e.chownOwner(t, filepath.Join(e.lay.LogDir, "vms"))
}

// TestAttackUntrustedJailer is finding 1's second half and 2: config.toml is root's,
// but the binaries it names are not safe to run as root. The helper starts (its
// other ops are fine) and says why jail ops are unavailable; every JailLaunch is
// refused with that reason, the script never runs and no jail is built.
func TestAttackUntrustedJailer(t *testing.T) {
	e := helperEnv(t)
	marker := filepath.Join(e.victim, "pwned")
	ownerScript := filepath.Join(e.lay.StateDir, "bin", "jailer")
	markerScript(t, ownerScript, marker)
	e.chownOwner(t, filepath.Dir(ownerScript), ownerScript)
	// A root-owned script in the owner's directory: the owner swaps it at will.
	rootInOwnerDir := filepath.Join(e.lay.StateDir, "bin", "root-jailer")
	markerScript(t, rootInOwnerDir, marker)
	// A root-owned, other-writable one in a root directory.
	rootDir := traversableTemp(t, "bt-atkjail-")
	writable := filepath.Join(rootDir, "jailer")
	markerScript(t, writable, marker)
	if err := os.Chmod(writable, 0o777); err != nil {
		t.Fatal(err)
	}
	// A good jailer with a firecracker of the owner's.
	good := filepath.Join(rootDir, "good-jailer")
	markerScript(t, good, marker)
	e.vmFiles(t, "vm1")

	for _, tc := range []struct {
		name, jailer, firecracker, want string
	}{
		{"jailer of the owner's", ownerScript, "/usr/bin/true", "belongs to uid " + strconv.Itoa(e.ownerUID)},
		{"root's jailer in the owner's directory", rootInOwnerDir, "/usr/bin/true", "directory " + e.lay.StateDir + " belongs to uid"},
		{"jailer writable by others", writable, "/usr/bin/true", "writable by group or others"},
		{"firecracker of the owner's", good, ownerScript, "firecracker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.writeConfig(t, fmt.Sprintf("\n[vmm]\njailer = %q\nfirecracker = %q\n", tc.jailer, tc.firecracker))
			// The helper's own directories, root's, which it fills at start.
			for _, d := range []string{e.lay.SystemDir(), e.lay.HelperSocketDir()} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			st := e.hostWatch(t, e.lay.SystemDir(), e.lay.HelperSocketDir())
			done := make(chan struct{})
			var out string
			var runErr error
			go func() {
				defer close(done)
				out, runErr = e.helperRun(t, 8*time.Second, e.ownerFlags()...)
			}()
			r := e.waitServing(t, done)
			if r.Status == http.StatusOK {
				jr := e.call(t, privileged.OpJailLaunch, e.validLaunch("vm1"))
				refused(t, "JailLaunch with "+tc.name, jr, privileged.CodeFailed)
				if !strings.Contains(jr.Err.Message, "jail ops unavailable") || !strings.Contains(jr.Err.Message, tc.want) {
					t.Errorf("refusal %q does not say %q", jr.Err.Message, tc.want)
				}
			}
			<-done
			if runErr != nil {
				t.Fatalf("the helper did not keep serving: %v\n%s", runErr, out)
			}
			if !strings.Contains(out, "jail ops unavailable") {
				t.Errorf("the helper's log does not say why jail ops are unavailable:\n%s", out)
			}
			if _, err := os.Lstat(marker); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("root ran the untrusted jailer (marker: %v)", err)
			}
			st.AssertUnchanged(t)
		})
	}
}

// waitServing waits until the helper answers the owner's Status, or it exited.
func (e *attackEnv) waitServing(t *testing.T, exited <-chan struct{}) reply {
	t.Helper()
	deadline := time.Now().Add(6 * time.Second)
	for {
		r := e.callAs(e.ownerDial, privileged.OpStatus, []byte("{}"))
		if r.Status == http.StatusOK {
			return r
		}
		select {
		case <-exited:
			return r
		default:
		}
		if time.Now().After(deadline) {
			t.Errorf("helper not serving: %s", r)
			return r
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startTrusted starts the helper with a trusted (root's) jailer that fails: a launch
// that passed every check would build the jail and run it, which the watched state
// would show.
func (e *attackEnv) startTrusted(t *testing.T, extra string) {
	t.Helper()
	e.writeConfig(t, "\n[vmm]\njailer = \"/usr/bin/false\"\nfirecracker = \"/usr/bin/true\"\n"+extra)
	e.startHelper(t)
}

// TestAttackJailLaunchRootFiles is finding 2 (JailLaunch): root's files, another
// user's and the victims' as sources and as console logs, directly, by hard link
// and by symlink. Each is refused and no owner, mode or content changes: before the
// fix, install.json became the owner's and helper-audit.log was wiped.
func TestAttackJailLaunchRootFiles(t *testing.T) {
	e := helperEnv(t)
	e.startTrusted(t, "")
	e.vmFiles(t, "vm1")
	if err := privileged.WriteInstallMetadata(e.lay.InstallMetadataPath(), privileged.InstallMetadata{OwnerUID: e.ownerUID, OwnerGID: e.ownerGID, Version: "test", Root: e.root}); err != nil {
		t.Fatal(err)
	}
	shadow := filepath.Join(e.victim, "shadow")
	disks := filepath.Join(e.lay.DisksDir(), "vm1")
	vms := filepath.Join(e.lay.LogDir, "vms")
	launch := func(mut func(r *privileged.JailLaunchRequest)) privileged.JailLaunchRequest {
		r := e.validLaunch("vm1")
		mut(&r)
		return r
	}
	src := func(i int, p string) privileged.JailLaunchRequest {
		return launch(func(r *privileged.JailLaunchRequest) { r.Files[i].Src = p })
	}
	console := func(p string) privileged.JailLaunchRequest {
		return launch(func(r *privileged.JailLaunchRequest) { r.ConsoleLog = p })
	}
	try := func(t *testing.T, what string, req privileged.JailLaunchRequest) {
		t.Helper()
		refused(t, "JailLaunch "+what, e.call(t, privileged.OpJailLaunch, req), privileged.CodeInvalid)
		if _, err := os.Lstat(privileged.JailBase(e.lay)); err == nil {
			t.Errorf("JailLaunch %s built a jail", what)
		}
	}
	e.attack(t, "root's files under the root as sources", nil, func(t *testing.T) {
		for _, p := range []string{e.lay.InstallMetadataPath(), e.lay.ConfigPath(), e.lay.AuditLog()} {
			try(t, "kernel "+p, src(0, p))
			try(t, "root disk "+p, src(1, p))
		}
	})
	e.attack(t, "root's files hard-linked into the VM's disk directory", func(t *testing.T) {
		// (Not the audit log: it grows with every call, through every name.)
		for name, target := range map[string]string{"install.img": e.lay.InstallMetadataPath(), "config.img": e.lay.ConfigPath(), "shadow.img": shadow} {
			if err := os.Link(target, filepath.Join(disks, name)); err != nil {
				t.Fatal(err)
			}
		}
	}, func(t *testing.T) {
		for _, name := range []string{"install.img", "config.img", "shadow.img"} {
			try(t, "root disk "+name, src(1, filepath.Join(disks, name)))
		}
	})
	e.attack(t, "symlinks from the VM's files to root's", func(t *testing.T) {
		e.ownerSymlink(t, e.lay.InstallMetadataPath(), filepath.Join(disks, "link.img"))
		e.ownerSymlink(t, shadow, filepath.Join(e.lay.ImagesDir(), "shadow-link"))
	}, func(t *testing.T) {
		try(t, "root disk through a symlink", src(1, filepath.Join(disks, "link.img")))
		try(t, "kernel through a symlink", src(0, filepath.Join(e.lay.ImagesDir(), "shadow-link")))
	})
	e.attack(t, "another user's file in the images directory", func(t *testing.T) {
		p := filepath.Join(e.lay.ImagesDir(), "theirs")
		if err := os.WriteFile(p, []byte("another user's"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, e.otherUID, e.otherGID); err != nil {
			t.Fatal(err)
		}
	}, func(t *testing.T) {
		try(t, "another user's kernel", src(0, filepath.Join(e.lay.ImagesDir(), "theirs")))
	})
	e.attack(t, "console logs that are root's or the victims'", func(t *testing.T) {
		if err := os.Link(e.lay.InstallMetadataPath(), filepath.Join(vms, "vm1.console.log")); err != nil {
			t.Fatal(err)
		}
	}, func(t *testing.T) {
		try(t, "console log hard-linked to install.json", e.validLaunch("vm1"))
		try(t, "console log the audit log", console(e.lay.AuditLog()))
		try(t, "console log install.json", console(e.lay.InstallMetadataPath()))
		try(t, "console log a victim", console(shadow))
		try(t, "console log directly under logs", console(filepath.Join(e.lay.LogDir, "vm1.console.log")))
	})
	e.attack(t, "a console log symlinked to a victim", func(t *testing.T) {
		if err := os.Remove(filepath.Join(vms, "vm1.console.log")); err != nil {
			t.Fatal(err)
		}
		e.ownerSymlink(t, shadow, filepath.Join(vms, "vm1.console.log"))
	}, func(t *testing.T) {
		try(t, "console log through a symlink", e.validLaunch("vm1"))
	})
	e.attack(t, "a root-owned console log the helper did not make", func(t *testing.T) {
		if err := os.Remove(filepath.Join(vms, "vm1.console.log")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vms, "vm1.console.log"), []byte("root's, keep\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}, func(t *testing.T) {
		try(t, "root's console log", e.validLaunch("vm1"))
	})
	e.attack(t, "another VM's files", func(t *testing.T) {
		e.ownerFile(t, filepath.Join(e.lay.DisksDir(), "vm2", "root.img"), 64)
	}, func(t *testing.T) {
		try(t, "another VM's disk", src(1, filepath.Join(e.lay.DisksDir(), "vm2", "root.img")))
		try(t, "another VM's console log", console(filepath.Join(vms, "vm2.console.log")))
	})
}

// TestAttackResolverRouting is finding 4: ResolverRouting is applied for the whole
// host, so the owner asks it to send every user's *.com lookups, or the VM domain's,
// to a server it runs. Only the configured dns.domain to the configured dns.listen
// is accepted; nothing reaches the resolver (Status still says it was never asked).
func TestAttackResolverRouting(t *testing.T) {
	e := helperEnv(t)
	e.startTrusted(t, "\n[dns]\ndomain = \"vm\"\nlisten = \"10.213.9.1:5353\"\n")
	e.attack(t, "routing another domain or to another server", nil, func(t *testing.T) {
		for _, c := range []privileged.ResolverRoutingRequest{
			{Enable: true, Bridge: atkBridge, Domain: "com", DNS: netip.MustParseAddrPort("10.213.9.1:5353")},
			{Enable: true, Bridge: atkBridge, Domain: "vm", DNS: netip.MustParseAddrPort("127.0.0.1:9999")},
			{Enable: true, Bridge: atkBridge, Domain: "com", DNS: netip.MustParseAddrPort("127.0.0.1:9999")},
			{Enable: true, Bridge: atkBridge, Domain: "vm", DNS: netip.MustParseAddrPort("127.0.0.1:5353")},
			{Enable: true, Bridge: atkBridge, Domain: "vm", DNS: netip.MustParseAddrPort("10.213.9.1:53")},
			{Enable: true, Bridge: atkBridge, Domain: "internal", DNS: netip.MustParseAddrPort("10.213.9.1:5353")},
			{Enable: true, Bridge: atkBridge, Domain: "a.vm", DNS: netip.MustParseAddrPort("10.213.9.1:5353")},
			{Enable: false, Bridge: atkBridge, Domain: "com"},
		} {
			refused(t, fmt.Sprintf("ResolverRouting %s → %s (enable %v)", c.Domain, c.DNS, c.Enable), e.call(t, privileged.OpResolverRouting, c), privileged.CodeInvalid)
		}
		r := e.call(t, privileged.OpStatus, struct{}{})
		var st privileged.StatusResponse
		if err := json.Unmarshal(r.Body, &st); err != nil || !strings.HasPrefix(st.ResolverRouting, "unknown") {
			t.Errorf("resolver routing after the refusals: %q (%v), want it never requested", st.ResolverRouting, err)
		}
	})
}

// TestAttackSocketDirRace is finding 5: the helper used to bind its socket in the
// owner's run/ and chmod and chown it by path there, so the owner, swapping
// entries of run/ while it started, could have root chmod or chown any path. The
// owner swaps every name it can in run/ for symlinks to the victims, as fast as it
// can, while the helper starts, again and again: the helper's socket is made in
// ROOT/helper, and no victim, nor anything in run/, changes owner or mode.
func TestAttackSocketDirRace(t *testing.T) {
	e := helperEnv(t)
	e.writeConfig(t, "")
	shadow, passwd := filepath.Join(e.victim, "shadow"), filepath.Join(e.victim, "passwd")
	// The old helper bound "s" in a fresh directory of run/ and chmod-ed and chowned
	// run/.helper-*/s by path: a directory swapped for a link to the victims between
	// the bind and the chmod handed victim/s to the owner.
	sVictim := filepath.Join(e.victim, "s")
	if err := os.WriteFile(sVictim, []byte("root's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		names := []string{"helper.sock", ".helper-x", ".helper-1", "s"}
		for i := 0; ctx.Err() == nil; i++ {
			for _, n := range names {
				p := filepath.Join(e.lay.RunDir, n)
				_ = os.Remove(p)
				target := shadow
				if i%2 == 1 {
					target = passwd
				}
				if os.Symlink(target, p) == nil {
					_ = os.Lchown(p, e.ownerUID, e.ownerGID)
				}
			}
			// Any directory the helper might make in run/ becomes a link to the victims.
			entries, _ := os.ReadDir(e.lay.RunDir)
			for _, en := range entries {
				if en.IsDir() && en.Name() != "vms" {
					p := filepath.Join(e.lay.RunDir, en.Name())
					_ = os.RemoveAll(p)
					_ = os.Symlink(e.victim, p)
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	watchVictims := testutil.CaptureHost(t, testutil.Watch{Paths: []string{e.victim}, PIDs: []int{e.victimPID}})
	for i := 0; i < 5; i++ {
		done := make(chan struct{})
		var out string
		var runErr error
		go func() {
			defer close(done)
			out, runErr = e.helperRun(t, 3*time.Second, e.ownerFlags()...)
		}()
		r := e.waitServing(t, done)
		<-done
		if r.Status != http.StatusOK || runErr != nil {
			t.Fatalf("start %d: the helper did not serve its owner while run/ was being swapped: %s, %v\n%s", i, r, runErr, out)
		}
	}
	cancel()
	wg.Wait()
	watchVictims.AssertUnchanged(t)
	// Nothing the helper made is in run/, and nothing there became root's.
	entries, err := os.ReadDir(e.lay.RunDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		fi, err := os.Lstat(filepath.Join(e.lay.RunDir, en.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != e.ownerUID || fi.Mode().Type() == fs.ModeSocket {
			t.Errorf("run/%s: %v uid %d: the helper made or changed something in the owner's run/", en.Name(), fi.Mode(), st.Uid)
		}
	}
	for _, v := range []string{shadow, passwd, sVictim} {
		fi, err := os.Stat(v)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s now belongs to %d:%d", v, st.Uid, st.Gid)
		}
	}
}
