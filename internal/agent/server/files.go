package server

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/agent/proto"
	"banger/internal/agent/users"

	"golang.org/x/sys/unix"
)

// resolveBeneath confines every lookup made while extracting to the destination
// directory: the kernel refuses ".." above it, absolute symlinks and symlinks that
// lead out (openat2(2) RESOLVE_BENEATH), so a hostile or careless archive cannot
// write outside the directory the host named, even through links it created itself.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS

func (s *Server) put(_ context.Context, c *call) error {
	var a proto.PutArgs
	if err := c.decode(&a); err != nil {
		return err
	}
	if !path.IsAbs(a.Dir) || path.Clean(a.Dir) != a.Dir {
		return proto.Errorf(proto.CodeBadRequest, "put: destination %q must be an absolute, clean path", a.Dir)
	}
	owner := ownerFromArchive
	if a.User != "" {
		u, err := s.cfg.Users.Lookup(a.User)
		if err != nil {
			if errors.Is(err, users.ErrUnknownUser) {
				return proto.Errorf(proto.CodeNotFound, "put: %v", err)
			}
			return fmt.Errorf("put: %w", err)
		}
		owner = func(*tar.Header) (int, int, bool) { return int(u.UID), int(u.GID), true }
	}
	if err := os.MkdirAll(a.Dir, 0o755); err != nil {
		return proto.Errorf(proto.CodeInternal, "put: create destination %s: %v", a.Dir, err)
	}
	root, err := unix.Open(a.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return proto.Errorf(proto.CodeNotFound, "put: open destination %s: %v", a.Dir, err)
	}
	defer unix.Close(root)
	if err := c.respond(struct{}{}); err != nil {
		return err
	}
	data := c.conn.DataReader()
	x := extractor{root: root, owner: owner}
	err = x.extract(tar.NewReader(data))
	if err == nil {
		// the archive's end comes before the stream's: read up to the end frame
		_, err = io.Copy(io.Discard, data)
	}
	status := proto.Response{}
	if err != nil {
		s.log.Info("put failed", "dir", a.Dir, "err", err)
		status = proto.ErrorResponse(fmt.Errorf("put into %s: %w", a.Dir, err))
	}
	return c.conn.WriteJSON(proto.FrameStatus, status)
}

// ownerFromArchive keeps the archive's owners when the agent may set them (root).
func ownerFromArchive(h *tar.Header) (int, int, bool) {
	return h.Uid, h.Gid, os.Geteuid() == 0
}

type extractor struct {
	root  int // O_PATH descriptor of the destination
	owner func(*tar.Header) (uid, gid int, chown bool)
}

func (x extractor) extract(tr *tar.Reader) error {
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if err := x.entry(h, tr); err != nil {
			return fmt.Errorf("entry %q: %w", h.Name, err)
		}
	}
}

// cleanEntryName turns an archive name into a path relative to the destination,
// refusing absolute names and names that climb out with "..".
func cleanEntryName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", proto.Errorf(proto.CodePermission, "absolute entry names are refused: the archive must be relative to the destination")
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", proto.Errorf(proto.CodePermission, "entry climbs out of the destination with \"..\"")
	}
	return clean, nil
}

func (x extractor) entry(h *tar.Header, r io.Reader) error {
	name, err := cleanEntryName(h.Name)
	if err != nil {
		return err
	}
	if name == "." {
		return nil // the destination itself
	}
	parentName, base := path.Split(name)
	parent, err := x.mkdirAll(strings.TrimSuffix(parentName, "/"))
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	mode := uint32(h.Mode & 0o7777)
	switch h.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(parent, base, mode); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("mkdir: %w", err)
		}
		fd, err := openat2(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
		if err != nil {
			return fmt.Errorf("open directory: %w", err)
		}
		defer unix.Close(fd)
		return x.finish(fd, h, mode)
	case tar.TypeReg:
		if err := removeExisting(parent, base); err != nil {
			return err
		}
		fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		f := os.NewFile(uintptr(fd), base)
		defer f.Close()
		if _, err := io.Copy(f, r); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if err := x.finish(fd, h, mode); err != nil {
			return err
		}
		ts := []unix.Timespec{unix.NsecToTimespec(h.ModTime.UnixNano()), unix.NsecToTimespec(h.ModTime.UnixNano())}
		if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("set times: %w", err)
		}
		return nil
	case tar.TypeSymlink:
		if err := removeExisting(parent, base); err != nil {
			return err
		}
		// the target is stored as is: any later entry resolved through this link
		// is still confined by RESOLVE_BENEATH
		if err := unix.Symlinkat(h.Linkname, parent, base); err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		if uid, gid, ok := x.owner(h); ok {
			if err := unix.Fchownat(parent, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("chown symlink: %w", err)
			}
		}
		return nil
	case tar.TypeLink:
		target, err := cleanEntryName(h.Linkname)
		if err != nil {
			return fmt.Errorf("hard link target %q: %w", h.Linkname, err)
		}
		tdir, tbase := path.Split(target)
		tparent, err := openat2(x.root, dotIfEmpty(strings.TrimSuffix(tdir, "/")), unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return fmt.Errorf("hard link target %q: %w", h.Linkname, err)
		}
		defer unix.Close(tparent)
		if err := removeExisting(parent, base); err != nil {
			return err
		}
		if err := unix.Linkat(tparent, tbase, parent, base, 0); err != nil {
			return fmt.Errorf("hard link to %q: %w", h.Linkname, err)
		}
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if err := removeExisting(parent, base); err != nil {
			return err
		}
		kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[h.Typeflag]
		dev := unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
		if err := unix.Mknodat(parent, base, kind|mode, int(dev)); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		return nil
	default:
		return nil // PAX/GNU metadata is folded into headers by archive/tar; others are skipped
	}
}

