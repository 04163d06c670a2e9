package privileged_test

// The attack suite's harness: the real banger-helper, run as root inside a network
// namespace the test creates, for a created unprivileged owner; and connections to
// it made by processes that really run as that owner (or as a second user), so the
// helper's SO_PEERCRED check sees exactly what it would see from a hostile bangerd.
//
// How a connection "as the owner" is made: the test binary is copied where the
// owner can execute it and re-executed with dialerEnv set, as the owner (setuid,
// setgid, no supplementary groups). That child, the dialer, stays alive for the
// whole test; each time the test asks, it connect(2)s to the path it is sent and
// passes the connected descriptor back over a socketpair (SCM_RIGHTS). The kernel
// records the peer credentials at connect time, so the helper sees the owner's
// uid, gid and the dialer's (live) pid on every such connection, whatever bytes the
// test then writes on it: the same power any process of the owner has. The test
// itself (root) plays the owner's filesystem moves (plants, symlink flips) in
// directories the owner owns, which the owner could do as well.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/blockdev"
	"banger/internal/layout"
	"banger/internal/privileged"
	"banger/internal/testutil"
)

// dialerEnv turns the test binary into the dialer (see the file comment): its
// value is unused beyond being set; the control socket is descriptor 3.
const dialerEnv = "BANGER_ATTACK_DIALER"

func init() {
	if os.Getenv(dialerEnv) != "" {
		os.Exit(dialerMain(3))
	}
}

// dialerMain serves connection requests on the control socket ctl: each message is
// a socket path; the answer is "o" with the connected descriptor, or "e" and the
// error. It returns when the control socket closes (the test ended).
func dialerMain(ctl int) int {
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(ctl, buf)
		if err != nil || n == 0 {
			return 0
		}
		path := string(buf[:n])
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
			if err != nil {
				unix.Close(fd)
			}
		}
		if err != nil {
			if unix.Sendmsg(ctl, []byte("e"+err.Error()), nil, nil, 0) != nil {
				return 1
			}
			continue
		}
		err = unix.Sendmsg(ctl, []byte("o"), unix.UnixRights(fd), nil, 0)
		unix.Close(fd)
		if err != nil {
			return 1
		}
	}
}

// peerDialer makes connections as one user: see dialerMain.
type peerDialer struct {
	uid, gid int
	pid      int // the dialer's pid: the peer pid the helper sees

	mu  sync.Mutex // guards ctl: one request and answer at a time
	ctl *os.File
}

// startDialer runs bin (a copy of this test binary) as uid:gid in dialer mode,
// checks it really runs as that user with no supplementary groups, and stops it
// when the test ends.
func startDialer(t testing.TB, bin string, uid, gid int) *peerDialer {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "dialer-ctl"), os.NewFile(uintptr(fds[1]), "dialer-ctl-child")
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = []string{dialerEnv + "=1", "PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	cmd.ExtraFiles = []*os.File{theirs} // descriptor 3
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the dialer as uid %d: %v", uid, err)
	}
	theirs.Close()
	t.Cleanup(func() {
		ours.Close() // the dialer's read returns 0 and it exits
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	d := &peerDialer{uid: uid, gid: gid, pid: cmd.Process.Pid, ctl: ours}
	d.checkCredentials(t)
	return d
}

// checkCredentials reads the dialer's /proc status: every uid and gid must be the
// user's and it must hold no supplementary group (root's group would be a lie).
func (d *peerDialer) checkCredentials(t testing.TB) {
	t.Helper()
	// The credentials are set between fork and exec; the first request, answered
	// after exec, proves the child is the test binary in dialer mode.
	if c, err := d.dial("/nonexistent/" + testutil.RandHex(4)); err == nil {
		c.Close()
		t.Fatal("dialer connected to a path that does not exist")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.pid))
	if err != nil {
		t.Fatal(err)
	}
	wantUID := fmt.Sprintf("%d\t%d\t%d\t%d", d.uid, d.uid, d.uid, d.uid)
	wantGID := fmt.Sprintf("%d\t%d\t%d\t%d", d.gid, d.gid, d.gid, d.gid)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch {
		case k == "Uid" && v != wantUID, k == "Gid" && v != wantGID, k == "Groups" && v != "":
			t.Fatalf("dialer pid %d: %s: %q; want uid %d gid %d and no supplementary groups", d.pid, k, v, d.uid, d.gid)
		}
	}
}

