package sshkeys

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Environment of the test binary re-run as a ProxyCommand (see TestMain).
const (
	envProxyAddr = "BANGER_SSHKEYS_TEST_PROXY_ADDR" // where the fake `banger vm ssh-proxy` dials
	envProxyRoot = "BANGER_SSHKEYS_TEST_PROXY_ROOT" // the --root it must be given
	envProxyHost = "BANGER_SSHKEYS_TEST_PROXY_HOST" // the %h it must be given
)

// TestMain lets ssh run this test binary as the `banger` of a generated ssh_config:
// with envProxyAddr set it acts as `banger --root R vm ssh-proxy HOST PORT`, checks
// those arguments, and pipes to the address a real CLI would get from bangerd.
func TestMain(m *testing.M) {
	if addr := os.Getenv(envProxyAddr); addr != "" {
		os.Exit(fakeSSHProxy(addr, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeSSHProxy(addr string, args []string) int {
	// Two forms: the ssh_config's "--root R vm ssh-proxy HOST PORT", or "HOST PORT" for
	// a ProxyCommand given on the ssh command line.
	want := []string{os.Getenv(envProxyHost), "22"}
	if root := os.Getenv(envProxyRoot); root != "" {
		want = append([]string{"--root", root, "vm", "ssh-proxy"}, want...)
	}
	if strings.Join(args, "\x00") != strings.Join(want, "\x00") {
		fmt.Fprintf(os.Stderr, "fake ssh-proxy: got args %q, want %q\n", args, want)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Proxy(ctx, addr, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fake ssh-proxy:", err)
		return 1
	}
	return 0
}

// requireTools skips t unless every tool is installed.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install openssh-client openssh-server)", tool)
		}
	}
}

// run runs a command and returns its stdout, failing t with its stderr on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// runErr runs a command with a timeout and returns stdout, or an error carrying stderr.
func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// sshG returns the configuration `ssh -G` computes, as keyword → values (lower case
// keywords, as ssh prints them).
func sshG(t *testing.T, args ...string) map[string][]string {
	t.Helper()
	out := run(t, "ssh", append([]string{"-G"}, args...)...)
	m := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, " ")
		if ok {
			m[k] = append(m[k], v)
		}
	}
	return m
}