// finish sets owner and mode on an open entry (mode after chown, which clears setuid).
func (x extractor) finish(fd int, h *tar.Header, mode uint32) error {
	if uid, gid, ok := x.owner(h); ok {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// mkdirAll opens rel (relative to the destination) as a directory, creating missing
// components, every lookup confined beneath the destination.
func (x extractor) mkdirAll(rel string) (int, error) {
	fd, err := openat2(x.root, ".", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return -1, err
	}
	if rel == "" {
		return fd, nil
	}
	for _, comp := range strings.Split(rel, "/") {
		if err := unix.Mkdirat(fd, comp, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(fd)
			return -1, fmt.Errorf("create directory %q: %w", rel, err)
		}
		next, err := openat2(fd, comp, unix.O_PATH|unix.O_DIRECTORY)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("open directory %q: %w", rel, err)
		}
		fd = next
	}
	return fd, nil
}

// openat2 opens name under dirfd, confined beneath it.
func openat2(dirfd int, name string, flags int) (int, error) {
	fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolveBeneath})
	if errors.Is(err, unix.EXDEV) {
		return -1, proto.Errorf(proto.CodePermission, "%q leads outside the destination directory", name)
	}
	if errors.Is(err, unix.ENOSYS) {
		return -1, proto.Errorf(proto.CodeUnsupported, "the guest kernel lacks openat2(2) (Linux 5.6+), which safe extraction needs")
	}
	return fd, err
}

// removeExisting removes a non-directory at parent/base so that it is replaced, not
// written through (it could be a symlink or a hard link to something else).
func removeExisting(parent int, base string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("stat existing: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("a directory is in the way")
	}
	if err := unix.Unlinkat(parent, base, 0); err != nil {
		return fmt.Errorf("replace existing: %w", err)
	}
	return nil
}

func dotIfEmpty(s string) string {
	if s == "" {
		return "."
	}
	return s
}

func (s *Server) get(_ context.Context, c *call) error {
	var a proto.GetArgs
	if err := c.decode(&a); err != nil {
		return err
	}
	if !path.IsAbs(a.Path) || path.Clean(a.Path) != a.Path || a.Path == "/" {
		return proto.Errorf(proto.CodeBadRequest, "get: source %q must be an absolute, clean path other than /", a.Path)
	}
	if _, err := os.Lstat(a.Path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return proto.Errorf(proto.CodeNotFound, "get: %s does not exist", a.Path)
		}
		return proto.Errorf(proto.CodePermission, "get: %v", err)
	}
	if err := c.respond(struct{}{}); err != nil {
		return err
	}
	werr := writeArchive(c.conn.DataWriter(proto.FrameData), a.Path)
	if err := c.conn.WriteFrame(proto.FrameDataEnd, nil); err != nil {
		return err
	}
	status := proto.Response{}
	if werr != nil {
		s.log.Info("get failed", "path", a.Path, "err", werr)
		status = proto.ErrorResponse(fmt.Errorf("get %s: %w", a.Path, werr))
	}
	return c.conn.WriteJSON(proto.FrameStatus, status)
}

// writeArchive writes src (a file, a link or a directory tree) as a tar stream
// with names starting at src's base name. Symlinks are archived, never followed.
func writeArchive(w io.Writer, src string) error {
	tw := tar.NewWriter(w)
	parent := filepath.Dir(src)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		if fi.Mode()&fs.ModeSocket != 0 {
			return nil // not archivable; a socket means nothing away from its server
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		rel, err := filepath.Rel(parent, p)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.ModTime = fi.ModTime().Truncate(time.Second)
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		f := os.NewFile(uintptr(fd), p)
		defer f.Close()
		if _, err := io.CopyN(tw, f, h.Size); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
