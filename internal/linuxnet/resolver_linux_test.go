package linuxnet

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeResolvectl puts a resolvectl on PATH that logs its arguments, one call a line,
// and fails (exit 1, with a message) on the subcommand named in failOn. The real one
// cannot run here (no systemd), so this covers the command construction only.
func fakeResolvectl(t *testing.T, failOn string) (logPath string) {
	t.Helper()
	dir := t.TempDir()
	logPath = filepath.Join(dir, "calls")
	script := `#!/bin/sh
echo "$*" >> '` + logPath + `'
if [ "$1" = '` + failOn + `' ]; then echo "Failed to set $1: Link busy" >&2; exit 1; fi
`
	if err := os.WriteFile(filepath.Join(dir, "resolvectl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return logPath
}

func calls(t *testing.T, logPath string) []string {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// newHostNet opens a Net on the test process's own namespace (read-only use: the
// resolver code only looks links up) with resolvedDir as systemd-resolved's directory.
func newHostNet(t *testing.T, resolvedDir, resolvectl string) *Net {
	t.Helper()
	n, err := New(Options{Root: "/test/resolver", ResolvedDir: resolvedDir, Resolvectl: resolvectl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

var testDNS = netip.MustParseAddrPort("10.66.0.1:5353")

func TestRouteWithoutResolved(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name, dir, bin, reason string
	}{
		{"no runtime dir", filepath.Join(t.TempDir(), "missing"), "", "systemd-resolved is not running"},
		{"no resolvectl", t.TempDir(), "banger-test-no-such-resolvectl", "was not found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newHostNet(t, c.dir, c.bin)
			for _, enable := range []bool{true, false} {
				applied, reason, err := n.Route(ctx, "lo", "vm", testDNS, enable)
				if err != nil || applied || !strings.Contains(reason, c.reason) {
					t.Errorf("Route(enable=%v) = %v, %q, %v; want false, a reason with %q, nil", enable, applied, reason, err, c.reason)
				}
			}
		})
	}
}

func TestRouteCommands(t *testing.T) {
	ctx := context.Background()
	log := fakeResolvectl(t, "none")
	n := newHostNet(t, t.TempDir(), "")

	// lo stands in for the bridge: it exists in every namespace.
	applied, reason, err := n.Route(ctx, "lo", ".vm.", testDNS, true)
	if err != nil || !applied || reason != "" {
		t.Fatalf("enable = %v, %q, %v; want true, \"\", nil", applied, reason, err)
	}
	applied, _, err = n.Route(ctx, "lo", "vm", testDNS, false)
	if err != nil || !applied {
		t.Fatalf("disable = %v, %v; want true, nil", applied, err)
	}
	// Disabling for a bridge that is gone runs nothing.
	if applied, _, err = n.Route(ctx, "banger-gone0", "vm", testDNS, false); err != nil || !applied {
		t.Errorf("disable for a missing bridge = %v, %v; want true, nil", applied, err)
	}
	want := []string{"dns lo 10.66.0.1:5353", "domain lo ~vm", "default-route lo false", "revert lo"}
	if got := calls(t, log); !slices.Equal(got, want) {
		t.Errorf("resolvectl calls =\n%q\nwant\n%q", got, want)
	}
}

func TestRouteFailureReverts(t *testing.T) {
	log := fakeResolvectl(t, "domain")
	n := newHostNet(t, t.TempDir(), "")

	applied, _, err := n.Route(context.Background(), "lo", "vm", testDNS, true)
	if err == nil || applied {
		t.Fatalf("enable with a failing resolvectl = %v, %v; want false and an error", applied, err)
	}
	for _, part := range []string{"resolvectl domain lo ~vm", "Link busy"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q lacks %q", err, part)
		}
	}
	want := []string{"dns lo 10.66.0.1:5353", "domain lo ~vm", "revert lo"}
	if got := calls(t, log); !slices.Equal(got, want) {
		t.Errorf("resolvectl calls = %q, want %q", got, want)
	}
}

// With the real defaults on a host without systemd-resolved, nothing is applied.
func TestRouteDefaultsWithoutSystemd(t *testing.T) {
	if _, err := os.Stat(DefaultResolvedDir); err == nil {
		t.Skipf("%s exists: this host runs systemd-resolved, and this test must not change its routing", DefaultResolvedDir)
	}
	n := newHostNet(t, "", "")
	applied, reason, err := n.Route(context.Background(), "lo", "vm", testDNS, true)
	if err != nil || applied || !strings.Contains(reason, DefaultResolvedDir) {
		t.Errorf("Route = %v, %q, %v; want false, a reason naming %s, nil", applied, reason, err, DefaultResolvedDir)
	}
}
