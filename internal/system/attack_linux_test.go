package system_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/layout"
	"banger/internal/system"
	"banger/internal/testutil"
)

// Attacks on the root-run commands (`banger system run|stop|install`) by the owner:
// the owner has run/, state/ and logs/ under the root (see package layout) and
// plants symlinks, hard links, FIFOs and PID files there, or feeds root's terminal
// escape sequences; then root runs the real banger binary. Each test asserts the
// refusal (or the safe outcome) AND that the host is unchanged: the targets' type,
// owner, mode and content, and the processes the owner wanted root to kill.
// Targets are directories and files the test creates, never the host's own /etc.

// owned makes the root's layout for the env's owner, as an earlier `system run`
// left it, so that the owner has run/, state/ and logs/ to plant in.
func (e *env) owned() layout.Layout {
	e.t.Helper()
	l, err := layout.New(e.root)
	if err != nil {
		e.t.Fatal(err)
	}
	uid, _ := strconv.Atoi(e.owner.Uid)
	gid, _ := strconv.Atoi(e.owner.Gid)
	if err := l.Create(uid, gid); err != nil {
		e.t.Fatal(err)
	}
	return l
}

// asOwner runs a command as the owner (real and effective uid and gid, no
// supplementary groups): what the owner plants, the owner really can plant.
func (e *env) asOwner(args ...string) {
	e.t.Helper()
	testutil.Run(e.t, "setpriv", append([]string{"--reuid", e.owner.Uid, "--regid", e.owner.Gid, "--clear-groups", "--"}, args...)...)
}