// dial connects to path as the dialer's user.
func (d *peerDialer) dial(path string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.ctl.Write([]byte(path)); err != nil {
		return nil, fmt.Errorf("dialer: %w", err)
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(d.ctl.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("dialer: %w", err)
	}
	if n == 0 {
		return nil, errors.New("dialer: exited")
	}
	if buf[0] == 'e' {
		return nil, fmt.Errorf("connect %s as uid %d: %s", path, d.uid, buf[1:n])
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("dialer: no descriptor in the answer (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("dialer: bad descriptor message (%v)", err)
	}
	f := os.NewFile(uintptr(fds[0]), "helper-conn")
	defer f.Close()
	return net.FileConn(f)
}

// The helper's configuration in every attack environment.
const (
	atkBridge = "bgatk0"
	atkMTU    = 1400
)

var (
	atkPrefix = netip.MustParsePrefix("10.213.9.1/24")
	atkGuest  = netip.MustParseAddr("10.213.9.5")
	// atkGuestMAC is the guest's MAC, which EnsureNAT pins its tap to.
	atkGuestMAC = "02:42:0a:d5:09:05"
)

// attackEnv is one real helper under attack, with everything an attack aims at.
type attackEnv struct {
	lay    layout.Layout
	root   string
	sock   string // the helper's socket
	ns     string // the helper's network namespace
	helper int    // the helper's pid
	log    string // the helper's stderr (outside the root: not part of the watched state)

	owner, other       *user.User
	ownerUID, ownerGID int
	otherUID, otherGID int
	ownerDial          *peerDialer
	otherDial          *peerDialer

	// victim is a root-owned directory outside the root holding files that stand
	// for /etc/shadow and friends: shadow (0600), passwd (0644), disk.img (1 MiB,
	// 0600), etc/ (a directory). Attacks aim at them instead of the real ones.
	victim string
	// victimPID is a root process that must survive every attack.
	victimPID int
}

// newAttackEnv builds the environment: users, root, victims, the helper in a fresh
// netns with its bridge, a tap and a guest's NAT set up by the owner (the state the
// net attacks must not disturb), and the two dialers.
func newAttackEnv(t *testing.T) *attackEnv {
	t.Helper()
	testutil.RequireRoot(t, "nft", "useradd", "mknod")
	// Registered first so it runs last, after the helper has stopped: the binaries
	// testutil.Binary built go with this test.
	t.Cleanup(testutil.Cleanup)
	e := newAttackUsersAndRoot(t)
	lay := e.lay
	// config.toml is root's. The jailer is a root-owned binary that fails: a
	// launch that got past every check would still build the jail (and do its
	// damage) before the jailer runs, which is what the watched state catches.
	cfg := fmt.Sprintf("[network]\nbridge = %q\nbridge_cidr = %q\nmtu = %d\n\n[vmm]\njailer = \"/usr/bin/false\"\nfirecracker = \"/usr/bin/true\"\n",
		atkBridge, atkPrefix, atkMTU)
	if err := os.WriteFile(lay.ConfigPath(), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.makeVictims(t)
	// Whatever a failed attack bound stays bound after the files go: unbind it.
	t.Cleanup(func() {
		loops, _ := blockdev.LoopList(context.Background())
		for _, dir := range []string{e.root, e.victim} {
			for _, l := range blockdev.LoopsUnder(loops, dir) {
				_ = blockdev.LoopDetach(context.Background(), l.Device)
			}
		}
	})
	e.ns = testutil.NetNS(t)
	e.makeVictimNet(t)

	binDir := traversableTemp(t, "bt-atkbin-")
	bin := copySelf(t, binDir)
	e.ownerDial = startDialer(t, bin, e.ownerUID, e.ownerGID)
	e.otherDial = startDialer(t, bin, e.otherUID, e.otherGID)
	e.startHelper(t)
	e.setupNetwork(t)
	e.checkCallsAreTheOwners(t)
	return e
}

// checkCallsAreTheOwners reads the helper's audit log: every call so far must have
// come, by the kernel's SO_PEERCRED as the helper read it, from the owner's uid and
// the owner's dialer process; else the attacks below would not be the owner's.
func (e *attackEnv) checkCallsAreTheOwners(t *testing.T) {
	t.Helper()
	data, err := os.ReadFile(e.lay.AuditLog())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) < 3 {
		t.Fatalf("audit log has %d lines after the setup calls, want at least 3:\n%s", len(lines), data)
	}
	for _, l := range lines {
		var rec struct {
			PeerUID int `json:"peer_uid"`
			PeerPID int `json:"peer_pid"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		if rec.PeerUID != e.ownerUID || rec.PeerPID != e.ownerDial.pid {
			t.Fatalf("audit line %s: want peer uid %d, pid %d (the owner's dialer)", l, e.ownerUID, e.ownerDial.pid)
		}
	}
}

func ids(t testing.TB, u *user.User) (int, int) {
	t.Helper()
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		t.Fatal(err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	return uid, gid
}

// traversableTemp is a fresh directory under /tmp that every user can traverse,
// removed when the test ends.
func traversableTemp(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copySelf copies this test binary into dir, executable by all.
func copySelf(t testing.TB, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	p := filepath.Join(dir, "attack.test")
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *attackEnv) makeVictims(t *testing.T) {
	t.Helper()
	// On the root's filesystem (/tmp), so that hard links to the victims can be made
	// inside the root.
	e.victim = traversableTemp(t, "bt-victim-")
	for name, f := range map[string]struct {
		data string
		mode os.FileMode
	}{
		"shadow":   {"root:$6$secret:19000:0:99999:7:::\n", 0o600},
		"passwd":   {"root:x:0:0:root:/root:/bin/bash\n", 0o644},
		"disk.img": {strings.Repeat("root's disk\n", 1<<20/12+1)[:1<<20], 0o600},
	} {
		p := filepath.Join(e.victim, name)
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(e.victim, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.victim, "etc", "sudoers"), []byte("root ALL=(ALL) ALL\n"), 0o440); err != nil {
		t.Fatal(err)
	}
	sleep := exec.Command("sleep", "3600")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleep.Process.Kill(); _ = sleep.Wait() })
	e.victimPID = sleep.Process.Pid
}

// Interfaces in the helper's namespace that are not banger's.
const (
	victimBridge = "brvictim"   // a host bridge with an address, like docker0
	victimVeth   = "vethvictim" // an ordinary interface
	victimTap    = "tapvictim"  // a tap of another user, with a non-banger name
)

// Interfaces in the helper's namespace named like banger's taps that are not.
const (
	foreignPoolTap    = "tap-pool-7"   // a tap of the other user, on no bridge
	ownerOffBridgeTap = "tap-vm-dead1" // the owner's tap, on the victim bridge
	vethPoolName      = "tap-pool-8"   // not a tap at all
)

var victimBridgeAddr = "10.77.0.1/24"

func (e *attackEnv) makeVictimNet(t *testing.T) {
	t.Helper()
	e.nsRun(t, "ip", "link", "add", victimBridge, "type", "bridge")
	e.nsRun(t, "ip", "addr", "add", victimBridgeAddr, "dev", victimBridge)
	e.nsRun(t, "ip", "link", "set", victimBridge, "up")
	e.nsRun(t, "ip", "link", "add", victimVeth, "type", "veth", "peer", "name", victimVeth+"p")
	e.nsRun(t, "ip", "tuntap", "add", "dev", victimTap, "mode", "tap", "user", strconv.Itoa(e.otherUID))
	e.nsRun(t, "ip", "link", "set", victimTap, "master", victimBridge)
	// Interfaces with banger's tap names that are not banger's: another user's tap
	// off banger's bridge, a tap of the owner's on the victim bridge, a veth.
	e.nsRun(t, "ip", "tuntap", "add", "dev", foreignPoolTap, "mode", "tap", "user", strconv.Itoa(e.otherUID))
	e.nsRun(t, "ip", "tuntap", "add", "dev", ownerOffBridgeTap, "mode", "tap", "user", strconv.Itoa(e.ownerUID))
	e.nsRun(t, "ip", "link", "set", ownerOffBridgeTap, "master", victimBridge)
	e.nsRun(t, "ip", "link", "add", vethPoolName, "type", "veth", "peer", "name", "vethpoolp")
	// Someone else's rules, which banger must leave alone.
	e.nsRun(t, "nft", "add", "table", "inet", "victim")
	e.nsRun(t, "nft", "add", "chain", "inet", "victim", "input", "{ type filter hook input priority 0; policy accept; }")
	e.nsRun(t, "nft", "add", "rule", "inet", "victim", "input", "tcp", "dport", "22", "accept")
}

func (e *attackEnv) nsRun(t testing.TB, args ...string) string {
	t.Helper()
	return testutil.Run(t, "ip", append([]string{"netns", "exec", e.ns}, args...)...)
}

// newAttackUsersAndRoot creates the owner and a second user and a root prepared
// for the owner, as `banger system run` would.
func newAttackUsersAndRoot(t *testing.T) *attackEnv {
	t.Helper()
	e := &attackEnv{owner: testutil.User(t), other: testutil.User(t)}
	e.ownerUID, e.ownerGID = ids(t, e.owner)
	e.otherUID, e.otherGID = ids(t, e.other)
	e.root = testutil.Root(t)
	lay, err := layout.New(e.root)
	if err != nil {
		t.Fatal(err)
	}
	e.lay = lay
	if err := lay.Create(e.ownerUID, e.ownerGID); err != nil {
		t.Fatal(err)
	}
	return e
}

// runHelperInNS starts the helper binary bin as root in ns for root and owner
// uid:gid, its output in logPath; it is stopped (SIGTERM, then SIGKILL) when the test
// ends, and its log shown if the test failed. exited closes when it ends.
func runHelperInNS(t *testing.T, ns, bin, root string, uid, gid int, logPath string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "--root", root,
		"--owner-uid", strconv.Itoa(uid), "--owner-gid", strconv.Itoa(gid))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("helper log (%s):\n%s", root, out)
		}
	})
	return cmd, exited
}

// startHelper runs the real banger-helper as root in the namespace for the owner and
// waits until it answers the owner.
func (e *attackEnv) startHelper(t *testing.T) {
	t.Helper()
	bin := testutil.Binary(t, "banger-helper")
	e.log = filepath.Join(t.TempDir(), "helper.log")
	cmd, exited := runHelperInNS(t, e.ns, bin, e.root, e.ownerUID, e.ownerGID, e.log)
	e.sock = e.lay.HelperSocket()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st privileged.StatusResponse
		r := e.callAs(e.ownerDial, privileged.OpStatus, []byte("{}"))
		if r.Status == http.StatusOK && json.Unmarshal(r.Body, &st) == nil {
			if st.PID != cmd.Process.Pid || st.OwnerUID != e.ownerUID {
				t.Fatalf("helper status %+v: want pid %d (ip netns exec execs it) and owner %d", st, cmd.Process.Pid, e.ownerUID)
			}
			e.helper = st.PID
			return
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(e.log)
			t.Fatalf("banger-helper exited before answering (%s):\n%s", r, out)
		default:
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(e.log)
			t.Fatalf("banger-helper not ready: %s\n%s", r, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// setupNetwork makes, as the owner, the state a running banger has: the bridge,
// banger's table, one tap and one guest's NAT.
func (e *attackEnv) setupNetwork(t *testing.T) {
	t.Helper()
	for _, c := range []struct {
		op  string
		req any
	}{
		{privileged.OpEnsureBridge, privileged.EnsureBridgeRequest{Name: atkBridge, Address: atkPrefix, MTU: atkMTU, DNSPort: 5353}},
		{privileged.OpCreateTap, privileged.CreateTapRequest{Name: "tap-pool-0", Bridge: atkBridge}},
		{privileged.OpEnsureNAT, privileged.EnsureNATRequest{GuestIP: atkGuest, MAC: atkGuestMAC, Tap: "tap-pool-0", Enable: true}},
	} {
		if r := e.call(t, c.op, c.req); r.Status != http.StatusOK {
			t.Fatalf("setup %s as the owner: %s", c.op, r)
		}
	}
}

// reply is one answer from the helper.
type reply struct {
	Status int
	Body   []byte
	Err    privileged.Error // decoded when Status is not 200
	Trans  error            // a transport failure (no answer)
}

func (r reply) String() string {
	if r.Trans != nil {
		return "transport error: " + r.Trans.Error()
	}
	return fmt.Sprintf("%d %s", r.Status, bytes.TrimSpace(r.Body))
}

// httpClient sends requests over connections d makes to the helper's socket.
func (e *attackEnv) httpClient(d *peerDialer) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:       func(context.Context, string, string) (net.Conn, error) { return d.dial(e.sock) },
			DisableKeepAlives: true,
		},
		Timeout: 90 * time.Second,
	}
}

// callAs POSTs body to op as d's user.
func (e *attackEnv) callAs(d *peerDialer, op string, body []byte) reply {
	return e.requestAs(d, http.MethodPost, "/v1/op/"+op, body)
}

func (e *attackEnv) requestAs(d *peerDialer, method, path string, body []byte) reply {
	req, err := http.NewRequest(method, "http://banger-helper"+path, bytes.NewReader(body))
	if err != nil {
		return reply{Trans: err}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.httpClient(d).Do(req)
	if err != nil {
		return reply{Trans: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return reply{Trans: err}
	}
	r := reply{Status: resp.StatusCode, Body: data}
	if r.Status != http.StatusOK {
		_ = json.Unmarshal(data, &r.Err)
	}
	return r
}

// call sends req (marshalled) to op as the owner.
func (e *attackEnv) call(t testing.TB, op string, req any) reply {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return e.callAs(e.ownerDial, op, body)
}

// refused fails t unless r is a refusal with one of codes (any code when none).
func refused(t testing.TB, what string, r reply, codes ...string) {
	t.Helper()
	if r.Trans != nil {
		t.Errorf("%s: no answer (%v), want a refusal", what, r.Trans)
		return
	}
	if r.Status == http.StatusOK {
		t.Errorf("%s: ACCEPTED (%s), want a refusal", what, r)
		return
	}
	if r.Err.Code == "" || r.Err.Message == "" {
		t.Errorf("%s: answer %s is not a helper Error", what, r)
		return
	}
	for _, c := range codes {
		if r.Err.Code == c {
			return
		}
	}
	if len(codes) > 0 {
		t.Errorf("%s: code %q (%s), want one of %v", what, r.Err.Code, r.Err.Message, codes)
	}
}

// watch captures everything an attack may damage: the whole root, the victims, the
// helper's namespace, the helper, the dialers and the victim process. The audit log
// and the paths in volatile (where a legitimate call the attack makes changes
// things) may change content; their entries' type, mode and owner are still checked.
func (e *attackEnv) watch(t testing.TB, volatile ...string) *testutil.HostState {
	t.Helper()
	return testutil.CaptureHost(t, testutil.Watch{
		Paths:    []string{e.root, e.victim},
		Volatile: append([]string{e.lay.AuditLog()}, volatile...),
		PIDs:     []int{e.helper, e.victimPID, e.ownerDial.pid, e.otherDial.pid},
		Netns:    e.ns,
	})
}

// stillServes fails t unless the helper still answers the owner.
func (e *attackEnv) stillServes(t testing.TB) {
	t.Helper()
	if r := e.callAs(e.ownerDial, privileged.OpStatus, []byte("{}")); r.Status != http.StatusOK {
		t.Errorf("the helper no longer serves its owner: %s", r)
	}
}

// attack runs one attack as a subtest: plant (the owner's preparations, which are
// part of the captured state: a planted hard link chowned by the helper shows up),
// capture, act (which asserts the refusals), then the host must be unchanged and the
// helper still serving its owner. plant may be nil.
func (e *attackEnv) attack(t *testing.T, name string, plant, act func(t *testing.T)) {
	t.Helper()
	e.attackWith(t, name, nil, plant, act)
}

// attackWith is attack where the paths in volatile may legitimately change (see
// watch).
func (e *attackEnv) attackWith(t *testing.T, name string, volatile []string, plant, act func(t *testing.T)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		if plant != nil {
			plant(t)
		}
		st := e.watch(t, volatile...)
		act(t)
		st.AssertUnchanged(t)
		e.stillServes(t)
	})
}

// ownerFile writes a file owned by the owner (as the owner would make it).
func (e *attackEnv) ownerFile(t testing.TB, p string, size int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, bytes.Repeat([]byte{'o'}, size), 0o600); err != nil {
		t.Fatal(err)
	}
	e.chownOwner(t, filepath.Dir(p), p)
}

// chownOwner gives paths (not following symlinks) to the owner.
func (e *attackEnv) chownOwner(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.Lchown(p, e.ownerUID, e.ownerGID); err != nil {
			t.Fatal(err)
		}
	}
}

// ownerSymlink plants a symlink owned by the owner.
func (e *attackEnv) ownerSymlink(t testing.TB, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	e.chownOwner(t, p)
}

// loopsOver returns the bound loop devices whose backing file is under dir.
func loopsOver(t testing.TB, dir string) []blockdev.Loop {
	t.Helper()
	loops, err := blockdev.LoopList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return blockdev.LoopsUnder(loops, dir)
}

// noLoopsOver fails t if any loop device is bound to a file under dirs, and
// detaches it so that one failure does not cascade.
func noLoopsOver(t testing.TB, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		for _, l := range loopsOver(t, d) {
			t.Errorf("loop device %s is bound to %s (under %s): the helper bound a file it must not", l.Device, l.BackingFile, d)
			_ = blockdev.LoopDetach(context.Background(), l.Device)
		}
	}
}
