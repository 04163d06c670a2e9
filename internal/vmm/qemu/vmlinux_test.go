package qemu

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/vmm/vmmtest"
)

// TestBootVmlinuxPVH boots an uncompressed ELF vmlinux (entered through its
// PVH note, no decompressor, no real-mode setup) instead of the bzImage: the
// driver takes either. This machine has no vmlinux file, so the test unpacks
// the host's bzImage when its payload is LZ4 and lz4 is installed.
func TestBootVmlinuxPVH(t *testing.T) {
	g := newGuest(t)
	g.kernel = unpackVmlinux(t, g.kernel)
	drv := New(Options{Logger: testLogger(t)})
	spec := g.spec(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	h, err := drv.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	vmmtest.KillOnCleanup(t, drv, h)
	if _, err := vmmtest.WaitAgent(ctx, drv, h); err != nil {
		b, _ := os.ReadFile(spec.ConsoleLog)
		t.Fatalf("agent: %v\nconsole:\n%s", err, b)
	}
	t.Logf("vmlinux (PVH): agent healthy %s after Start", time.Since(t0).Round(time.Millisecond))
	if err := drv.Stop(ctx, h, time.Minute); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// unpackVmlinux extracts the ELF vmlinux from an x86 bzImage with an LZ4
// payload, and checks that it carries the PVH entry note.
func unpackVmlinux(t *testing.T, bzImage string) string {
	t.Helper()
	if _, err := exec.LookPath("lz4"); err != nil {
		t.Skip("lz4 not installed: needed to unpack a vmlinux from the host's bzImage (apt-get install lz4)")
	}
	b, err := os.ReadFile(bzImage)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 0x250 || string(b[0x202:0x206]) != "HdrS" {
		t.Skipf("%s is not a bzImage", bzImage)
	}
	setupSects := int(b[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	off := int(binary.LittleEndian.Uint32(b[0x248:]))
	n := int(binary.LittleEndian.Uint32(b[0x24c:]))
	start := (setupSects+1)*512 + off
	if start+n > len(b) || !bytes.HasPrefix(b[start:], []byte{0x02, 0x21, 0x4c, 0x18}) {
		t.Skipf("%s's payload is not LZ4: cannot unpack it here", bzImage)
	}
	out := filepath.Join(t.TempDir(), "vmlinux")
	cmd := exec.Command("lz4", "-dc")
	cmd.Stdin = bytes.NewReader(b[start : start+n])
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = f
	// lz4 complains about the size word the kernel's build appends after the
	// stream (exit 1), having written the whole image: the ELF check decides.
	_ = cmd.Run()
	f.Close()
	ef, err := elf.Open(out)
	if err != nil {
		t.Fatalf("unpacked payload is not an ELF vmlinux: %v", err)
	}
	defer ef.Close()
	if !hasPVHNote(ef) {
		t.Skip("the host kernel has no PVH entry (CONFIG_PVH): QEMU cannot boot its vmlinux directly")
	}
	return out
}

// hasPVHNote looks for XEN_ELFNOTE_PHYS32_ENTRY (18) in a "Xen" note.
func hasPVHNote(f *elf.File) bool {
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		for len(data) >= 12 {
			nsz := int(binary.LittleEndian.Uint32(data))
			dsz := int(binary.LittleEndian.Uint32(data[4:]))
			typ := binary.LittleEndian.Uint32(data[8:])
			name := data[12:min(len(data), 12+nsz)]
			if bytes.Equal(bytes.TrimRight(name, "\x00"), []byte("Xen")) && typ == 18 {
				return true
			}
			adv := 12 + (nsz+3)&^3 + (dsz+3)&^3
			if adv > len(data) {
				break
			}
			data = data[adv:]
		}
	}
	return false
}
