package kernel

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// ErrNotKernel is wrapped by every error that says a file is not a kernel
// banger can boot.
var ErrNotKernel = errors.New("not a Linux kernel")

// Format is how a kernel image is packaged.
type Format string

// The formats Inspect recognises.
const (
	// FormatBzImage is the x86 boot-protocol image (vmlinuz): a real-mode
	// setup header and a compressed payload. QEMU boots it; Firecracker on
	// x86-64 does not.
	FormatBzImage Format = "bzImage"
	// FormatELF is an uncompressed ELF vmlinux, what Firecracker loads; with
	// a PVH entry note QEMU boots it directly too, skipping decompression
	// and real mode, the fastest way under QEMU's microvm.
	FormatELF Format = "vmlinux"
)

// Info is what a kernel file says about itself.
type Info struct {
	Format Format `json:"format"`
	// Banner is the kernel's version string after "Linux version ", as
	// /proc/version shows it: "6.1.0-56-cloud-amd64 (debian-kernel@...) #1 SMP ...".
	Banner string `json:"banner,omitempty"`
	// Release is the banner's first word, what `uname -r` prints.
	Release string `json:"release,omitempty"`
	// BootProtocol is a bzImage's boot protocol version ("2.15").
	BootProtocol string `json:"boot_protocol,omitempty"`
	// Compression is a bzImage payload's compression (gzip, zstd, lz4, xz, ...).
	Compression string `json:"compression,omitempty"`
	// PVH says the kernel has a PVH entry point (Xen ELF note
	// XEN_ELFNOTE_PHYS32_ENTRY); for a bzImage, found in its payload when the
	// payload's compression is one banger reads.
	PVH      bool   `json:"pvh"`
	PVHEntry uint64 `json:"pvh_entry,omitempty"`
	// EmbeddedConfig says the kernel carries its config (CONFIG_IKCONFIG).
	EmbeddedConfig bool `json:"embedded_config"`
	// Notes are what Inspect could not look at, for the user ("payload is
	// xz-compressed: embedded config not searched").
	Notes []string `json:"notes,omitempty"`
	Size  int64    `json:"size"`

	config map[string]string // the embedded config, if any
}

// Limits that keep a hostile or broken file from exhausting memory.
const (
	maxPayload = 1 << 30  // a decompressed bzImage payload (vmlinux)
	maxConfig  = 16 << 20 // a decompressed kernel config
	maxBanner  = 512      // the version banner
)

// Inspect tells whether path is an x86-64 Linux kernel and reads what it
// can: format, version, PVH entry, embedded config. Anything else is an
// error wrapping ErrNotKernel that says what the file seems to be.
func Inspect(path string) (Info, error) { return inspect(path, path) }

// inspect is Inspect naming the file as name in its errors.
func inspect(path, name string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("kernel %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("kernel %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return Info{}, fmt.Errorf("kernel %s: not a regular file: %w", name, ErrNotKernel)
	}
	var head [0x270]byte
	n, err := io.ReadFull(f, head[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return Info{}, fmt.Errorf("kernel %s: %w", name, err)
	}
	var info Info
	switch {
	case n >= 0x206 && string(head[0x202:0x206]) == "HdrS":
		info, err = inspectBzImage(f, fi.Size(), head[:n])
	case n >= 4 && string(head[:4]) == "\x7fELF":
		info, err = inspectELF(f, fi.Size())
	default:
		err = fmt.Errorf("%w (no bzImage header, not an ELF vmlinux)%s", ErrNotKernel, guess(head[:n]))
	}
	if err != nil {
		return Info{}, fmt.Errorf("%s is %w", name, err)
	}
	info.Size = fi.Size()
	return info, nil
}

// guess names what a non-kernel file looks like, to make the error useful.
func guess(b []byte) string {
	if c := compressionOf(b); c != "" {
		return fmt.Sprintf(": it is %s-compressed; decompress it first", c)
	}
	if len(b) == 0 {
		return ": it is empty"
	}
	return ""
}

// compressionOf names the compression b starts with, as the kernel's
// decompressors know them.
func compressionOf(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		return "gzip"
	case bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "xz"
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd"
	case bytes.HasPrefix(b, []byte{0x02, 0x21, 0x4c, 0x18}):
		return "lz4"
	case bytes.HasPrefix(b, []byte("BZh")):
		return "bzip2"
	case bytes.HasPrefix(b, []byte{0x5d, 0, 0}):
		return "lzma"
	case bytes.HasPrefix(b, []byte{0x89, 'L', 'Z', 'O'}):
		return "lzo"
	}
	return ""
}

