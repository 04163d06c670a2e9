package kernel

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ErrNotInitrd is wrapped by every error that says a file is not an initrd.
var ErrNotInitrd = errors.New("not an initrd")

// InitrdInfo is what an initrd file is.
type InitrdInfo struct {
	// Compression of the (first) archive: "none", gzip, zstd, xz, lz4 or bzip2.
	Compression string `json:"compression"`
	Size        int64  `json:"size"`
}

// InspectInitrd checks that path is what the kernel unpacks as an initramfs:
// a newc cpio archive ("070701", or "070702" with checksums), plain or
// compressed with gzip, zstd, xz, lz4 or bzip2, whose decompressed start is
// a cpio header. Distribution initrds often start with an uncompressed
// cpio of CPU microcode followed by a compressed one; the first archive
// decides.
func InspectInitrd(path string) (InitrdInfo, error) { return inspectInitrd(path, path) }

func inspectInitrd(path, name string) (InitrdInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return InitrdInfo{}, fmt.Errorf("initrd %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return InitrdInfo{}, fmt.Errorf("initrd %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return InitrdInfo{}, fmt.Errorf("initrd %s: not a regular file: %w", name, ErrNotInitrd)
	}
	var head [16]byte
	n, _ := io.ReadFull(f, head[:])
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return InitrdInfo{}, fmt.Errorf("initrd %s: %w", name, err)
	}
	info := InitrdInfo{Size: fi.Size(), Compression: compressionOf(head[:n])}
	if isCpio(head[:n]) {
		info.Compression = "none"
		return info, nil
	}
	start, err := decompressedStart(info.Compression, f)
	switch {
	case info.Compression == "" || info.Compression == "lzma" || info.Compression == "lzo":
		return InitrdInfo{}, fmt.Errorf("initrd %s is %w: not a cpio archive, nor one compressed with gzip, zstd, xz, lz4 or bzip2", name, ErrNotInitrd)
	case err != nil:
		return InitrdInfo{}, fmt.Errorf("initrd %s is %w: its %s data is corrupt: %v", name, ErrNotInitrd, info.Compression, err)
	case !isCpio(start):
		return InitrdInfo{}, fmt.Errorf("initrd %s is %w: %s-compressed, but not a cpio archive inside", name, ErrNotInitrd, info.Compression)
	}
	return info, nil
}

func isCpio(b []byte) bool {
	return bytes.HasPrefix(b, []byte("070701")) || bytes.HasPrefix(b, []byte("070702"))
}

// decompressedStart returns the first bytes of r decompressed.
func decompressedStart(kind string, r io.Reader) ([]byte, error) {
	var zr io.Reader
	switch kind {
	case "gzip":
		g, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		zr = g
	case "zstd":
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer z.Close()
		zr = z
	case "xz":
		x, err := xz.NewReader(r)
		if err != nil {
			return nil, err
		}
		zr = x
	case "bzip2":
		zr = bzip2.NewReader(r)
	case "lz4":
		// The first block is enough: at most 8 MiB of output.
		var hdr [8]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, err
		}
		n := binary.LittleEndian.Uint32(hdr[4:])
		if n > lz4LegacyBlockMax*2 {
			return nil, fmt.Errorf("lz4 block of %d bytes", n)
		}
		block := make([]byte, 8+n)
		copy(block, hdr[:])
		if _, err := io.ReadFull(r, block[8:]); err != nil {
			return nil, err
		}
		out, err := unlz4Legacy(block, lz4LegacyBlockMax, lz4LegacyBlockMax)
		if err != nil {
			return nil, err
		}
		return out[:min(len(out), 6)], nil
	default:
		return nil, nil
	}
	start := make([]byte, 6)
	if _, err := io.ReadFull(zr, start); err != nil {
		return nil, err
	}
	return start, nil
}
