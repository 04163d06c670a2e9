package guestinit

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeSys makes a /sys/class/block with the given devices ("NAME": "MAJ:MIN").
func fakeSys(t *testing.T, devs map[string]string) string {
	t.Helper()
	sys := t.TempDir()
	for name, num := range devs {
		if err := os.MkdirAll(filepath.Join(sys, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sys, name, "dev"), []byte(num+"\n"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	return sys
}

func TestWaitRootMakesNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod of a block device needs root")
	}
	sys := fakeSys(t, map[string]string{"vda": "254:0"})
	dev := t.TempDir()
	d := Devices{SysBlock: sys, Dev: dev}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := d.WaitRoot(ctx, "/dev/vda")
	if err != nil {
		t.Fatalf("WaitRoot: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(got, &st); err != nil {
		t.Fatal(err)
	}
	if got != filepath.Join(dev, "vda") || st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != 254 || unix.Minor(st.Rdev) != 0 {
		t.Errorf("node %s mode %o rdev %d:%d, want block 254:0 at %s/vda", got, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), dev)
	}
}

func TestWaitRootAppearsLater(t *testing.T) {
	sys := fakeSys(t, nil)
	dev := t.TempDir()
	// The node exists already (as with devtmpfs); sysfs catches up later,
	// as when the driver probes after the wait began.
	if err := os.WriteFile(filepath.Join(dev, "vdb"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		os.MkdirAll(filepath.Join(sys, "vdb"), 0o755)
		os.WriteFile(filepath.Join(sys, "vdb", "dev"), []byte("254:16\n"), 0o444)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := Devices{SysBlock: sys, Dev: dev, Poll: 5 * time.Millisecond}.WaitRoot(ctx, "vdb")
	if err != nil || got != filepath.Join(dev, "vdb") {
		t.Errorf("got %q, %v; want %s/vdb", got, err, dev)
	}
}

func TestWaitRootTimeout(t *testing.T) {
	sys := fakeSys(t, map[string]string{"vda": "254:0", "loop0": "7:0"})
	dev := t.TempDir()
	for _, n := range []string{"vda", "loop0"} {
		os.WriteFile(filepath.Join(dev, n), nil, 0o600)
	}
	tests := []struct{ spec, want string }{
		{"/dev/vdz", "root device /dev/vdz did not appear (not present yet); block devices seen: loop0, vda"},
		{"LABEL=nothing", "root device LABEL=nothing did not appear"},
		{"/dev/disk/by-label/x", "only /dev/NAME, LABEL= and UUID= are understood"},
		{"PARTUUID=1234", "want /dev/NAME, LABEL=x or UUID=x"},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err := Devices{SysBlock: sys, Dev: dev}.WaitRoot(ctx, tt.spec)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("WaitRoot(%s): got %v, want an error saying %q", tt.spec, err, tt.want)
		}
	}
}

func TestWaitRootByLabelAndUUID(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (apt-get install e2fsprogs)")
	}
	dev := t.TempDir()
	const uuid = "0b7f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e"
	for name, args := range map[string][]string{
		"vda": {"-L", "other"},
		"vdb": {"-L", "bangerroot", "-U", uuid},
	} {
		img := filepath.Join(dev, name)
		cmd := exec.Command("mkfs.ext4", append([]string{"-q", "-F"}, append(args, img, "4M")...)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4: %v\n%s", err, b)
		}
	}
	os.WriteFile(filepath.Join(dev, "vdc"), []byte("not a filesystem"), 0o600)
	sys := fakeSys(t, map[string]string{"vda": "254:0", "vdb": "254:16", "vdc": "254:32"})
	for _, spec := range []string{"LABEL=bangerroot", "UUID=" + uuid, "UUID=" + strings.ToUpper(uuid)} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		got, err := Devices{SysBlock: sys, Dev: dev}.WaitRoot(ctx, spec)
		cancel()
		if err != nil || got != filepath.Join(dev, "vdb") {
			t.Errorf("WaitRoot(%s) = %q, %v; want %s/vdb", spec, got, err, dev)
		}
	}
}

func TestParseDevNumber(t *testing.T) {
	for in, ok := range map[string]bool{"254:0\n": true, "8:17": true, "254": false, "a:b": false, "": false} {
		_, _, err := parseDevNumber(in)
		if (err == nil) != ok {
			t.Errorf("parseDevNumber(%q): err %v, want ok=%v", in, err, ok)
		}
	}
}
