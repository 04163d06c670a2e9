package initramfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
)

// The newc ("SVR4 without CRC") cpio format is the one the kernel unpacks
// into its rootfs (Documentation/driver-api/early-userspace/buffer-format.rst):
// a 110-byte ASCII header, the NUL-terminated name padded to 4 bytes, the
// data padded to 4 bytes, and a "TRAILER!!!" entry at the end. It is written
// here rather than with a library because none at hand writes device nodes
// (the /dev/console the kernel opens for /init's stdio).

const (
	newcMagic   = "070701"
	newcHdrSize = 110
	trailerName = "TRAILER!!!"
)

// Mode type bits, as in stat(2).
const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeLink = 0o120000
	modeChr  = 0o020000
	modeType = 0o170000
)

// Entry is one member of a newc archive.
type Entry struct {
	Name                 string // relative, no leading "/" ("init", "lib/modules")
	Mode                 uint32 // type and permission bits, as st_mode
	Size                 int64
	Linkname             string // symlink target (the data of a symlink entry)
	RdevMajor, RdevMinor uint32
}

// IsDir, IsRegular, IsSymlink and IsCharDevice tell the entry's type.
func (e Entry) IsDir() bool        { return e.Mode&modeType == modeDir }
func (e Entry) IsRegular() bool    { return e.Mode&modeType == modeReg }
func (e Entry) IsSymlink() bool    { return e.Mode&modeType == modeLink }
func (e Entry) IsCharDevice() bool { return e.Mode&modeType == modeChr }

// Perm returns the permission bits.
func (e Entry) Perm() fs.FileMode { return fs.FileMode(e.Mode & 0o7777) }

// cpioWriter writes a newc archive. Every entry has mtime 0, uid and gid 0 and
// its own inode number, so the same inputs give the same bytes.
type cpioWriter struct {
	w   io.Writer
	ino uint32
}

func (c *cpioWriter) header(name string, mode uint32, size int64, rmaj, rmin uint32) error {
	if size > 0xffffffff {
		return fmt.Errorf("cpio %s: %d bytes is too large for newc (4 GiB max)", name, size)
	}
	c.ino++
	nlink := uint32(1)
	if mode&modeType == modeDir {
		nlink = 2
	}
	var b bytes.Buffer
	b.WriteString(newcMagic)
	for _, v := range []uint32{c.ino, mode, 0, 0, nlink, 0, uint32(size), 0, 0, rmaj, rmin, uint32(len(name) + 1), 0} {
		fmt.Fprintf(&b, "%08x", v)
	}
	b.WriteString(name)
	b.WriteByte(0)
	b.Write(make([]byte, pad4(int64(newcHdrSize+len(name)+1))))
	_, err := c.w.Write(b.Bytes())
	return err
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm uint32) error {
	return c.header(name, modeDir|perm, 0, 0, 0)
}

// CharDev adds a character device node; writing its header needs no privilege.
func (c *cpioWriter) CharDev(name string, perm, major, minor uint32) error {
	return c.header(name, modeChr|perm, 0, major, minor)
}

// File adds a regular file of size bytes read from r.
func (c *cpioWriter) File(name string, perm uint32, size int64, r io.Reader) error {
	if err := c.header(name, modeReg|perm, size, 0, 0); err != nil {
		return err
	}
	n, err := io.Copy(c.w, io.LimitReader(r, size))
	if err != nil {
		return fmt.Errorf("cpio %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("cpio %s: got %d bytes, want %d (did the file change while it was read?)", name, n, size)
	}
	_, err = c.w.Write(make([]byte, pad4(size)))
	return err
}

// Close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	return c.header(trailerName, 0, 0, 0, 0)
}

func pad4(n int64) int64 { return (4 - n%4) % 4 }

// ReadArchive lists a newc archive, calling fn with each entry and a reader
// of its data (valid until fn returns). Several archives may be concatenated,
// as the kernel allows; zero padding between them is skipped.
func ReadArchive(r io.Reader, fn func(Entry, io.Reader) error) error {
	br := bufio.NewReader(r)
	for {
		// Skip the zero padding that may follow a trailer.
		for {
			b, err := br.Peek(1)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if b[0] != 0 {
				break
			}
			if _, err := br.Discard(1); err != nil {
				return err
			}
		}
		e, err := readHeader(br)
		if err != nil {
			return err
		}
		if e.Name == trailerName {
			continue
		}
		data := io.LimitReader(br, e.Size)
		if e.IsSymlink() {
			target, err := io.ReadAll(data)
			if err != nil {
				return fmt.Errorf("cpio %s: %w", e.Name, err)
			}
			e.Linkname = string(target)
			data = bytes.NewReader(target)
		}
		if err := fn(e, data); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, data); err != nil {
			return fmt.Errorf("cpio %s: %w", e.Name, err)
		}
		if _, err := br.Discard(int(pad4(e.Size))); err != nil {
			return fmt.Errorf("cpio %s: %w", e.Name, err)
		}
	}
}

func readHeader(br *bufio.Reader) (Entry, error) {
	var hdr [newcHdrSize]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return Entry{}, fmt.Errorf("cpio header: %w", err)
	}
	if string(hdr[:6]) != newcMagic && string(hdr[:6]) != "070702" {
		return Entry{}, fmt.Errorf("cpio header: magic %q, want %q (newc)", hdr[:6], newcMagic)
	}
	var f [13]uint32
	for i := range f {
		v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return Entry{}, fmt.Errorf("cpio header field %d: %w", i, err)
		}
		f[i] = uint32(v)
	}
	namesize := int64(f[11])
	name := make([]byte, namesize)
	if _, err := io.ReadFull(br, name); err != nil {
		return Entry{}, fmt.Errorf("cpio name: %w", err)
	}
	if _, err := br.Discard(int(pad4(newcHdrSize + namesize))); err != nil {
		return Entry{}, fmt.Errorf("cpio name: %w", err)
	}
	return Entry{
		Name:      string(bytes.TrimRight(name, "\x00")),
		Mode:      f[1],
		Size:      int64(f[6]),
		RdevMajor: f[9],
		RdevMinor: f[10],
	}, nil
}