// inspectBzImage checks the x86 boot protocol header
// (Documentation/arch/x86/boot.rst) and that the file holds all the
// protected-mode code the header promises, reads the version string the
// header points at, and looks inside the payload when it can decompress it.
func inspectBzImage(f *os.File, size int64, head []byte) (Info, error) {
	if len(head) < 0x250 {
		return Info{}, fmt.Errorf("%w: a truncated bzImage (%d bytes, shorter than its setup header)", ErrNotKernel, size)
	}
	le := binary.LittleEndian
	if le.Uint16(head[0x1fe:]) != 0xaa55 {
		return Info{}, fmt.Errorf("%w: a bzImage header without the 0xAA55 boot flag", ErrNotKernel)
	}
	proto := le.Uint16(head[0x206:])
	if proto < 0x0206 {
		return Info{}, fmt.Errorf("%w: boot protocol %d.%02d is older than 2.06, which banger's VMMs need", ErrNotKernel, proto>>8, proto&0xff)
	}
	info := Info{Format: FormatBzImage, BootProtocol: fmt.Sprintf("%d.%02d", proto>>8, proto&0xff)}
	setupSects := int64(head[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	setupSize := (setupSects + 1) * 512
	sysSize := int64(le.Uint32(head[0x1f4:])) * 16
	if size < setupSize+sysSize {
		return Info{}, fmt.Errorf("%w: a truncated bzImage (%d bytes; its header says %d)", ErrNotKernel, size, setupSize+sysSize)
	}
	if ptr := int64(le.Uint16(head[0x20e:])); ptr != 0 {
		banner, err := readCString(f, ptr+0x200, maxBanner)
		if err != nil {
			return Info{}, fmt.Errorf("%w: a bzImage whose version string cannot be read: %v", ErrNotKernel, err)
		}
		info.setBanner(banner)
	}
	if proto < 0x0208 {
		info.Notes = append(info.Notes, "boot protocol before 2.08: payload not inspected")
		return info, nil
	}
	off, n := setupSize+int64(le.Uint32(head[0x248:])), int64(le.Uint32(head[0x24c:]))
	if n == 0 || off+n > size {
		return Info{}, fmt.Errorf("%w: a bzImage whose payload (%d bytes at %d) is past its end (%d bytes)", ErrNotKernel, n, off, size)
	}
	payload := make([]byte, n)
	if _, err := f.ReadAt(payload, off); err != nil {
		return Info{}, fmt.Errorf("read bzImage payload: %w", err)
	}
	info.Compression = compressionOf(payload)
	vmlinux, err := decompressPayload(info.Compression, payload)
	switch {
	case err != nil:
		return Info{}, fmt.Errorf("%w: a bzImage whose %s payload is corrupt: %v", ErrNotKernel, info.Compression, err)
	case vmlinux == nil:
		info.Notes = append(info.Notes, fmt.Sprintf("payload is %s-compressed, which banger does not decompress: PVH entry and embedded config not searched", orUnknown(info.Compression)))
		return info, nil
	}
	inner, err := inspectELF(bytes.NewReader(vmlinux), int64(len(vmlinux)))
	if err != nil {
		return Info{}, fmt.Errorf("%w: a bzImage whose payload is not a vmlinux: %v", ErrNotKernel, err)
	}
	info.PVH, info.PVHEntry = inner.PVH, inner.PVHEntry
	info.EmbeddedConfig, info.config = inner.EmbeddedConfig, inner.config
	if info.Banner == "" {
		info.setBanner(inner.Banner)
	}
	return info, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown format"
	}
	return s
}

// decompressPayload returns the decompressed payload, or nil with no error
// for a compression banger does not read (xz with the x86 BCJ filter, lzma,
// lzo). The kernel build appends the decompressed size as 4 bytes.
func decompressPayload(kind string, p []byte) ([]byte, error) {
	hint := 0
	if len(p) > 4 {
		hint = int(binary.LittleEndian.Uint32(p[len(p)-4:]))
	}
	var r io.Reader
	switch kind {
	case "lz4":
		return unlz4Legacy(p, hint, maxPayload)
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		zr.Multistream(false) // the appended size is not another member
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(p), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxPayload))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		r = zr
	case "bzip2":
		r = bzip2.NewReader(bytes.NewReader(p))
	default:
		return nil, nil
	}
	var out bytes.Buffer
	out.Grow(min(max(hint, 0), maxPayload))
	if _, err := io.Copy(&out, io.LimitReader(r, maxPayload+1)); err != nil {
		// zstd and bzip2 see the appended size as trailing garbage; what
		// came before it is the whole vmlinux if it has the promised size.
		if out.Len() == 0 || out.Len() != hint {
			return nil, err
		}
	}
	if out.Len() > maxPayload {
		return nil, fmt.Errorf("decompresses to more than %d MiB", maxPayload>>20)
	}
	return out.Bytes(), nil
}

func (i *Info) setBanner(b string) {
	b = strings.TrimSpace(b)
	i.Banner = b
	if f := strings.Fields(b); len(f) > 0 {
		i.Release = f[0]
	}
}

// readCString reads a NUL-terminated string of at most max bytes at off.
func readCString(r io.ReaderAt, off int64, max int) (string, error) {
	buf := make([]byte, max)
	n, err := r.ReadAt(buf, off)
	if n == 0 && err != nil {
		return "", err
	}
	buf = buf[:n]
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		buf = buf[:i]
	}
	return string(buf), nil
}

