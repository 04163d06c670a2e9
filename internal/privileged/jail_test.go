package privileged

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// recordingJail is a JailRuntime that records what reaches it: hostile requests must
// leave it empty. running names jails whose "firecracker" still runs.
type recordingJail struct {
	mu      sync.Mutex // guards all following fields
	calls   []string
	specs   []JailSpec
	running map[string]bool
}

func (r *recordingJail) Launch(_ context.Context, s JailSpec) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "Launch "+s.ID)
	r.specs = append(r.specs, s)
	return 4242, nil
}

func (r *recordingJail) Signal(_ context.Context, id string, sig syscall.Signal, _ uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "Signal "+id+" "+sig.String())
	return nil
}

func (r *recordingJail) Remove(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running[id] {
		return &Error{Code: CodeInvalid, Message: "jail " + id + ": its firecracker still runs"}
	}
	r.calls = append(r.calls, "Remove "+id)
	return nil
}

func (r *recordingJail) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

type jailFixture struct {
	h       *harness
	jail    *recordingJail
	client  *Client
	kernel  string // a kernel under the images directory
	disk    string // the VM's root disk under the disks directory
	other   string // another VM's root disk
	outside string // a file outside the root
}

func newJailFixture(t *testing.T) *jailFixture {
	t.Helper()
	lay, err := layoutNew(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := lay.Create(-1, -1); err != nil {
		t.Fatal(err)
	}
	h := &harness{lay: lay, net: &recordingNet{}, block: newRecordingBlock(), audit: &syncBuffer{}, ownerUID: os.Getuid(), ownerGID: testOwnerGID()}
	f := &jailFixture{h: h, jail: &recordingJail{running: map[string]bool{"busy1": true}}}
	cfg := h.serverConfig()
	cfg.Jail = f.jail
	startServer(t, cfg)
	f.client = NewClient(lay.HelperSocket())
	write := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f.kernel = write(filepath.Join(lay.ImagesDir(), "vmlinux"))
	f.disk = write(filepath.Join(lay.DisksDir(), "a1b2c3", "root.ext4"))
	f.other = write(filepath.Join(lay.DisksDir(), "other1", "root.ext4"))
	write(filepath.Join(lay.DisksDir(), "evil1", "root.ext4"))
	if err := os.MkdirAll(filepath.Join(lay.LogDir, "vms"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.outside = write(filepath.Join(t.TempDir(), "secret"))
	return f
}

// valid is a request the helper accepts.
func (f *jailFixture) valid() JailLaunchRequest {
	return JailLaunchRequest{
		ID: "a1b2c3",
		Files: []JailFileSpec{
			{Src: f.kernel, Dst: JailDstKernel},
			{Src: f.disk, Dst: JailDstRootfs, Writable: true},
		},
		Cgroups:         []string{"cpu.max=200000 100000"},
		FirecrackerArgs: []string{"--api-sock", "/run/firecracker.socket", "--log-path", "/firecracker.log", "--level", "Info"},
		ConsoleLog:      filepath.Join(f.h.lay.LogDir, "vms", "a1b2c3.console.log"),
	}
}

func TestJailLaunchValid(t *testing.T) {
	f := newJailFixture(t)
	// A log left from an earlier boot, the owner's: appended to, never truncated.
	console := filepath.Join(f.h.lay.LogDir, "vms", "a1b2c3.console.log")
	if err := os.WriteFile(console, []byte("earlier boot\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	resp, err := f.client.JailLaunch(context.Background(), f.valid())
	if err != nil {
		t.Fatalf("JailLaunch: %v", err)
	}
	if resp.PID != 4242 {
		t.Errorf("got pid %d, want 4242", resp.PID)
	}
	f.jail.mu.Lock()
	specs := append([]JailSpec(nil), f.jail.specs...)
	f.jail.mu.Unlock()
	if len(specs) != 1 {
		t.Fatalf("got %d launches, want 1", len(specs))
	}
	s := specs[0]
	if s.ID != "a1b2c3" || s.LogLevel != "Info" || len(s.Files) != 2 || s.Files[1].Src != f.disk || !s.Files[1].Writable {
		t.Errorf("got spec %+v, want id a1b2c3, level Info, the disk %s writable", s, f.disk)
	}
	if b, err := os.ReadFile(console); err != nil || string(b) != "earlier boot\n" {
		t.Errorf("console log after launch: got %q, %v; want it kept as it was", b, err)
	}

	// A fresh boot: bangerd removed the log, the helper creates it for the owner.
	if err := os.Remove(console); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.JailLaunch(context.Background(), f.valid()); err != nil {
		t.Fatalf("JailLaunch: %v", err)
	}
	fi, err := os.Stat(console)
	if err != nil {
		t.Fatalf("console log: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != f.h.ownerUID || int(st.Gid) != f.h.ownerGID {
		t.Errorf("console log owned by %d:%d, want the owner %d:%d", st.Uid, st.Gid, f.h.ownerUID, f.h.ownerGID)
	}
}

// TestJailHostile sends hostile jail requests: each is refused with CodeInvalid and
// nothing reaches the runtime.
func TestJailHostile(t *testing.T) {
	f := newJailFixture(t)
	root := f.h.lay.Root
	link := filepath.Join(f.h.lay.ImagesDir(), "escape")
	if err := os.Symlink(f.outside, link); err != nil {
		t.Fatal(err)
	}
	consoleLink := filepath.Join(f.h.lay.LogDir, "vms", "evil1.console.log")
	if err := os.Symlink(f.outside, consoleLink); err != nil {
		t.Fatal(err)
	}
	linked := filepath.Join(f.h.lay.ImagesDir(), "linked")
	if err := os.WriteFile(linked+".src", []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(linked+".src", linked); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.h.lay.ConfigPath(), f.h.lay.InstallMetadataPath(), f.h.lay.AuditLog()} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("root's"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	launch := func(mut func(*JailLaunchRequest)) func(context.Context) error {
		return func(ctx context.Context) error {
			r := f.valid()
			mut(&r)
			_, err := f.client.JailLaunch(ctx, r)
			return err
		}
	}
	file := func(i int, src string) func(context.Context) error {
		return launch(func(r *JailLaunchRequest) { r.Files[i].Src = src })
	}
	fcArgs := func(args ...string) func(context.Context) error {
		return launch(func(r *JailLaunchRequest) { r.FirecrackerArgs = args })
	}
	signal := func(id, sig string) func(context.Context) error {
		return func(ctx context.Context) error {
			return f.client.JailSignal(ctx, JailSignalRequest{ID: id, Signal: sig})
		}
	}
	remove := func(id string) func(context.Context) error {
		return func(ctx context.Context) error { return f.client.JailRemove(ctx, JailRemoveRequest{ID: id}) }
	}
	raw := func(op string, body map[string]any) func(context.Context) error {
		return func(context.Context) error {
			b, err := json.Marshal(body)
			if err != nil {
				return err
			}
			status, e := rawRequest(t, f.h.lay.HelperSocket(), http.MethodPost, opPath+op, b)
			if status == http.StatusOK {
				return nil
			}
			return &e
		}
	}
	validRaw := func(extra string, v any) map[string]any {
		var m map[string]any
		b, _ := json.Marshal(f.valid())
		_ = json.Unmarshal(b, &m)
		m[extra] = v
		return m
	}
	cases := []struct {
		name string
		call func(context.Context) error
		want string // in the message
	}{
		{"id with ../", launch(func(r *JailLaunchRequest) { r.ID = "../etc" }), "not a banger VM id"},
		{"id with /", launch(func(r *JailLaunchRequest) { r.ID = "a/b" }), "not a banger VM id"},
		{"id uppercase and _", launch(func(r *JailLaunchRequest) { r.ID = "VM_1" }), "not a banger VM id"},
		{"id empty", launch(func(r *JailLaunchRequest) { r.ID = "" }), "not a banger VM id"},
		{"id too long", launch(func(r *JailLaunchRequest) { r.ID = strings.Repeat("a", 65) }), "not a banger VM id"},
		{"kernel outside the root", file(0, "/etc/passwd"), "not under the banger root"},
		{"disk outside the root", file(1, f.outside), "not under the banger root"},
		{"kernel through a symlink out", file(0, link), "symlink"},
		{"config.toml", file(0, f.h.lay.ConfigPath()), "not one of the VM's files"},
		{"install.json as the disk", file(1, f.h.lay.InstallMetadataPath()), "must be the VM's own"},
		{"the audit log", file(0, f.h.lay.AuditLog()), "not one of the VM's files"},
		{"another VM's disk", file(1, f.other), "must be the VM's own"},
		{"another VM's disk read-only", launch(func(r *JailLaunchRequest) { r.Files[1].Src, r.Files[1].Writable = f.other, false }), "not one of the VM's files"},
		{"a hard-linked kernel", file(0, linked), "hard links"},
		{"the VM's disk directory", file(1, filepath.Dir(f.disk)), "must be the VM's own"},
		{"path with ..", file(0, root+"/state/../../etc/passwd"), "'..'"},
		{"relative path", file(0, "state/images/vmlinux"), "relative"},
		{"directory", file(0, f.h.lay.ImagesDir()), "not one of the VM's files"},
		{"the root itself", file(0, root), "not one of the VM's files"},
		{"missing file", file(0, filepath.Join(f.h.lay.ImagesDir(), "nope")), "no such file"},
		{"another root's dm device", file(1, "/dev/mapper/other-vm1"), ""},
		{"dm origin", file(1, "/dev/mapper/"+DMPrefix(f.h.lay.DisksDir())+"vm1.origin"), ""},
		{"dm device as kernel", file(0, "/dev/mapper/"+DMPrefix(f.h.lay.DisksDir())+"a1b2c3"), ""},
		{"another VM's dm snapshot", file(1, "/dev/mapper/"+DMPrefix(f.h.lay.DisksDir())+"other1"), "only this VM's"},
		{"destination outside the set", launch(func(r *JailLaunchRequest) { r.Files[0].Dst = "/etc/shadow" }), "destination"},
		{"destination twice", launch(func(r *JailLaunchRequest) { r.Files[1].Dst = JailDstKernel }), "twice"},
		{"no root disk", launch(func(r *JailLaunchRequest) { r.Files = r.Files[:1] }), "root disk"},
		{"writable kernel", launch(func(r *JailLaunchRequest) { r.Files[0].Writable = true }), "writable"},
		{"flag not allowed", fcArgs("--api-sock", "/run/firecracker.socket", "--no-seccomp", "x"), "not allowed"},
		{"config file flag", fcArgs("--api-sock", "/run/firecracker.socket", "--config-file", "/etc/x"), "not allowed"},
		{"api socket elsewhere", fcArgs("--api-sock", "/tmp/fc.sock"), "not allowed"},
		{"no api socket", fcArgs("--level", "Info"), "lack --api-sock"},
		{"bad level", fcArgs("--api-sock", "/run/firecracker.socket", "--level", "Loud"), "not allowed"},
		{"dangling flag", fcArgs("--api-sock"), "no value"},
		{"cgroup not allowed", launch(func(r *JailLaunchRequest) { r.Cgroups = []string{"cpuset.cpus=0"} }), "cgroup"},
		{"cgroup injection", launch(func(r *JailLaunchRequest) { r.Cgroups = []string{"memory.max=1 --uid 0"} }), "cgroup"},
		{"console log outside logs", launch(func(r *JailLaunchRequest) { r.ConsoleLog = f.outside }), "not this VM's"},
		{"console log below logs", launch(func(r *JailLaunchRequest) {
			r.ConsoleLog = filepath.Join(f.h.lay.LogDir, "vms", "x", "a1b2c3.console.log")
		}), "not this VM's"},
		{"console log the audit log", launch(func(r *JailLaunchRequest) { r.ConsoleLog = f.h.lay.AuditLog() }), "not this VM's"},
		{"console log another VM's", launch(func(r *JailLaunchRequest) { r.ConsoleLog = filepath.Join(f.h.lay.LogDir, "vms", "other1.console.log") }), "not this VM's"},
		{"console log a symlink", launch(func(r *JailLaunchRequest) {
			r.ID, r.Files[1].Src, r.ConsoleLog = "evil1", filepath.Join(f.h.lay.DisksDir(), "evil1", "root.ext4"), consoleLink
		}), "symlink"},
		{"caller's jailer binary", raw(OpJailLaunch, validRaw("jailer", "/bin/sh")), "unknown field"},
		{"caller's environment", raw(OpJailLaunch, validRaw("env", []string{"LD_PRELOAD=/x"})), "unknown field"},
		{"caller's uid", raw(OpJailLaunch, validRaw("uid", 0)), "unknown field"},
		{"signal outside the list", signal("a1b2c3", "SIGSTOP"), "not allowed"},
		{"signal by number", signal("a1b2c3", "9"), "not allowed"},
		{"signal id with ../", signal("../a", "SIGTERM"), "not a banger VM id"},
		{"remove id with ../", remove("../../etc"), "not a banger VM id"},
		{"remove while running", remove("busy1"), "still runs"},
	}
	if len(cases) < 15 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(context.Background())
			if err == nil {
				t.Fatal("got success, want CodeInvalid")
			}
			var we *Error
			if !errors.As(err, &we) || we.Code != CodeInvalid {
				t.Fatalf("got %v, want code %q", err, CodeInvalid)
			}
			if tc.want != "" {
				mustContain(t, we.Message, tc.want)
			}
		})
	}
	if got := f.jail.Calls(); len(got) != 0 {
		t.Errorf("got runtime calls %q, want none", got)
	}
	if _, err := os.Stat(filepath.Join(f.h.lay.LogDir, "vms", "a1b2c3.console.log")); err == nil {
		t.Errorf("a console log was created by a refused request")
	}
	if b, err := os.ReadFile(f.outside); err != nil || string(b) != "data" {
		t.Errorf("the file outside the root changed: %q, %v", b, err)
	}
}

func TestJailOpsWithoutJailer(t *testing.T) {
	h := newHarness(t)
	err := h.client.JailRemove(context.Background(), JailRemoveRequest{ID: "a1"})
	we := wantCode(t, err, CodeFailed)
	mustContain(t, we.Message, "vmm.jailer")
}
