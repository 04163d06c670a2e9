package privileged

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"banger/internal/blockdev"
	"banger/internal/disk"
	"banger/internal/disk/disktest"
)

// simDM is a BlockOps with real loop devices (blockdev.Local) and a simulated
// device-mapper, so that the dm-snapshot strategy's real traffic can go through the
// server's validation on a kernel without device-mapper:
//   - a table's loop devices are held open while it exists, as the kernel holds them,
//     so LoopDetach's deferred detach (autoclear) is the real one;
//   - the nodes the server hands to the owner are made in a fakeDevTree;
//   - a snapshot's "device" is a regular file holding its origin's data (the base,
//     then zeros), so the disk reads as its base and GrowExt4 works on it. It is not
//     copy-on-write; on real device-mapper the integration test runs the disk
//     conformance suite through the real helper instead.
type simDM struct {
	blockdev.Local
	t    *testing.T
	tree *fakeDevTree
	dir  string // snapshot files

	mu   sync.Mutex // guards devs
	devs map[string]*simDev
}

type simDev struct {
	held []*os.File // the loop devices the table uses
	base string     // the file whose data the device starts with
	file string     // a snapshot's stand-in file
}

func newSimDM(t *testing.T, tree *fakeDevTree) *simDM {
	s := &simDM{t: t, tree: tree, dir: t.TempDir(), devs: map[string]*simDev{}}
	t.Cleanup(s.forget)
	return s
}

func (s *simDM) DMAvailable(context.Context) error { return nil }

func (s *simDM) DMCreate(ctx context.Context, name, table string) (string, error) {
	loops, err := blockdev.LoopList(ctx)
	if err != nil {
		return "", err
	}
	backing := func(dev string) string {
		for _, l := range loops {
			if l.Device == dev {
				return l.BackingFile
			}
		}
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.devs[name] != nil {
		return "", fmt.Errorf("sim: device %s already exists", name)
	}
	d := &simDev{}
	var sectors int64
	for _, line := range strings.Split(strings.TrimSpace(table), "\n") {
		f := strings.Fields(line)
		n, _ := strconv.ParseInt(f[1], 10, 64)
		sectors += n
		for _, a := range f[3:] {
			if strings.HasPrefix(a, "/dev/loop") {
				h, err := os.Open(a)
				if err != nil {
					return "", err
				}
				d.held = append(d.held, h)
			}
		}
		switch f[2] {
		case "linear":
			d.base = backing(f[3])
		case "snapshot":
			if o, ok := strings.CutPrefix(f[3], blockdev.MapperDir+"/"); ok {
				d.base = s.devs[o].base
			} else {
				d.base = backing(f[3])
			}
		}
	}
	dev := blockdev.MapperDir + "/" + name
	if !strings.HasSuffix(name, DMOriginSuffix) {
		d.file = filepath.Join(s.dir, name)
		if err := copySized(d.base, d.file, sectors*512); err != nil {
			return "", err
		}
		dev = d.file
	}
	s.tree.addDM(s.t, name, mapperNode, true)
	s.devs[name] = d
	return dev, nil
}

func copySized(from, to string, size int64) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if err == nil {
		err = dst.Truncate(size)
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *simDM) DMRemove(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.devs[name]
	if d == nil {
		return nil
	}
	// Like the kernel, refuse to remove an origin its snapshot still uses.
	if snap, ok := strings.CutSuffix(name, DMOriginSuffix); ok && s.devs[snap] != nil {
		return fmt.Errorf("sim: %s is in use by %s", name, snap)
	}
	s.dropLocked(name, d)
	return nil
}

func (s *simDM) dropLocked(name string, d *simDev) {
	for _, h := range d.held {
		h.Close()
	}
	if d.file != "" {
		os.Remove(d.file)
	}
	s.tree.removeDM(s.t, name)
	delete(s.devs, name)
}

func (s *simDM) DMList(context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n := range s.devs {
		names = append(names, n)
	}
	return names, nil
}

// forget drops every device, as a host reboot does.
func (s *simDM) forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, d := range s.devs {
		s.dropLocked(n, d)
	}
}

// removeDM undoes addDM for name.
func (f *fakeDevTree) removeDM(t *testing.T, name string) {
	t.Helper()
	node := filepath.Join(f.mapperDir, name)
	_ = os.Remove(node)
	ents, _ := os.ReadDir(f.sysDevices)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(f.sysDevices, e.Name(), "dm", "name"))
		if err != nil || strings.TrimSpace(string(b)) != name {
			continue
		}
		_ = os.RemoveAll(filepath.Join(f.sysDevices, e.Name()))
		_ = os.Remove(filepath.Join(f.devDir, e.Name()))
		_ = os.Remove(filepath.Join(f.sysDevBlock, fmt.Sprintf("%d:%s", dmMajor, strings.TrimPrefix(e.Name(), "dm-"))))
	}
}