// inspectELF accepts an x86-64 ELF executable that is Linux: one carrying
// the "Linux version " banner or a Linux or Xen ELF note. An ordinary
// program (/bin/ls: a shared object; a static binary: neither) is refused.
func inspectELF(r io.ReaderAt, size int64) (Info, error) {
	ef, err := elf.NewFile(r)
	if err != nil {
		return Info{}, fmt.Errorf("%w (no bzImage header, not an ELF vmlinux): a malformed ELF file: %v", ErrNotKernel, err)
	}
	defer ef.Close()
	switch {
	case ef.Class != elf.ELFCLASS64 || ef.Machine != elf.EM_X86_64:
		return Info{}, fmt.Errorf("%w (no bzImage header, not an ELF vmlinux): an ELF file for %s/%s, not x86-64", ErrNotKernel, ef.Class, ef.Machine)
	case ef.Type != elf.ET_EXEC:
		what := map[elf.Type]string{elf.ET_DYN: "a shared library or position-independent program", elf.ET_REL: "an object file", elf.ET_CORE: "a core dump"}[ef.Type]
		if what == "" {
			what = "an ELF " + ef.Type.String()
		}
		return Info{}, fmt.Errorf("%w (no bzImage header, not an ELF vmlinux): %s, not an executable like vmlinux", ErrNotKernel, what)
	}
	info := Info{Format: FormatELF}
	linuxNote := false
	for _, n := range elfNotes(ef) {
		switch {
		case n.name == "Xen" && n.typ == xenElfnotePhys32Entry:
			info.PVH = true
			switch len(n.desc) {
			case 4:
				info.PVHEntry = uint64(binary.LittleEndian.Uint32(n.desc))
			case 8:
				info.PVHEntry = binary.LittleEndian.Uint64(n.desc)
			}
			linuxNote = true
		case n.name == "Linux" || n.name == "Xen":
			linuxNote = true
		}
	}
	if at := indexAt(r, size, []byte("Linux version "), 0, isDigitAfter); at >= 0 {
		banner, err := readCString(r, at+int64(len("Linux version ")), maxBanner)
		if err == nil {
			info.setBanner(strings.SplitN(banner, "\n", 2)[0])
		}
	}
	if info.Banner == "" && !linuxNote {
		return Info{}, fmt.Errorf("%w (no bzImage header, not an ELF vmlinux): an x86-64 executable without a \"Linux version\" string or a Linux ELF note", ErrNotKernel)
	}
	if cfg, ok, err := embeddedConfig(r, size); err != nil {
		info.Notes = append(info.Notes, fmt.Sprintf("embedded config unreadable: %v", err))
	} else if ok {
		info.EmbeddedConfig, info.config = true, cfg
	}
	return info, nil
}

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY, the PVH entry point
// that Linux (CONFIG_PVH) publishes and QEMU's -kernel uses for an ELF.
const xenElfnotePhys32Entry = 18

type elfNote struct {
	name string
	typ  uint32
	desc []byte
}

// elfNotes reads the notes of every PT_NOTE segment (a vmlinux has one,
// covering .notes); malformed notes end the walk.
func elfNotes(ef *elf.File) []elfNote {
	var notes []elfNote
	for _, p := range ef.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 1<<20 {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			continue
		}
		for len(b) >= 12 {
			nsz, dsz, typ := ef.ByteOrder.Uint32(b), ef.ByteOrder.Uint32(b[4:]), ef.ByteOrder.Uint32(b[8:])
			b = b[12:]
			na, da := align4(nsz), align4(dsz)
			if na > uint64(len(b)) || na+da > uint64(len(b)) {
				break
			}
			name := string(bytes.TrimRight(b[:nsz], "\x00"))
			notes = append(notes, elfNote{name: name, typ: typ, desc: b[na : na+uint64(dsz)]})
			b = b[na+da:]
		}
	}
	return notes
}

func align4(n uint32) uint64 { return (uint64(n) + 3) &^ 3 }

func isDigitAfter(r io.ReaderAt, end int64) bool {
	var b [1]byte
	_, err := r.ReadAt(b[:], end)
	return err == nil && b[0] >= '0' && b[0] <= '9'
}

// indexAt returns the offset of the first occurrence of pat at or after
// from for which ok (if given) holds at the offset just past it, reading r
// in chunks; -1 if none.
func indexAt(r io.ReaderAt, size int64, pat []byte, from int64, ok func(io.ReaderAt, int64) bool) int64 {
	const chunk = 1 << 20
	buf := make([]byte, chunk+len(pat))
	for off := from; off < size; off += chunk {
		n, err := r.ReadAt(buf, off)
		if n == 0 && err != nil {
			return -1
		}
		b := buf[:n]
		for base := 0; ; {
			i := bytes.Index(b[base:], pat)
			if i < 0 || base+i >= chunk {
				break
			}
			at := off + int64(base+i)
			if ok == nil || ok(r, at+int64(len(pat))) {
				return at
			}
			base += i + 1
		}
	}
	return -1
}
