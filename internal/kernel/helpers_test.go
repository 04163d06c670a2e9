package kernel

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// vmlinuxSpec describes a minimal ELF the tests craft: no real kernel is
// shipped as an ELF vmlinux on this machine.
type vmlinuxSpec struct {
	typ       elf.Type    // default ET_EXEC
	machine   elf.Machine // default EM_X86_64
	banner    string      // "Linux version ..." text to embed, if any
	pvhEntry  uint64      // a Xen PHYS32_ENTRY note when non-zero
	linuxNote bool        // a "Linux" note (as vmlinux's .notes has)
	ikconfig  string      // an IKCFG_ST gzip blob of this config, if any
}

func note(name string, typ uint32, desc []byte) []byte {
	var b bytes.Buffer
	n := append([]byte(name), 0)
	binary.Write(&b, binary.LittleEndian, [3]uint32{uint32(len(n)), uint32(len(desc)), typ})
	b.Write(n)
	b.Write(make([]byte, (4-len(n)%4)%4))
	b.Write(desc)
	b.Write(make([]byte, (4-len(desc)%4)%4))
	return b.Bytes()
}

func craftVmlinux(t *testing.T, s vmlinuxSpec) []byte {
	t.Helper()
	if s.typ == 0 {
		s.typ = elf.ET_EXEC
	}
	if s.machine == 0 {
		s.machine = elf.EM_X86_64
	}
	var notes bytes.Buffer
	if s.pvhEntry != 0 {
		desc := make([]byte, 8)
		binary.LittleEndian.PutUint64(desc, s.pvhEntry)
		notes.Write(note("Xen", xenElfnotePhys32Entry, desc))
	}
	if s.linuxNote {
		notes.Write(note("Linux", 0x100, []byte{1, 2, 3, 4}))
	}
	var body bytes.Buffer
	body.WriteString("\x00some kernel text\x00")
	if s.banner != "" {
		body.WriteString("Linux version " + s.banner + "\n\x00")
	}
	if s.ikconfig != "" {
		body.WriteString("IKCFG_ST")
		zw := gzip.NewWriter(&body)
		zw.Write([]byte(s.ikconfig))
		zw.Close()
		body.WriteString("IKCFG_ED")
	}
	const ehsize, phsize = 64, 56
	nprogs := 1
	if notes.Len() > 0 {
		nprogs = 2
	}
	notesOff := uint64(ehsize + phsize*nprogs)
	bodyOff := notesOff + uint64(notes.Len())
	total := bodyOff + uint64(body.Len())
	hdr := elf.Header64{
		Type: uint16(s.typ), Machine: uint16(s.machine), Version: 1, Entry: 0x1000000,
		Phoff: ehsize, Ehsize: ehsize, Phentsize: phsize, Phnum: uint16(nprogs), Shentsize: 64,
	}
	copy(hdr.Ident[:], "\x7fELF")
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	var out bytes.Buffer
	binary.Write(&out, binary.LittleEndian, hdr)
	binary.Write(&out, binary.LittleEndian, elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Off: 0, Vaddr: 0xffffffff81000000, Paddr: 0x1000000, Filesz: total, Memsz: total, Align: 0x200000})
	if nprogs == 2 {
		binary.Write(&out, binary.LittleEndian, elf.Prog64{Type: uint32(elf.PT_NOTE), Flags: uint32(elf.PF_R), Off: notesOff, Filesz: uint64(notes.Len()), Memsz: uint64(notes.Len()), Align: 4})
	}
	out.Write(notes.Bytes())
	out.Write(body.Bytes())
	return out.Bytes()
}

// craftBzImage wraps a vmlinux in an x86 boot-protocol image: one setup
// sector after the boot sector, the version string the header points at,
// and a gzip payload with the decompressed size appended, as the kernel's
// build makes it.
func craftBzImage(t *testing.T, vmlinux []byte, banner string) []byte {
	t.Helper()
	var payload bytes.Buffer
	zw := gzip.NewWriter(&payload)
	zw.Write(vmlinux)
	zw.Close()
	binary.Write(&payload, binary.LittleEndian, uint32(len(vmlinux)))

	const setupSize = 2 * 512 // setup_sects = 1
	pm := make([]byte, 16+payload.Len())
	copy(pm[16:], payload.Bytes())
	pm = append(pm, make([]byte, (16-len(pm)%16)%16)...)
	img := make([]byte, setupSize, setupSize+len(pm))
	le := binary.LittleEndian
	img[0x1f1] = 1
	le.PutUint32(img[0x1f4:], uint32(len(pm)/16))
	le.PutUint16(img[0x1fe:], 0xaa55)
	copy(img[0x202:], "HdrS")
	le.PutUint16(img[0x206:], 0x020f)
	copy(img[0x300:], banner+"\x00")
	le.PutUint16(img[0x20e:], 0x300-0x200)
	le.PutUint32(img[0x248:], 16)
	le.PutUint32(img[0x24c:], uint32(payload.Len()))
	return append(img, pm...)
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// hostVmlinuz returns a kernel from /boot, or skips.
func hostVmlinuz(t *testing.T) string {
	t.Helper()
	m, _ := filepath.Glob("/boot/vmlinuz-*")
	for _, p := range m {
		if f, err := os.Open(p); err == nil {
			f.Close()
			return p
		}
	}
	t.Skip("no readable /boot/vmlinuz-* on this machine: install a linux-image package")
	return ""
}

// dirEntries lists dir, to check that nothing was left behind.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// cpioNewc returns a tiny newc archive holding one file.
func cpioNewc(name, data string) []byte {
	var b bytes.Buffer
	hdr := func(name string, mode, size int) {
		b.WriteString("070701")
		for _, v := range []int{1, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0} {
			b.WriteString(hex8(v))
		}
		b.WriteString(name + "\x00")
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	hdr(name, 0o100644, len(data))
	b.WriteString(data)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	hdr("TRAILER!!!", 0, 0)
	return b.Bytes()
}

func hex8(v int) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		out[i] = digits[v&15]
		v >>= 4
	}
	return string(out)
}