// bangerNoSudo runs the CLI as a root shell would, with no SUDO_* variables.
func (e *env) bangerNoSudo(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	full := append([]string{"netns", "exec", e.ns, filepath.Join(e.bin, "banger"), "--root", e.root}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SUDO_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// victim is a root-owned directory like /etc, with a world-readable file and a
// secret one, in a temporary directory of root's.
type victim struct {
	dir, passwd, shadow string
}

func newVictim(t *testing.T) victim {
	t.Helper()
	base, err := os.MkdirTemp("/tmp", "bt-victim-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	v := victim{dir: filepath.Join(base, "etc")}
	v.passwd, v.shadow = filepath.Join(v.dir, "passwd"), filepath.Join(v.dir, "shadow")
	if err := os.Mkdir(v.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v.passwd, []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v.shadow, []byte("root:SECRET-HASH:19000::::::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return v
}

// rootSleep starts a process of root's that the owner would like root to kill.
func rootSleep(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}

// TestAttackSystemRunPlants: whatever the owner plants in its directories, `banger
// system run -d` as root refuses with a message that says what to remove, and
// neither the target nor anything else changes: no chown of /etc-like
// directories, no write to, chown or truncation of root's files, no hang on a FIFO.
func TestAttackSystemRunPlants(t *testing.T) {
	tests := []struct {
		name  string
		plant func(e *env, l layout.Layout, v victim)
		want  string
	}{
		{"symlink run/vms to a root directory", func(e *env, l layout.Layout, v victim) {
			e.asOwner("rmdir", l.VMSocketDir())
			e.asOwner("ln", "-s", v.dir, l.VMSocketDir())
		}, "run/vms is a symlink"},
		{"symlink state/images to a root directory", func(e *env, l layout.Layout, v victim) {
			e.asOwner("rmdir", l.ImagesDir())
			e.asOwner("ln", "-s", v.dir, l.ImagesDir())
		}, "state/images is a symlink"},
		{"symlink logs/bangerd.log to a root file", func(e *env, l layout.Layout, v victim) {
			e.asOwner("ln", "-s", v.passwd, l.DaemonLog())
		}, "logs/bangerd.log (or a directory on its way) is a symlink"},
		{"symlink logs/bangerd.log to a root secret", func(e *env, l layout.Layout, v victim) {
			e.asOwner("ln", "-s", v.shadow, l.DaemonLog())
		}, "is a symlink"},
		{"hard link of a root file as logs/bangerd.log", func(e *env, l layout.Layout, v victim) {
			// fs.protected_hardlinks stops the owner here; a host without it would
			// not, so root makes the link the owner would have made.
			if err := os.Link(v.shadow, l.DaemonLog()); err != nil {
				t.Fatal(err)
			}
		}, "must be a regular file of the owner (uid"},
		{"FIFO as logs/bangerd.log", func(e *env, l layout.Layout, v victim) {
			e.asOwner("mkfifo", l.DaemonLog())
		}, "logs/bangerd.log is a FIFO, not a regular file"},
		{"logs/ swapped for a symlink to a root directory", func(e *env, l layout.Layout, v victim) {
			// logs/ sits in root's ROOT, so the owner cannot swap it; root's own
			// mistake is simulated: the check must hold even then.
			if err := os.Remove(l.LogDir); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(v.dir, l.LogDir); err != nil {
				t.Fatal(err)
			}
		}, "logs is a symlink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testConfig)
			l := e.owned()
			v := newVictim(t)
			tt.plant(e, l, v)
			st := testutil.CaptureHost(t, testutil.Watch{Paths: []string{filepath.Dir(v.dir), l.LogDir, l.RunDir, l.StateDir}})
			start := time.Now()
			out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username)
			if err == nil {
				t.Fatalf("system run succeeded; want a refusal %q. Output:\n%s", tt.want, out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("system run output lacks %q:\n%s", tt.want, out)
			}
			if strings.Contains(out, "SECRET-HASH") {
				t.Errorf("root's secret reached the output:\n%s", out)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("system run took %s to refuse: it hung on something the owner planted", d)
			}
			st.AssertUnchanged(t)
			assertNotRunning(t, e)
		})
	}
}

// assertNotRunning wants nothing of banger's left running or recorded.
func assertNotRunning(t *testing.T, e *env) {
	t.Helper()
	for _, rec := range []string{"bangerd.pid", "helper.pid"} {
		if _, err := os.Stat(filepath.Join(e.root, "system", rec)); !os.IsNotExist(err) {
			t.Errorf("system/%s left behind after a refused start (%v)", rec, err)
		}
	}
	for _, sock := range []string{"run/bangerd.sock", "helper/helper.sock"} {
		if c, err := net.Dial("unix", filepath.Join(e.root, sock)); err == nil {
			c.Close()
			t.Errorf("something still listens on %s", sock)
		}
	}
}

// TestAttackSystemRunRefusesRootOwner: bangerd never runs as root. A root shell
// without --owner and without sudo's variables, --owner root, --owner 0 and
// `system install --owner root` are all refused before anything starts.
func TestAttackSystemRunRefusesRootOwner(t *testing.T) {
	e := newEnv(t, testConfig)
	for _, args := range [][]string{
		{"system", "run", "-d"},
		{"system", "run", "-d", "--owner", "root"},
		{"system", "run", "-d", "--owner", "0"},
		{"system", "install", "--owner", "root", "--no-start", "--unit-dir", t.TempDir(), "--bin-dir", e.bin},
	} {
		out, err := e.bangerNoSudo(args...)
		if err == nil || !strings.Contains(out, "bangerd must not run as root: pass --owner USER, or run via sudo from your account") {
			t.Errorf("%s: err=%v, want the root-owner refusal; output:\n%s", strings.Join(args, " "), err, out)
		}
		assertNotRunning(t, e)
	}
	if _, err := os.Stat(filepath.Join(e.root, "install.json")); !os.IsNotExist(err) {
		t.Errorf("install.json was written for a refused owner (%v)", err)
	}
}

// TestAttackSystemRunRefusesHelperInOwnerDir: root runs banger-helper only from
// root's directories. A banger whose siblings sit in a directory of the owner's
// (who could swap banger-helper for anything) is refused before it runs anything.
func TestAttackSystemRunRefusesHelperInOwnerDir(t *testing.T) {
	e := newEnv(t, testConfig)
	dir, err := os.MkdirTemp("/tmp", "bt-ownerbin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, b := range []string{"banger", "bangerd", "banger-helper"} {
		data, err := os.ReadFile(filepath.Join(e.bin, b))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, b), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ := strconv.Atoi(e.owner.Uid)
	gid, _ := strconv.Atoi(e.owner.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	e.bin = dir
	out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username)
	if err == nil || !strings.Contains(out, "belongs to uid "+e.owner.Uid) {
		t.Fatalf("system run with an owner-writable banger-helper: err=%v, want a refusal naming uid %s; output:\n%s", err, e.owner.Uid, out)
	}
	assertNotRunning(t, e)
}

// TestAttackSystemRunNoEscapesToRootsTerminal: bangerd's output is the owner's to
// choose (its log is the owner's file); when a start fails, root's terminal gets
// its tail with every escape sequence neutralised.
func TestAttackSystemRunNoEscapesToRootsTerminal(t *testing.T) {
	e := newEnv(t, testConfig+"[dns]\nlisten = \"10.99.99.99:5353\"\n")
	l := e.owned()
	e.asOwner("sh", "-c", `printf '\033]0;pwned\007\033[2J\233m\n' > `+l.DaemonLog())
	out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username)
	if err == nil || !strings.Contains(out, "bangerd exited during start-up") {
		t.Fatalf("system run: err=%v, want bangerd to fail to start; output:\n%s", err, out)
	}
	if strings.ContainsAny(out, "\x1b\x07\u009b") || strings.Contains(out, "\x9b") {
		t.Errorf("an escape sequence reached root's terminal: %q", out)
	}
	if !strings.Contains(out, `^[]0;pwned`) {
		t.Errorf("the neutralised escape is not shown for what it is: %q", out)
	}
}

// TestAttackSystemStopLeavesOwnerPicksAlone: the owner plants the PID files and
// sockets root used to trust in run/: a symlink to a root file as helper.pid, the
// PID of a root process as bangerd.pid, and (once banger is stopped) run/ itself
// pointing at a directory with a socket of root's. A full run and stop leaves the
// root file, the root process and the socket as they were, and still stops banger.
func TestAttackSystemStopLeavesOwnerPicksAlone(t *testing.T) {
	e := newEnv(t, testConfig)
	l := e.owned()
	v := newVictim(t)
	sleeper := rootSleep(t)
	e.asOwner("ln", "-s", v.passwd, filepath.Join(l.RunDir, "helper.pid"))
	e.asOwner("sh", "-c", "echo "+strconv.Itoa(sleeper)+" > "+filepath.Join(l.RunDir, "bangerd.pid"))
	st := testutil.CaptureHost(t, testutil.Watch{Paths: []string{filepath.Dir(v.dir)}, PIDs: []int{sleeper}})

	if out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username); err != nil {
		t.Fatalf("system run: %v\n%s", err, out)
	}
	daemon := readPID(t, filepath.Join(e.root, "system", "bangerd.pid"))
	helper := readPID(t, filepath.Join(e.root, "system", "helper.pid"))
	// The records are root's, in root's directory: the owner cannot rewrite them.
	if err := exec.Command("setpriv", "--reuid", e.owner.Uid, "--regid", e.owner.Gid, "--clear-groups", "--",
		"sh", "-c", "echo "+strconv.Itoa(sleeper)+" > "+filepath.Join(e.root, "system", "bangerd.pid")).Run(); err == nil {
		t.Fatal("the owner rewrote system/bangerd.pid")
	}
	out, err := e.banger("system", "stop")
	if err != nil {
		t.Fatalf("system stop: %v\n%s", err, out)
	}
	for _, pid := range []int{daemon, helper} {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil && !zombie(pid) {
			t.Errorf("pid %d (banger) still runs after system stop:\n%s", pid, out)
		}
	}

	// Stopped: stop also removes stale sockets in run/, so the owner plants
	// run/bangerd.sock as a link to a socket of root's that nothing listens on.
	// (run/ itself is in root's ROOT and cannot be swapped.) Only sockets, and
	// never through a link, are removed.
	sockDir, err := os.MkdirTemp("/tmp", "bt-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	ln, err := net.Listen("unix", filepath.Join(sockDir, "bangerd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	e.asOwner("ln", "-s", filepath.Join(sockDir, "bangerd.sock"), l.DaemonSocket())
	st2 := testutil.CaptureHost(t, testutil.Watch{Paths: []string{sockDir}})
	if out, err := e.banger("system", "stop"); err != nil {
		t.Fatalf("second system stop: %v\n%s", err, out)
	}
	st.AssertUnchanged(t)
	st2.AssertUnchanged(t)
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// TestAttackSystemStopRefusesRecordOfAnotherProcess: a record whose PID now names
// another process (PID reuse after a crash, or a record tampered with) must not
// make root signal it: stop refuses, says so, and the process lives on. Both
// checks are exercised: another start time, and another executable.
func TestAttackSystemStopRefusesRecordOfAnotherProcess(t *testing.T) {
	e := newEnv(t, testConfig)
	if out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username); err != nil {
		t.Fatalf("system run: %v\n%s", err, out)
	}
	recPath := filepath.Join(e.root, "system", "bangerd.pid")
	b, err := os.ReadFile(recPath)
	if err != nil {
		t.Fatal(err)
	}
	var real map[string]any
	if err := json.Unmarshal(b, &real); err != nil {
		t.Fatal(err)
	}
	sleeper := rootSleep(t)
	sleepStart := startOf(t, sleeper)
	// Whatever happens, the real record goes back so that the test's cleanup stops
	// the real bangerd.
	t.Cleanup(func() { _ = os.WriteFile(recPath, b, 0o644) })
	for _, tc := range []struct {
		name string
		rec  map[string]any
	}{
		{"bangerd's executable, another start time", map[string]any{"pid": sleeper, "start": real["start"], "exe": real["exe"], "dev": real["dev"], "ino": real["ino"]}},
		{"the right start time, another executable", map[string]any{"pid": sleeper, "start": sleepStart, "exe": real["exe"], "dev": real["dev"], "ino": real["ino"]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, _ := json.Marshal(tc.rec)
			if err := os.WriteFile(recPath, data, 0o644); err != nil {
				t.Fatal(err)
			}
			st := testutil.CaptureHost(t, testutil.Watch{PIDs: []int{sleeper}})
			out, err := e.banger("system", "stop")
			if err != nil {
				t.Fatalf("system stop: %v\n%s", err, out)
			}
			if !strings.Contains(out, "refusing to signal bangerd's recorded pid "+strconv.Itoa(sleeper)) {
				t.Errorf("system stop did not say it refused:\n%s", out)
			}
			st.AssertUnchanged(t)
			if err := os.WriteFile(recPath, b, 0o644); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// startOf is field 22 of /proc/PID/stat.
func startOf(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestAttackSystemInstallRefusesOwnerBinDir: systemd runs banger-helper as root
// from --bin-dir, so `system install` refuses a bin dir the owner could write,
// before it writes any unit or touches the root.
func TestAttackSystemInstallRefusesOwnerBinDir(t *testing.T) {
	testutil.RequireRoot(t, "useradd")
	u := testutil.User(t)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("/tmp", "bt-ownerbin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data, err := os.ReadFile(testutil.Binary(t, "banger-helper"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "banger-helper"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	l, err := layout.New(testutil.Root(t))
	if err != nil {
		t.Fatal(err)
	}
	unitDir := t.TempDir()
	st := testutil.CaptureHost(t, testutil.Watch{Paths: []string{l.Root, unitDir, dir}})
	err = system.Install(context.Background(), system.InstallOptions{Layout: l, Owner: system.Owner{UID: uid, GID: gid, Name: u.Username}, UnitDir: unitDir, BinDir: dir, Out: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "belongs to uid "+u.Uid) {
		t.Fatalf("Install with an owner's bin dir: %v, want a refusal naming uid %s", err, u.Uid)
	}
	st.AssertUnchanged(t)
}
