package privileged

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// dmMajor is the block major the fake tree gives device-mapper devices.
const dmMajor = 253

// fakeDevTree is a /dev, /dev/mapper and /sys/dev/block in a temporary directory,
// where a test makes the nodes and sysfs entries dmsetup and the kernel would. Its
// nodes are real block and character nodes (mknod, so root only), never opened for
// I/O: the code under test opens them O_PATH.
type fakeDevTree struct {
	devPaths
	sysDevices string // the sysfs directories behind /sys/dev/block's links

	mu   sync.Mutex // guards next
	next uint32     // the next dm minor
}

func newFakeDevTree(t *testing.T) *fakeDevTree {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes block device nodes (mknod)")
	}
	dir := t.TempDir()
	f := &fakeDevTree{
		devPaths:   devPaths{mapperDir: filepath.Join(dir, "dev", "mapper"), devDir: filepath.Join(dir, "dev"), sysDevBlock: filepath.Join(dir, "sys", "dev", "block")},
		sysDevices: filepath.Join(dir, "sys", "devices", "virtual", "block"),
		next:       40,
	}
	for _, d := range []string{f.mapperDir, f.sysDevBlock, f.sysDevices} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// mapperKind is how /dev/mapper/NAME shows a device.
type mapperKind int

const (
	mapperNode    mapperKind = iota // a block node, as `dmsetup mknodes` makes it
	mapperSymlink                   // a symlink to ../dm-N, as udev makes it
)

// addDM registers dm device dm-N called name in sysfs, makes /dev/dm-N when
// withDevNode, and /dev/mapper/NAME as kind. It returns N.
func (f *fakeDevTree) addDM(t *testing.T, name string, kind mapperKind, withDevNode bool) uint32 {
	t.Helper()
	f.mu.Lock()
	n := f.next
	f.next++
	f.mu.Unlock()
	sys := filepath.Join(f.sysDevices, fmt.Sprintf("dm-%d", n))
	if err := os.MkdirAll(filepath.Join(sys, "dm"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sys, "dm", "name"), []byte(name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustSymlink(t, sys, filepath.Join(f.sysDevBlock, fmt.Sprintf("%d:%d", dmMajor, n)))
	if withDevNode {
		mknodBlock(t, filepath.Join(f.devDir, fmt.Sprintf("dm-%d", n)), dmMajor, n)
	}
	switch kind {
	case mapperNode:
		mknodBlock(t, filepath.Join(f.mapperDir, name), dmMajor, n)
	case mapperSymlink:
		mustSymlink(t, fmt.Sprintf("../dm-%d", n), filepath.Join(f.mapperDir, name))
	}
	return n
}

func mknodBlock(t *testing.T, path string, major, minor uint32) {
	t.Helper()
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor))); err != nil {
		t.Fatalf("mknod %s: %v", path, err)
	}
}

