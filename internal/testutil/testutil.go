// Package testutil holds helpers shared by banger's integration tests: building the
// real binaries once, and creating network namespaces and users that are removed
// when the test ends.
package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// RequireRoot skips t unless it runs as root with the named tools installed.
func RequireRoot(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, users, bridges and taps")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (scripts/deps.sh installs it)", tool)
		}
	}
}

var (
	buildMu sync.Mutex // guards the following
	binDir  string     // one directory for every binary, as `banger` expects its siblings
	built   = map[string]bool{}
)

// Binary builds banger/cmd/NAME once per test process and returns its path. All
// binaries share one directory (banger finds bangerd and banger-helper beside itself)
// that every user can read, since tests run some of them as an unprivileged user.
// Call Cleanup from TestMain to remove it.
func Binary(t testing.TB, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if binDir == "" {
		dir, err := os.MkdirTemp("", "banger-bin-")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		binDir = dir
	}
	p := filepath.Join(binDir, name)
	if built[name] {
		return p
	}
	cmd := exec.Command("go", "build", "-o", p, "banger/cmd/"+name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	built[name] = true
	return p
}

// RandHex returns 2n random hex characters.
func RandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Run runs a command and fails the test with its output if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NetNS creates a named network namespace with lo up, deleted when the test ends.
func NetNS(t testing.TB) string {
	t.Helper()
	ns := "banger-t-" + RandHex(3)
	Run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	Run(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	return ns
}

// User creates an unprivileged system user, deleted when the test ends.
func User(t testing.TB) *user.User {
	t.Helper()
	return newUser(t, "--no-create-home", "--shell", "/usr/sbin/nologin")
}

// UserWithHome creates an unprivileged user with a home directory (where banger
// keeps its SSH key) and a shell; both go when the test ends.
func UserWithHome(t testing.TB) *user.User {
	t.Helper()
	return newUser(t, "--create-home", "--shell", "/bin/sh")
}

func newUser(t testing.TB, args ...string) *user.User {
	t.Helper()
	name := "bt" + RandHex(3)
	Run(t, "useradd", append(append([]string{"--system"}, args...), name)...)
	t.Cleanup(func() { _ = exec.Command("userdel", "--remove", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Root makes a short, world-traversable banger root under /tmp (unix socket paths
// must stay under 108 bytes), removed when the test ends.
func Root(t testing.TB) string {
	t.Helper()
	root, err := os.MkdirTemp("/tmp", "bt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// Cleanup removes the binaries Binary built; call it from TestMain after m.Run.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	binDir, built = "", map[string]bool{} // a later Binary call builds afresh
}