// TestDMSnapshotStrategyThroughServer runs the dm-snapshot strategy's real traffic
// (Clone, grown Clone, Remove, Reap, Activate after a "reboot") through BlockClient,
// the real server and its validation, onto real loop devices and the simulated
// device-mapper: every call the disk layer makes must pass, and nothing may be left.
func TestDMSnapshotStrategyThroughServer(t *testing.T) {
	tree := newFakeDevTree(t) // skips without root
	disktest.RequireTools(t, "mkfs.ext4", "debugfs", "dumpe2fs", "e2fsck", "resize2fs")
	h := newHarnessDevices(t, tree.devPaths)
	if err := h.lay.Create(-1, -1); err != nil {
		t.Fatal(err)
	}
	sim := newSimDM(t, tree)
	h.block.inner = sim
	t.Cleanup(func() {
		loops, _ := blockdev.LoopList(context.Background())
		for _, l := range blockdev.LoopsUnder(loops, h.lay.Root) {
			_ = blockdev.LoopDetach(context.Background(), l.Device)
		}
	})
	ctx := context.Background()
	disks := h.lay.DisksDir()
	base := filepath.Join(h.lay.ImagesDir(), "base.ext4")
	disktest.MakeBase(t, base, 32<<20, 0)
	s := disk.NewDMSnapshot(disk.Config{DisksDir: disks, ImagesDir: h.lay.ImagesDir(), Ops: NewBlockClient(h.client)})
	if err := s.Available(ctx); err != nil {
		t.Fatal(err)
	}
	req := func(id string, size int64) disk.CloneRequest {
		return disk.CloneRequest{VMID: id, Dir: filepath.Join(disks, id), SizeBytes: size}
	}

	same, err := s.Clone(ctx, base, req("vm1", 0))
	if err != nil {
		t.Fatalf("clone: %v", err)
	}
	if got := disktest.ReadFile(t, same, disktest.HelloPath); got != disktest.HelloText {
		t.Errorf("clone reads %q, want %q", got, disktest.HelloText)
	}
	grown, err := s.Clone(ctx, base, req("vm2", 48<<20))
	if err != nil {
		t.Fatalf("grown clone: %v", err)
	}
	if got := disktest.FSBytes(t, grown.Path); got < 47<<20 {
		t.Errorf("grown clone's filesystem is %d bytes, want about %d", got, 48<<20)
	}
	wantOwner := [2]int{h.ownerUID, h.ownerGID}
	for _, n := range []string{same.DM.Name, grown.DM.Name} {
		if u, g := ownerOf(t, filepath.Join(tree.mapperDir, n)); [2]int{u, g} != wantOwner {
			t.Errorf("%s: node owner %d:%d, want %v", n, u, g, wantOwner)
		}
	}

	// A "reboot": the devices go, the files stay; Activate makes them again.
	sim.forget()
	if grown, err = s.Activate(ctx, grown); err != nil {
		t.Fatalf("activate: %v", err)
	}
	// A disk bangerd no longer knows, and vm1's, are reaped; vm2's is kept.
	if _, err := s.Clone(ctx, base, req("vm3", 40<<20)); err != nil {
		t.Fatalf("clone vm3: %v", err)
	}
	if err := s.Reap(ctx, []disk.Disk{grown}); err != nil {
		t.Fatalf("reap: %v", err)
	}
	names, _ := sim.DMList(ctx)
	if want := []string{grown.DM.Name, grown.DM.Origin}; len(names) != 2 || !contains(names, want[0]) || !contains(names, want[1]) {
		t.Errorf("after reap, devices %v, want only %v", names, want)
	}
	for _, d := range []disk.Disk{same, grown} {
		if err := s.Remove(ctx, d); err != nil {
			t.Fatalf("remove %s: %v", d.VMID, err)
		}
	}
	if names, _ := sim.DMList(ctx); len(names) != 0 {
		t.Errorf("devices left: %v", names)
	}
	// vm3's files stay (Reap leaves files to Remove), but no loop device may.
	for _, l := range disktest.Leftovers(t, disks, "", h.lay.ImagesDir()) {
		if strings.HasPrefix(l, "loop ") {
			t.Errorf("left behind: %s", l)
		}
	}
	for i, l := range h.audit.Lines(t) {
		if l["result"] != "ok" {
			t.Errorf("audit line %d: the disk layer's call %v was %v: %v", i, l["op"], l["result"], l["error"])
		}
	}
	t.Logf("%d helper calls, all accepted", len(h.audit.Lines(t)))
}
