package kernel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindHostKernel(t *testing.T) {
	boot, mods := t.TempDir(), t.TempDir()
	for _, rel := range []string{"5.10.0-1-amd64", "6.1.0-9-amd64", "6.1.0-10-amd64", "7.0.0-nomods"} {
		writeFile(t, boot, "vmlinuz-"+rel, []byte("k"))
		if rel != "7.0.0-nomods" {
			if err := os.MkdirAll(filepath.Join(mods, rel), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(mods, rel), "modules.dep", nil)
		}
	}
	writeFile(t, boot, "config-6.1.0-10-amd64", []byte("CONFIG_X=y\n"))
	tests := []struct {
		running, want, config string
	}{
		{"5.10.0-1-amd64", "5.10.0-1-amd64", ""},                                         // the running one, though older
		{"6.18.0-fc", "6.1.0-10-amd64", filepath.Join(boot, "config-6.1.0-10-amd64")},    // not in /boot: the newest, 10 > 9
		{"7.0.0-nomods", "6.1.0-10-amd64", filepath.Join(boot, "config-6.1.0-10-amd64")}, // running but without modules
	}
	for _, tt := range tests {
		hk, err := FindHostKernel(HostOptions{BootDir: boot, ModulesDir: mods, Running: tt.running})
		if err != nil {
			t.Fatalf("running %s: %v", tt.running, err)
		}
		if hk.Release != tt.want || hk.Path != filepath.Join(boot, "vmlinuz-"+tt.want) || hk.ConfigPath != tt.config {
			t.Errorf("running %s: got %+v, want release %s config %q", tt.running, hk, tt.want, tt.config)
		}
	}
	_, err := FindHostKernel(HostOptions{BootDir: boot, ModulesDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "has its modules") || !strings.Contains(err.Error(), "7.0.0-nomods") {
		t.Errorf("no modules anywhere: got %v, want an error listing the kernels without modules", err)
	}
}

func TestCompareReleases(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"6.1.0-10-amd64", "6.1.0-9-amd64", 1},
		{"6.10.0", "6.9.0", 1},
		{"5.10.0", "6.1.0", -1},
		{"6.1.0-10-amd64", "6.1.0-10-amd64", 0},
		{"6.1.0-10-cloud-amd64", "6.1.0-10-amd64", 1},
		{"6.1", "6.1.0", -1},
	}
	for _, tt := range tests {
		got := compareReleases(tt.a, tt.b)
		if (got > 0) != (tt.want > 0) || (got < 0) != (tt.want < 0) {
			t.Errorf("compareReleases(%q, %q) = %d, want sign %d", tt.a, tt.b, got, tt.want)
		}
	}
}
