package sshkeys

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const bangerConfigPath = "/var/lib/banger/state/ssh/ssh_config"

var installedHead = includeMarker + "\n" + `Include "` + bangerConfigPath + `"` + "\n"

func TestInstallInclude(t *testing.T) {
	userOwn := "Host work\n    User me\n\nHost *\n    ServerAliveInterval 30\n"
	tests := []struct {
		name        string
		existing    *string // nil: no file
		want        string
		wantChanged bool
		wantCreated bool
	}{
		{"no file", nil, installedHead, true, true},
		{"empty file", ptr(""), installedHead, true, false},
		{"user content kept below", ptr(userOwn), installedHead + "\n" + userOwn, true, false},
		{"already installed", ptr(installedHead + "\n" + userOwn), installedHead + "\n" + userOwn, false, false},
		{"include below a Host is moved up", ptr(userOwn + "Include " + bangerConfigPath + "\n"), installedHead + "\n" + userOwn, true, false},
		{"hand-written include at the top", ptr("include=\"" + bangerConfigPath + "\"\n" + userOwn), installedHead + "\n" + userOwn, true, false},
		{"other includes left", ptr("Include other.conf\n"), installedHead + "\nInclude other.conf\n", true, false},
		{"no final newline", ptr("Host a"), installedHead + "\nHost a\n", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "home", ".ssh", "config")
			if tt.existing != nil {
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(*tt.existing), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			c, err := InstallInclude(path, bangerConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if c.Changed != tt.wantChanged || c.Created != tt.wantCreated {
				t.Errorf("got changed=%v created=%v, want changed=%v created=%v (%s)", c.Changed, c.Created, tt.wantChanged, tt.wantCreated, c)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("file:\ngot  %q\nwant %q", got, tt.want)
			}
			wantMode := os.FileMode(0o640)
			if tt.existing == nil {
				wantMode = 0o600
				if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
					t.Errorf("~/.ssh mode: got %v (%v), want 0700", st.Mode().Perm(), err)
				}
			}
			if st, err := os.Stat(path); err != nil || st.Mode().Perm() != wantMode {
				t.Errorf("mode: got %v (%v), want %v", st.Mode().Perm(), err, wantMode)
			}

			// Again: nothing changes.
			c, err = InstallInclude(path, bangerConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if again, _ := os.ReadFile(path); c.Changed || string(again) != tt.want {
				t.Errorf("second install changed=%v, file %q; want no change", c.Changed, again)
			}

			// Uninstall gives back the user's lines.
			c, err = UninstallInclude(path, bangerConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if !c.Changed || !c.Uninstall {
				t.Errorf("uninstall: got %+v, want changed", c)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(after), bangerConfigPath) || strings.Contains(string(after), "banger") {
				t.Errorf("after uninstall, banger's lines remain: %q", after)
			}
			if tt.existing != nil && strings.HasSuffix(*tt.existing, "\n") && !strings.Contains(*tt.existing, bangerConfigPath) && string(after) != *tt.existing {
				t.Errorf("after uninstall:\ngot  %q\nwant %q", after, *tt.existing)
			}
			c, err = UninstallInclude(path, bangerConfigPath)
			if err != nil || c.Changed {
				t.Errorf("second uninstall: changed=%v err=%v, want no change", c.Changed, err)
			}
		})
	}
}

func TestInstallIncludeFollowsSymlink(t *testing.T) {
	dir := t.TempDir()
	realPath := filepath.Join(dir, "dotfiles", "ssh_config")
	if err := os.MkdirAll(filepath.Dir(realPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(realPath, []byte("Host a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "config")
	if err := os.Symlink(realPath, link); err != nil {
		t.Fatal(err)
	}
	if _, err := InstallInclude(link, bangerConfigPath); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v %v", fi.Mode(), err)
	}
	got, err := os.ReadFile(realPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := installedHead + "\nHost a\n"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestInstallIncludeRefusesBadPaths(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"relative/ssh_config", "/tmp/a*/ssh_config", `/tmp/a"b`} {
		if _, err := InstallInclude(filepath.Join(dir, "config"), p); err == nil {
			t.Errorf("InstallInclude(%q): got nil error, want one", p)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "config")); !os.IsNotExist(err) {
		t.Errorf("a refused install wrote the file: %v", err)
	}
}

// TestInstalledIncludeAppliesInOpenSSH checks, with the realPath ssh, that the Include at
// the top makes banger's settings apply to *.vm while the user's own blocks still apply
// to their hosts, even when the user has a catch-all Host * below.
func TestInstalledIncludeAppliesInOpenSSH(t *testing.T) {
	requireTools(t, "ssh", "getent")
	dir := t.TempDir()
	o := testConfigOptions(t, dir)
	bangerCfg := filepath.Join(dir, "root", "state", "ssh", "ssh_config")
	if err := WriteConfig(bangerCfg, o); err != nil {
		t.Fatal(err)
	}
	userCfg := filepath.Join(dir, "home", ".ssh", "config")
	if err := os.MkdirAll(filepath.Dir(userCfg), 0o700); err != nil {
		t.Fatal(err)
	}
	own := "Host work\n    User me\n\nHost *\n    User someone\n    StrictHostKeyChecking no\n"
	if err := os.WriteFile(userCfg, []byte(own), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := InstallInclude(userCfg, bangerCfg); err != nil {
		t.Fatal(err)
	}
	vm := sshG(t, "-F", userCfg, "dev.vm")
	for key, want := range map[string]string{"user": "root", "stricthostkeychecking": "true", "userknownhostsfile": o.KnownHosts} {
		if !slices.Equal(vm[key], []string{want}) {
			t.Errorf("dev.vm: %s: got %q, want %q", key, vm[key], want)
		}
	}
	if !slices.Contains(vm["identityfile"], o.UserKey) {
		t.Errorf("dev.vm: identityfile %q, want %q", vm["identityfile"], o.UserKey)
	}
	work := sshG(t, "-F", userCfg, "work")
	if want := []string{"me"}; !slices.Equal(work["user"], want) {
		t.Errorf("work: user %q, want %q", work["user"], want)
	}
	if want := []string{"false"}; !slices.Equal(work["stricthostkeychecking"], want) {
		t.Errorf("work: stricthostkeychecking %q, want %q (the user's Host *)", work["stricthostkeychecking"], want)
	}
}

func ptr(s string) *string { return &s }
