package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// recorder is a testing.TB that keeps Errorf messages instead of failing, so a
// test can check that AssertUnchanged reports what it must.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) joined() string { return strings.Join(r.errs, "\n") }

// TestHostStateDetectsEveryChange makes each kind of change AssertUnchanged
// promises to see and checks it is reported naming the path and what changed;
// the "no change" case proves it is not simply always failing.
func TestHostStateDetectsEveryChange(t *testing.T) {
	root := os.Geteuid() == 0
	type tc struct {
		name     string
		needRoot bool
		volatile bool // watch dir/volatile.log as volatile
		change   func(t *testing.T, dir string)
		want     []string // substrings of the reports; none means no report
	}
	cases := []tc{
		{name: "no change", change: func(*testing.T, string) {}},
		{name: "content", change: func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "f"), "changed")
		}, want: []string{"/f: content sha256"}},
		{name: "content of nested file", change: func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "sub", "g"), "changed")
		}, want: []string{"/sub/g: content sha256"}},
		{name: "mode", change: func(t *testing.T, dir string) {
			must(t, os.Chmod(filepath.Join(dir, "f"), 0o666))
		}, want: []string{"/f: mode 0666, was 0644"}},
		{name: "setuid bit", change: func(t *testing.T, dir string) {
			must(t, unix.Chmod(filepath.Join(dir, "f"), 0o4644))
		}, want: []string{"/f: mode 4644, was 0644"}},
		{name: "uid", needRoot: true, change: func(t *testing.T, dir string) {
			must(t, os.Lchown(filepath.Join(dir, "f"), 4242, -1))
		}, want: []string{"/f: uid 4242, was 0"}},
		{name: "gid", needRoot: true, change: func(t *testing.T, dir string) {
			must(t, os.Lchown(filepath.Join(dir, "sub"), -1, 4242))
		}, want: []string{"/sub: gid 4242, was 0"}},
		{name: "symlink target", change: func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "link")))
			must(t, os.Symlink("/etc/shadow", filepath.Join(dir, "link")))
		}, want: []string{`/link: symlink target "/etc/shadow", was "f"`}},
		{name: "type", change: func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "f")))
			must(t, os.Mkdir(filepath.Join(dir, "f"), 0o644))
		}, want: []string{"/f: type changed: dir"}},
		{name: "file replaced by fifo", change: func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "f")))
			must(t, unix.Mkfifo(filepath.Join(dir, "f"), 0o644))
		}, want: []string{"/f: type changed: fifo"}},
		{name: "appeared", change: func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "sub", "new"), "x")
		}, want: []string{"/sub/new: appeared"}},
		{name: "absent watched path appeared", change: func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "..", filepath.Base(dir)+"-target"), "x")
		}, want: []string{"-target: appeared"}},
		{name: "disappeared", change: func(t *testing.T, dir string) {
			must(t, os.RemoveAll(filepath.Join(dir, "sub")))
		}, want: []string{"/sub: disappeared", "/sub/g: disappeared"}},
		{name: "volatile content may change", volatile: true, change: func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "volatile.log"), "more lines")
		}},
		{name: "volatile mode still checked", volatile: true, change: func(t *testing.T, dir string) {
			must(t, os.Chmod(filepath.Join(dir, "volatile.log"), 0o666))
		}, want: []string{"/volatile.log: mode"}},
		{name: "volatile owner still checked", needRoot: true, volatile: true, change: func(t *testing.T, dir string) {
			must(t, os.Lchown(filepath.Join(dir, "volatile.log"), 4242, -1))
		}, want: []string{"/volatile.log: uid 4242"}},
		{name: "volatile type still checked", volatile: true, change: func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "volatile.log")))
			must(t, os.Symlink("/etc/passwd", filepath.Join(dir, "volatile.log")))
		}, want: []string{"/volatile.log: type changed: symlink"}},
		{name: "device node", needRoot: true, change: func(t *testing.T, dir string) {
			must(t, unix.Mknod(filepath.Join(dir, "sub", "sda"), unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))))
		}, want: []string{"/sub/sda: appeared (blockdev"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.needRoot && !root {
				t.Skip("needs root to chown or mknod")
			}
			dir := t.TempDir()
			write(t, filepath.Join(dir, "f"), "content")
			must(t, os.Chmod(filepath.Join(dir, "f"), 0o644))
			must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
			write(t, filepath.Join(dir, "sub", "g"), "nested")
			must(t, os.Symlink("f", filepath.Join(dir, "link")))
			write(t, filepath.Join(dir, "volatile.log"), "line")
			target := dir + "-target" // watched while absent
			t.Cleanup(func() { os.Remove(target) })
			w := Watch{Paths: []string{dir, target}}
			if c.volatile {
				w.Volatile = []string{filepath.Join(dir, "volatile.log")}
			}
			st := CaptureHost(t, w)
			c.change(t, dir)
			r := &recorder{TB: t}
			st.AssertUnchanged(r)
			got := r.joined()
			if len(c.want) == 0 && got != "" {
				t.Fatalf("reported a difference where there is none:\n%s", got)
			}
			if len(c.want) > 0 && got == "" {
				t.Fatalf("change not reported; want %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("report lacks %q:\n%s", w, got)
				}
			}
		})
	}
}