func TestChownDMNode(t *testing.T) {
	const uid, gid = 4242, 4243
	const name = "banger-0123abcd-vm1"
	tests := []struct {
		name    string
		setup   func(t *testing.T, f *fakeDevTree) (changed []string)
		wantErr string
	}{
		{"dmsetup node and /dev/dm-N", func(t *testing.T, f *fakeDevTree) []string {
			n := f.addDM(t, name, mapperNode, true)
			return []string{filepath.Join(f.mapperDir, name), filepath.Join(f.devDir, fmt.Sprintf("dm-%d", n))}
		}, ""},
		{"udev symlink", func(t *testing.T, f *fakeDevTree) []string {
			n := f.addDM(t, name, mapperSymlink, true)
			return []string{filepath.Join(f.devDir, fmt.Sprintf("dm-%d", n))}
		}, ""},
		{"no /dev/dm-N", func(t *testing.T, f *fakeDevTree) []string {
			f.addDM(t, name, mapperNode, false)
			return []string{filepath.Join(f.mapperDir, name)}
		}, ""},
		{"symlink to /etc/shadow", func(t *testing.T, f *fakeDevTree) []string {
			mustSymlink(t, "/etc/shadow", filepath.Join(f.mapperDir, name))
			return nil
		}, "not to a"},
		{"symlink to a disk", func(t *testing.T, f *fakeDevTree) []string {
			mknodBlock(t, filepath.Join(f.devDir, "sda"), 8, 0)
			mustSymlink(t, "../sda", filepath.Join(f.mapperDir, name))
			return nil
		}, "not to a"},
		{"node of another dm device", func(t *testing.T, f *fakeDevTree) []string {
			n := f.addDM(t, "vg0-root", mapperNode, true)
			mknodBlock(t, filepath.Join(f.mapperDir, name), dmMajor, n)
			return nil
		}, `"vg0-root", not`},
		{"node of a disk", func(t *testing.T, f *fakeDevTree) []string {
			mknodBlock(t, filepath.Join(f.mapperDir, name), 8, 0)
			return nil
		}, "not a device-mapper device"},
		{"character device", func(t *testing.T, f *fakeDevTree) []string {
			if err := unix.Mknod(filepath.Join(f.mapperDir, name), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
				t.Fatal(err)
			}
			return nil
		}, "not a block device"},
		{"regular file", func(t *testing.T, f *fakeDevTree) []string {
			mustWrite(t, filepath.Join(f.mapperDir, name))
			return nil
		}, "not a block device"},
		{"missing", func(t *testing.T, f *fakeDevTree) []string { return nil }, "no such file"},
		{"dm-N is another device", func(t *testing.T, f *fakeDevTree) []string {
			n := f.addDM(t, name, mapperNode, false)
			mknodBlock(t, filepath.Join(f.devDir, fmt.Sprintf("dm-%d", n)), 8, 0)
			return nil
		}, "is not the block device"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeDevTree(t)
			changed := tc.setup(t, f)
			shadowUID, shadowGID := ownerOf(t, "/etc/shadow")
			err := chownDMNode(f.devPaths, name, uid, gid)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				t.Logf("refused: %v", err)
				if u, g := ownerOf(t, "/etc/shadow"); u != shadowUID || g != shadowGID {
					t.Errorf("/etc/shadow changed owner to %d:%d", u, g)
				}
				if tc.name != "dm-N is another device" {
					assertNoneOwnedBy(t, filepath.Dir(f.devDir), uid)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want success", err)
			}
			for _, p := range changed {
				if u, g := ownerOf(t, p); u != uid || g != gid {
					t.Errorf("%s: got owner %d:%d, want %d:%d", p, u, g, uid, gid)
				}
			}
			if fi, err := os.Lstat(filepath.Join(f.mapperDir, name)); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				if u, _ := ownerOf(t, filepath.Join(f.mapperDir, name)); u != 0 {
					t.Errorf("the udev symlink itself changed owner to %d, want it left alone", u)
				}
			}
		})
	}
}

// assertNoneOwnedBy fails if anything under dir belongs to uid.
func assertNoneOwnedBy(t *testing.T, dir string, uid int) {
	t.Helper()
	_ = filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			if u, _ := ownerOf(t, p); u == uid {
				t.Errorf("%s was handed to uid %d by a refused call", p, uid)
			}
		}
		return nil
	})
}

// TestDMCreateHandsSnapshotToOwner: through the server, a VM's snapshot node (and its
// /dev/dm-N) goes to the configured owner; an origin's stays root's.
func TestDMCreateHandsSnapshotToOwner(t *testing.T) {
	tree := newFakeDevTree(t)
	f := newBlockFixture(t, tree.devPaths)
	h := f.h
	nodes := map[string]uint32{}
	var mu sync.Mutex
	h.block.onDMCreate = func(name string) error {
		n := tree.addDM(t, name, mapperNode, true)
		mu.Lock()
		nodes[name] = n
		mu.Unlock()
		return nil
	}
	ctx := context.Background()
	vm1 := f.prefix + "vm1"
	if _, err := h.client.DMCreate(ctx, DMCreateRequest{Name: vm1 + ".origin", Table: "0 2048 linear " + baseLoop + " 0\n2048 2048 zero\n"}); err != nil {
		t.Fatal(err)
	}
	// The fake DMList does not see what the fake DMCreate made; say it exists.
	h.block.mu.Lock()
	h.block.dms = append(h.block.dms, vm1+".origin")
	h.block.mu.Unlock()
	resp, err := h.client.DMCreate(ctx, DMCreateRequest{Name: vm1, Table: "0 4096 snapshot /dev/mapper/" + vm1 + ".origin " + cowLoop + " P 8\n"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "/dev/mapper/" + vm1; resp.Device != want {
		t.Errorf("got device %q, want %q", resp.Device, want)
	}
	// The owner is root here (the test runs as root), so the gid tells them apart.
	for name, want := range map[string][2]int{vm1: {h.ownerUID, h.ownerGID}, vm1 + ".origin": {0, 0}} {
		for _, p := range []string{filepath.Join(tree.mapperDir, name), filepath.Join(tree.devDir, fmt.Sprintf("dm-%d", nodes[name]))} {
			if u, g := ownerOf(t, p); u != want[0] || g != want[1] {
				t.Errorf("%s: got owner %d:%d, want %d:%d", p, u, g, want[0], want[1])
			}
		}
	}
}
