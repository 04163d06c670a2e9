package initsys

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/agent/proto"
)

func TestParseCmdline(t *testing.T) {
	good := "console=ttyS0 reboot=k banger.hostname=dev banger.ip=172.16.0.5/24 banger.gw=172.16.0.1 banger.mtu=1400 banger.dns=172.16.0.1,1.1.1.1 banger.search=vm,example.org banger.growroot=1 -- init-args"
	c, err := ParseCmdline(good)
	if err != nil {
		t.Fatal(err)
	}
	want := BootConfig{
		Hostname: "dev", Iface: "eth0",
		Address: netip.MustParsePrefix("172.16.0.5/24"), Gateway: netip.MustParseAddr("172.16.0.1"), MTU: 1400,
		DNS:    []netip.Addr{netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("1.1.1.1")},
		Search: []string{"vm", "example.org"}, GrowRoot: true,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v, want %+v", c, want)
	}
	if c, err := ParseCmdline("quiet"); err != nil || c.Address.IsValid() || c.Iface != "eth0" || c.GrowRoot {
		t.Errorf("no banger parameters: got %+v, %v; want no network, eth0, no growroot", c, err)
	}
	if c, err := ParseCmdline("banger.growroot=0"); err != nil || c.GrowRoot {
		t.Errorf("banger.growroot=0: got %+v, %v; want no growroot", c, err)
	}
	bad := []struct{ cmdline, mention string }{
		{"banger.ip=10.0.0.5", "banger.ip"},
		{"banger.gw=nope banger.ip=10.0.0.5/24", "banger.gw"},
		{"banger.mtu=12", "banger.mtu"},
		{"banger.dns=1.1.1.1,x", "banger.dns"},
		{"banger.hostname=bad_name!", "banger.hostname"},
		{"banger.gw=10.0.0.1", "without banger.ip"},
		{"banger.growroot=yes-please", "banger.growroot"},
	}
	for _, b := range bad {
		if _, err := ParseCmdline(b.cmdline); err == nil || !strings.Contains(err.Error(), b.mention) {
			t.Errorf("ParseCmdline(%q): got %v, want an error mentioning %q", b.cmdline, err, b.mention)
		}
	}
}

func TestLoadWorkload(t *testing.T) {
	dir := t.TempDir()
	if w, err := LoadWorkload(filepath.Join(dir, "missing.json")); err != nil || len(w.Argv()) != 0 {
		t.Errorf("missing file: got %+v, %v; want no workload", w, err)
	}
	p := filepath.Join(dir, "init.json")
	if err := os.WriteFile(p, []byte(`{"entrypoint":["/docker-entrypoint.sh"],"cmd":["nginx","-g","daemon off;"],"env":["A=1"],"workdir":"/srv","user":"www"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := LoadWorkload(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Argv(); !reflect.DeepEqual(got, []string{"/docker-entrypoint.sh", "nginx", "-g", "daemon off;"}) {
		t.Errorf("argv: got %q", got)
	}
	if err := os.WriteFile(p, []byte(`{"entrypoint":["x"],"entrypiont":["typo"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadWorkload(p); err == nil || !strings.Contains(err.Error(), "entrypiont") {
		t.Errorf("unknown field: got %v, want an error naming it", err)
	}
}

// TestVirtioPortLinks builds a fake sysfs with two named ports and one unnamed
// one, and checks the links udev would have made.
func TestVirtioPortLinks(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	port := func(name, portName string) {
		d := filepath.Join(sys, "class", "virtio-ports", name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if portName != "" {
			if err := os.WriteFile(filepath.Join(d, "name"), []byte(portName+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	port("vport0p1", "banger.agent")
	port("vport0p2", "org.qemu.guest_agent.0")
	port("vport0p3", "")
	port("vport0p4", "../escape")
	n, err := virtioPortLinks(sys, dev)
	if n != 2 {
		t.Errorf("links made: got %d, want 2", n)
	}
	if err == nil || !strings.Contains(err.Error(), "vport0p4") {
		t.Errorf("bad port name: got %v, want an error about vport0p4", err)
	}
	if got, err := os.Readlink(filepath.Join(dev, "virtio-ports", "banger.agent")); err != nil || got != "../vport0p1" {
		t.Errorf("banger.agent link: got %q, %v; want ../vport0p1", got, err)
	}
	if _, err := os.Lstat(filepath.Join(dev, "escape")); err == nil {
		t.Error("a port name with .. created a link outside /dev/virtio-ports")
	}
	if n, err := virtioPortLinks(t.TempDir(), dev); n != 0 || err != nil {
		t.Errorf("no virtio-serial device: got %d, %v; want nothing, no error", n, err)
	}
}

func TestWriteHostsEntry(t *testing.T) {
	etc := t.TempDir()
	if err := writeHostsEntry(etc, "dev"); err != nil {
		t.Fatal(err)
	}
	if err := writeHostsEntry(etc, "dev"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(etc, "hosts"))
	if got := strings.Count(string(b), "127.0.1.1 dev\n"); got != 1 || !strings.Contains(string(b), "localhost") {
		t.Errorf("hosts after two writes: %q, want localhost and one entry for dev", b)
	}
	if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte("10.0.0.9 web dev"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeHostsEntry(etc, "dev"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(etc, "hosts")); string(b) != "10.0.0.9 web dev" {
		t.Errorf("an existing entry for the name was changed: %q", b)
	}
}

func TestWriteHostname(t *testing.T) {
	etc := t.TempDir()
	p := filepath.Join(etc, "hostname")
	if err := os.WriteFile(p, []byte("banger\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeHostname(etc, "dev"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "dev\n" {
		t.Errorf("/etc/hostname = %q, want the VM's name", b)
	}
	// Already right: left as it is (same inode, same mtime).
	before, _ := os.Stat(p)
	if err := writeHostname(etc, "dev"); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(p); !after.ModTime().Equal(before.ModTime()) {
		t.Error("/etc/hostname was rewritten although it already said dev")
	}
}

func TestPoweroffAsReboot(t *testing.T) {
	for _, tt := range []struct {
		cmdline string
		want    bool
		err     bool
	}{
		{"console=ttyS0", false, false},
		{"banger.poweroff=reboot", true, false},
		{"banger.poweroff=halt", false, false},
		{"banger.poweroff=sometimes", false, true},
	} {
		c, err := ParseCmdline(tt.cmdline)
		if (err != nil) != tt.err || c.PoweroffReboots != tt.want {
			t.Errorf("ParseCmdline(%q) = %v, %v; want %v, err=%v", tt.cmdline, c.PoweroffReboots, err, tt.want, tt.err)
		}
	}
	if rebootCmd(proto.ActionPoweroff, false) != unix.LINUX_REBOOT_CMD_POWER_OFF ||
		rebootCmd(proto.ActionPoweroff, true) != unix.LINUX_REBOOT_CMD_RESTART ||
		rebootCmd(proto.ActionReboot, false) != unix.LINUX_REBOOT_CMD_RESTART {
		t.Error("rebootCmd does not map actions as documented")
	}
}
