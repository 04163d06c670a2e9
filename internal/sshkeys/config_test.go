package sshkeys

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/layout"
)

func testConfigOptions(t *testing.T, dir string) ConfigOptions {
	t.Helper()
	return ConfigOptions{
		Domain:     "vm",
		UserKey:    filepath.Join(dir, "home", ".ssh", UserKeyName),
		KnownHosts: filepath.Join(dir, "root", "state", "ssh", "known_hosts"),
		Banger:     filepath.Join(dir, "bin", "banger"),
		Root:       filepath.Join(dir, "root"),
	}
}

func writeTestConfig(t *testing.T, o ConfigOptions) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ssh", "ssh_config")
	if err := WriteConfig(path, o); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigAsOpenSSHReadsIt(t *testing.T) {
	requireTools(t, "ssh", "getent")
	// A space and a '%' in the paths check the quoting and token escaping.
	o := testConfigOptions(t, filepath.Join(t.TempDir(), "a dir%d"))
	cfg := writeTestConfig(t, o)
	proxy := "'" + o.Banger + "' --root '" + o.Root + "' vm ssh-proxy %h %p"
	proxyG := strings.ReplaceAll(proxy, "%d", "%%d") // ssh -G prints values before token expansion

	got := sshG(t, "-F", cfg, "dev.vm")
	for key, want := range map[string]string{
		"user":                  "root",
		"identityfile":          strings.ReplaceAll(o.UserKey, "%", "%%"),
		"identitiesonly":        "yes",
		"userknownhostsfile":    o.KnownHosts, // shown after expansion: %% became %
		"stricthostkeychecking": "true",
		"updatehostkeys":        "false",
		"checkhostip":           "no",
		"hostname":              "dev.vm",
		// dev.vm does not resolve here, so ssh goes through banger.
		"proxycommand": proxyG,
	} {
		if !slices.Equal(got[key], []string{want}) {
			t.Errorf("ssh -G dev.vm: %s: got %q, want %q", key, got[key], want)
		}
	}

	// A host named by address (or any HostName substitution) is dialled directly.
	got = sshG(t, "-F", cfg, "-o", "HostName=127.0.0.1", "dev.vm")
	if pc := got["proxycommand"]; len(pc) != 0 && pc[0] != "none" {
		t.Errorf("ssh -G with HostName=127.0.0.1: proxycommand %q, want none", pc)
	}
	if want := []string{"root"}; !slices.Equal(got["user"], want) {
		t.Errorf("ssh -G with HostName=127.0.0.1: user %q, want %q", got["user"], want)
	}

	// Other hosts are untouched.
	got = sshG(t, "-F", cfg, "example.com")
	if want := []string{"ask"}; !slices.Equal(got["stricthostkeychecking"], want) {
		t.Errorf("ssh -G example.com: stricthostkeychecking %q, want the default %q", got["stricthostkeychecking"], want)
	}
	if slices.Contains(got["identityfile"], o.UserKey) {
		t.Errorf("ssh -G example.com: identityfile %q includes banger's key", got["identityfile"])
	}
	if pc := got["proxycommand"]; len(pc) != 0 && pc[0] != "none" {
		t.Errorf("ssh -G example.com: proxycommand %q, want none", pc)
	}
}

// TestConfigResolvableNameIsDialledDirectly gives ssh a /etc/hosts in which dev.vm
// resolves (as it does when systemd-resolved routes the domain to banger's DNS): the
// Match must not apply, so no proxy is used.
func TestConfigResolvableNameIsDialledDirectly(t *testing.T) {
	requireTools(t, "ssh", "getent", "unshare", "mount")
	if os.Geteuid() != 0 {
		t.Skip("needs root: bind-mounts a hosts file in a private mount namespace")
	}
	dir := t.TempDir()
	cfg := writeTestConfig(t, testConfigOptions(t, dir))
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n172.30.77.9 dev.vm\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The mount lives and dies with the unshare'd shell: nothing on the host changes.
	script := `mount --bind "$1" /etc/hosts && getent ahosts dev.vm >/dev/null && ssh -G -F "$2" dev.vm && echo ===== && ssh -G -F "$2" other.vm`
	out, err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", hosts, cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("unshare: %v\n%s", err, out)
	}
	text := string(out)
	first, second, ok := strings.Cut(text, "=====\n") // two ssh -G outputs
	if !ok || !strings.Contains(first, "identityfile") {
		t.Fatalf("unexpected output:\n%s", text)
	}
	if strings.Contains(first, "ssh-proxy") {
		t.Errorf("dev.vm resolves, yet ssh would use the proxy:\n%s", first)
	}
	if !strings.Contains(second, "ssh-proxy") {
		t.Errorf("other.vm does not resolve, yet ssh would not use the proxy:\n%s", second)
	}
}

func TestRenderConfigRefusesBadOptions(t *testing.T) {
	base := testConfigOptions(t, "/tmp/x")
	tests := []struct {
		name string
		edit func(*ConfigOptions)
	}{
		{"empty domain", func(o *ConfigOptions) { o.Domain = "" }},
		{"pattern domain", func(o *ConfigOptions) { o.Domain = "*" }},
		{"relative key", func(o *ConfigOptions) { o.UserKey = "key" }},
		{"quote in path", func(o *ConfigOptions) { o.KnownHosts = `/tmp/a"b` }},
		{"newline in path", func(o *ConfigOptions) { o.Banger = "/tmp/a\nHost *" }},
		{"bad user", func(o *ConfigOptions) { o.User = "root x" }},
		{"no root", func(o *ConfigOptions) { o.Root = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.edit(&o)
			if _, err := RenderConfig(o); err == nil {
				t.Errorf("RenderConfig(%+v): got nil error, want one", o)
			}
		})
	}
	if _, err := RenderConfig(base); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

func TestPathsFor(t *testing.T) {
	l, err := layout.New("/var/lib/banger")
	if err != nil {
		t.Fatal(err)
	}
	got := PathsFor(l, "/home/u")
	want := Paths{
		UserKey:    "/home/u/.ssh/banger_ed25519",
		KnownHosts: "/var/lib/banger/state/ssh/known_hosts",
		SSHConfig:  "/var/lib/banger/state/ssh/ssh_config",
		UserConfig: "/home/u/.ssh/config",
	}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