// TestHostStateVolatileDirectory: entries of a volatile directory may come and
// go and change content, but a change of mode is still reported.
func TestHostStateVolatileDirectory(t *testing.T) {
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	must(t, os.Mkdir(logs, 0o755))
	write(t, filepath.Join(logs, "a.log"), "a")
	st := CaptureHost(t, Watch{Paths: []string{dir}, Volatile: []string{logs}})
	write(t, filepath.Join(logs, "a.log"), "aa")
	write(t, filepath.Join(logs, "b.log"), "b")
	r := &recorder{TB: t}
	st.AssertUnchanged(r)
	if got := r.joined(); got != "" {
		t.Fatalf("volatile directory churn reported:\n%s", got)
	}
	must(t, os.Chmod(filepath.Join(logs, "a.log"), 0o600))
	r = &recorder{TB: t}
	st.AssertUnchanged(r)
	if got := r.joined(); !strings.Contains(got, "/logs/a.log: mode") {
		t.Fatalf("mode change under a volatile directory not reported:\n%s", got)
	}
}

// TestHostStateProcesses: a watched process that exits (and is reaped or left a
// zombie) is reported as gone.
func TestHostStateProcesses(t *testing.T) {
	reaped := exec.Command("sleep", "60")
	must(t, reaped.Start())
	zombie := exec.Command("sleep", "60")
	must(t, zombie.Start())
	alive := exec.Command("sleep", "60")
	must(t, alive.Start())
	t.Cleanup(func() {
		for _, c := range []*exec.Cmd{reaped, zombie, alive} {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})
	st := CaptureHost(t, Watch{PIDs: []int{reaped.Process.Pid, zombie.Process.Pid, alive.Process.Pid}})
	r := &recorder{TB: t}
	st.AssertUnchanged(r)
	if got := r.joined(); got != "" {
		t.Fatalf("live processes reported:\n%s", got)
	}
	must(t, reaped.Process.Kill())
	_ = reaped.Wait()
	must(t, zombie.Process.Kill())
	// Not waited for: it stays a zombie until the cleanup reaps it.
	for i := 0; i < 200 && readProc(zombie.Process.Pid).alive; i++ {
		unix.Nanosleep(&unix.Timespec{Nsec: 10e6}, nil)
	}
	r = &recorder{TB: t}
	st.AssertUnchanged(r)
	got := r.joined()
	for _, pid := range []int{reaped.Process.Pid, zombie.Process.Pid} {
		if !strings.Contains(got, fmt.Sprintf("pid %d is gone", pid)) {
			t.Errorf("dead pid %d not reported:\n%s", pid, got)
		}
	}
	if strings.Contains(got, fmt.Sprintf("pid %d ", alive.Process.Pid)) {
		t.Errorf("live pid %d reported:\n%s", alive.Process.Pid, got)
	}
}

// TestHostStateNetwork: a rule, a link and an address added in the watched
// namespace are each reported; the unchanged namespace is not.
func TestHostStateNetwork(t *testing.T) {
	RequireRoot(t, "nft")
	ns := NetNS(t)
	st := CaptureHost(t, Watch{Netns: ns})
	r := &recorder{TB: t}
	st.AssertUnchanged(r)
	if got := r.joined(); got != "" {
		t.Fatalf("untouched namespace reported:\n%s", got)
	}
	Run(t, "ip", "netns", "exec", ns, "nft", "add", "table", "inet", "attack")
	Run(t, "ip", "netns", "exec", ns, "ip", "link", "add", "evil0", "type", "bridge")
	Run(t, "ip", "netns", "exec", ns, "ip", "addr", "add", "10.99.0.1/24", "dev", "lo")
	r = &recorder{TB: t}
	st.AssertUnchanged(r)
	got := r.joined()
	for _, w := range []string{
		"nft ruleset in netns " + ns + " changed", "+ table inet attack",
		"links (ip -o link) in netns " + ns + " changed", "evil0",
		"IPv4 addresses", "10.99.0.1/24",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("report lacks %q:\n%s", w, got)
		}
	}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	must(t, os.WriteFile(p, []byte(s), 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
