package disk

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseFUSEMounts(t *testing.T) {
	info := `22 1 0:21 / /proc rw,nosuid - proc proc rw
45 27 0:39 / /state/disks/vm1/.grow-export rw,nosuid,nodev,relatime - fuse /dev/fuse rw,user_id=0
46 27 0:40 / /state/disks/vm\0402/.grow-export rw shared:5 - fuse.qemu /dev/fuse rw
47 27 0:41 / /state/disks-other/x rw - fuse /dev/fuse rw
48 27 0:42 / /state/disks/vm3/mnt rw - ext4 /dev/loop3 rw
49 27 0:43 / /state/disks rw - fuseblk /dev/fuse rw
garbage line
`
	got := parseFUSEMounts([]byte(info), "/state/disks")
	want := []string{"/state/disks/vm1/.grow-export", "/state/disks/vm 2/.grow-export"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseFUSEMounts = %q, want %q", got, want)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/a\011b\134c`: "/a\tb\\c", `/plain`: "/plain", `/trail\04`: `/trail\04`} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// The read/write fallback of the sparse copy (for filesystems that refuse
// copy_file_range) must copy data and leave blocks of zeros unwritten.
func TestCopyRangeRWKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	const size = 8 << 20
	data := make([]byte, size)
	for i := 0; i < size; i += 1 << 20 { // one block of data per MiB, zeros between
		copy(data[i:], bytes.Repeat([]byte{0xab}, blockSize))
	}
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, data, 0o644); err != nil { // fully allocated, zeros included
		t.Fatal(err)
	}
	s, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := copyRangeRW(context.Background(), d, s, 0, size); err != nil {
		t.Fatal(err)
	}
	if err := d.Truncate(size); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(d.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("copy differs from the source")
	}
	var st unix.Stat_t
	if err := unix.Stat(d.Name(), &st); err != nil {
		t.Fatal(err)
	}
	if alloc := st.Blocks * 512; alloc > 8*blockSize*2 {
		t.Errorf("copy allocates %d bytes for 8 data blocks: zeros were written", alloc)
	}
}

// Where this process cannot grow a qcow2's filesystem (no qemu-storage-daemon or no
// FUSE), the overlay still gets its new size and the disk asks the guest to resize.
func TestQcow2GrowFallsBackToOnlineResize(t *testing.T) {
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("needs qemu-img")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("needs mkfs.ext4")
	}
	// A PATH with qemu-img and nothing else: no qemu-storage-daemon, no e2fsprogs.
	bin := t.TempDir()
	if err := os.Symlink(qemuImg, filepath.Join(bin, "qemu-img")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.ext4")
	if out, err := exec.Command(mkfs, "-q", base, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	t.Setenv("PATH", bin)
	if fuseGrowAvailable() == nil {
		t.Fatal("fuseGrowAvailable() = nil with no qemu-storage-daemon on PATH")
	}
	q := NewQcow2()
	d, err := q.Clone(context.Background(), base, CloneRequest{VMID: "v", Dir: filepath.Join(dir, "v"), SizeBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Remove(context.Background(), d)
	if !d.NeedsOnlineResize || d.SizeBytes != 32<<20 {
		t.Errorf("disk %+v: want NeedsOnlineResize and size %d", d, 32<<20)
	}
	out, err := exec.Command(qemuImg, "info", d.Path).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("virtual size: 32 MiB")) {
		t.Errorf("qemu-img info: %v\n%s\nwant virtual size 32 MiB", err, out)
	}
}
