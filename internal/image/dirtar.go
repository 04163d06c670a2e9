package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// writeDirTar writes the tree at root as a tar stream: the same stream for
// the same tree (names in byte order, no user or group names, no access or
// change times), so its digest identifies the tree. Owners, modes, device
// numbers, xattrs this process can read and hardlinks (by device and inode)
// are kept; sockets are skipped. Symlinks are recorded, never followed, and
// files are opened without following a symlink swapped in meanwhile.
func writeDirTar(ctx context.Context, root string, w io.Writer) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return err
	}
	defer r.Close()
	tw := tar.NewWriter(w)
	type devIno struct{ dev, ino uint64 }
	links := map[devIno]string{}
	err = walkSorted(root, ".", func(rel string, fi fs.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSocket != 0 {
			return nil
		}
		full := filepath.Join(root, rel)
		var target string
		if fi.Mode()&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(full); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return fmt.Errorf("%s: %w", full, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		st, _ := fi.Sys().(*syscall.Stat_t)
		if st != nil && fi.Mode().IsRegular() && st.Nlink > 1 {
			key := devIno{uint64(st.Dev), st.Ino}
			if first, ok := links[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				links[key] = hdr.Name
			}
		}
		if x, err := readXattrs(full); err != nil {
			return err
		} else if len(x) > 0 {
			hdr.PAXRecords = x
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", full, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := r.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		if n, err := io.Copy(tw, &ctxReader{ctx: ctx, r: f}); err != nil {
			return fmt.Errorf("%s: %w (did it change while being imported?)", full, err)
		} else if n != hdr.Size {
			return fmt.Errorf("%s: read %d bytes, expected %d: it changed while being imported", full, n, hdr.Size)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// walkSorted calls fn for rel and, if it is a directory, everything below
// it, in byte order of names, without following symlinks.
func walkSorted(root, rel string, fn func(rel string, fi fs.FileInfo) error) error {
	full := filepath.Join(root, rel)
	fi, err := os.Lstat(full)
	if err != nil {
		return err
	}
	if err := fn(rel, fi); err != nil {
		return err
	}
	if !fi.IsDir() {
		return nil
	}
	entries, err := os.ReadDir(full)
	if err != nil {
		return err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	sort.Strings(names)
	for _, n := range names {
		if err := walkSorted(root, filepath.Join(rel, n), fn); err != nil {
			return err
		}
	}
	return nil
}

// readXattrs returns a file's extended attributes as PAX records. Those
// this process may not read (trusted.*, for an unprivileged one) are not
// listed to it; a filesystem without xattrs yields none.
func readXattrs(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		if err == nil || errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, fmt.Errorf("%s: list xattrs: %w", p, err)
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, fmt.Errorf("%s: list xattrs: %w", p, err)
	}
	out := map[string]string{}
	for _, name := range splitNul(buf[:size]) {
		vs, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			continue // vanished or not readable by us
		}
		v := make([]byte, vs)
		vs, err = unix.Lgetxattr(p, name, v)
		if err != nil {
			continue
		}
		out["SCHILY.xattr."+name] = string(v[:vs])
	}
	return out, nil
}

func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}

// WriteDirTar writes the tree at root as the deterministic tar stream that importing
// the directory hashes and converts (see writeDirTar): the CLI sends a directory to
// bangerd this way, read with the caller's rights, and the image gets the same ID as
// an import of the directory itself.
func WriteDirTar(ctx context.Context, root string, w io.Writer) error {
	return writeDirTar(ctx, root, w)
}
