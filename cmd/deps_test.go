// Package deps_test holds the line on what each banger binary links, in the manner
// of tailscale's deptest: `go list -deps` of every command, checked against the
// packages it must never pull in. It matters most for banger-helper, which runs as
// root: every package it links is code an attacker could reach as root, so it
// links only what its validated privileged steps need, and a new package in it
// must be added to helperAllowed on purpose.
package deps_test

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

// helperAllowed is every banger package banger-helper may link. Adding one here is
// a decision about root's attack surface: say why in the commit.
var helperAllowed = map[string]bool{
	"banger/cmd/banger-helper":    true,
	"banger/internal/blockdev":    true, // loop and device-mapper ops
	"banger/internal/buildinfo":   true,
	"banger/internal/bytesize":    true, // config parsing
	"banger/internal/config":      true, // its own root-owned config.toml
	"banger/internal/consolelog":  true, // a jailed VM's console, capped (a leaf)
	"banger/internal/jailrun":     true, // the jailer launch, a leaf
	"banger/internal/layout":      true,
	"banger/internal/linuxnet":    true, // bridge, taps, nftables
	"banger/internal/privileged":  true, // the server and its validators
	"banger/internal/trustfs":     true, // opening only root-owned files
	"banger/internal/vmm/process": true, // pidfd-checked signals to jailed firecrackers
}

// Host-side packages no guest binary may link, and guest-side ones no host binary.
var (
	hostOnly = []string{
		"banger/internal/store", "banger/internal/vmservice", "banger/internal/privileged",
		"banger/internal/linuxnet", "banger/internal/hostnetwork", "banger/internal/daemon",
		"banger/internal/cli", "banger/internal/image", "banger/internal/imageservice",
		"modernc.org/sqlite", "github.com/google/go-containerregistry", "github.com/spf13/cobra",
		"github.com/google/nftables",
	}
	guestOnly = []string{
		"banger/internal/agent/server", "banger/internal/agent/sshd", "banger/internal/agent/initsys",
		"banger/internal/agent/users",
	}
)

func TestDeps(t *testing.T) {
	for _, tc := range []struct {
		cmd string
		// bad are package paths, or prefixes of whole trees ending in "/...", the
		// command must not link.
		bad []string
		// allowed, when set, is the only banger packages the command may link.
		allowed map[string]bool
	}{
		{
			cmd: "banger-helper",
			bad: []string{
				"banger/internal/vmservice", "banger/internal/store", "banger/internal/hostnetwork",
				"banger/internal/api", "banger/internal/agent/...", "banger/internal/vmm",
				"banger/internal/vmm/firecracker/...", "banger/internal/vmm/qemu", "banger/internal/imageservice",
				"banger/internal/image/...", "banger/internal/daemon", "banger/internal/cli", "banger/internal/vmdns",
				"banger/internal/disk/...", "banger/internal/system",
				"github.com/hashicorp/yamux", "modernc.org/sqlite/...", "github.com/google/go-containerregistry/...",
				"github.com/spf13/cobra", "github.com/miekg/dns",
			},
			allowed: helperAllowed,
		},
		{cmd: "bangerd", bad: append([]string{"banger/internal/cli", "github.com/spf13/cobra"}, trees(guestOnly)...)},
		{cmd: "banger", bad: trees(guestOnly)},
		{cmd: "banger-agent", bad: trees(hostOnly)},
		{cmd: "banger-init", bad: append(trees(hostOnly), "github.com/hashicorp/yamux")},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			deps := listDeps(t, "banger/cmd/"+tc.cmd)
			for _, d := range deps {
				for _, b := range tc.bad {
					if matches(d, b) {
						t.Errorf("%s links %s (matches %s): it must not; see %s", tc.cmd, d, b, why(tc.cmd))
						break
					}
				}
				if tc.allowed != nil && strings.HasPrefix(d, "banger/") && !tc.allowed[d] {
					t.Errorf("%s links %s, which is not in helperAllowed: the root binary links only what its privileged steps need; add it there only on purpose", tc.cmd, d)
				}
			}
		})
	}
}

// TestDepsCheckerCatches proves the check can fail: the firecracker driver links
// what banger-helper must not.
func TestDepsCheckerCatches(t *testing.T) {
	deps := listDeps(t, "banger/internal/vmm/firecracker/jailhelper")
	for _, want := range []string{"banger/internal/vmm/firecracker", "github.com/hashicorp/yamux"} {
		found := false
		for _, d := range deps {
			found = found || matches(d, want)
		}
		if !found {
			t.Errorf("jailhelper does not link %s: the checker would see nothing to catch", want)
		}
	}
}

func why(cmd string) string {
	if cmd == "banger-helper" {
		return "internal/jailrun for the jailer launch code the helper needs"
	}
	return "the package layering in DESIGN.md"
}

// trees turns package paths into whole-tree patterns.
func trees(pkgs []string) []string {
	out := make([]string, 0, 2*len(pkgs))
	for _, p := range pkgs {
		out = append(out, p, p+"/...")
	}
	return out
}

// matches reports whether pkg is pattern, or under it when pattern ends in "/...".
func matches(pkg, pattern string) bool {
	if tree, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == tree || strings.HasPrefix(pkg, tree+"/")
	}
	return pkg == pattern
}

// listDeps is `go list -deps` of pkg for linux: every package its binary links.
func listDeps(t *testing.T, pkg string) []string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go toolchain not on PATH")
	}
	cmd := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg)
	cmd.Env = append(cmd.Environ(), "GOOS=linux")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
	}
	var deps []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			deps = append(deps, l)
		}
	}
	sort.Strings(deps)
	return deps
}
