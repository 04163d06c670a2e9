package ext4

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// File is a file banger places into images (the guest agent and its init
// wiring): at conversion time as a final layer, or later into an existing
// image with Inject.
type File struct {
	Path string // absolute path in the image, e.g. /sbin/banger-agent
	// Mode holds the permission bits, with fs.ModeSetuid, fs.ModeSetgid and
	// fs.ModeSticky as needed; fs.ModeDir makes a directory and
	// fs.ModeSymlink a symlink to Target. Otherwise it is a regular file
	// with the content of Data or, if Source is set, of that host file.
	Mode     fs.FileMode
	UID, GID int
	Data     []byte
	Source   string
	Target   string
}

// Validate checks f before anything is written.
func (f File) Validate() error {
	if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
		return fmt.Errorf("inject %q: the path must be absolute and clean, and not /", f.Path)
	}
	if strings.ContainsAny(f.Path, "\x00\n\r") || strings.ContainsAny(f.Target, "\x00\n\r") {
		return fmt.Errorf("inject %q: NUL, newline or carriage return in the path or target", f.Path)
	}
	for _, c := range strings.Split(f.Path[1:], "/") {
		if len(c) > 255 {
			return fmt.Errorf("inject %q: a name is longer than 255 bytes", f.Path)
		}
	}
	if f.UID < 0 || f.GID < 0 || int64(f.UID) >= 1<<32-1 || int64(f.GID) >= 1<<32-1 {
		return fmt.Errorf("inject %q: owner %d:%d out of range", f.Path, f.UID, f.GID)
	}
	switch {
	case f.Mode&fs.ModeSymlink != 0:
		if f.Target == "" {
			return fmt.Errorf("inject %q: a symlink needs a target", f.Path)
		}
	case f.Mode&fs.ModeDir != 0:
	case f.Mode&fs.ModeType != 0:
		return fmt.Errorf("inject %q: only files, directories and symlinks can be injected", f.Path)
	case f.Source != "":
		fi, err := os.Stat(f.Source)
		if err != nil {
			return fmt.Errorf("inject %q: %w", f.Path, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("inject %q: source %s is not a regular file", f.Path, f.Source)
		}
	}
	return nil
}

// UnixMode returns the permission bits of m as an inode stores them
// (07777), setuid, setgid and sticky included.
func UnixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// Inject writes files into the existing image, in place, replacing what is
// at their paths (a directory at a file's path is an error). Missing parent
// directories are made 0755 root:root; symlinked parents (/sbin -> usr/sbin)
// are followed inside the image. scratch is a private directory for the
// debugfs script and file contents. Callers that must not change an image
// in use call CopyAndInject instead.
func Inject(ctx context.Context, tools Tools, image, scratch string, files []File) error {
	s := &script{cwd: "/"}
	made := map[string]bool{}
	for i, f := range files {
		if err := f.Validate(); err != nil {
			return err
		}
		dir, base := path.Split(f.Path)
		dir = path.Clean(dir)
		if err := mkdirs(ctx, tools, image, dir, s, made); err != nil {
			return err
		}
		cur, err := Stat(ctx, tools, image, f.Path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("inject %s into %s: %w", f.Path, image, err)
		case cur.Type == "directory" && f.Mode&fs.ModeDir == 0:
			return fmt.Errorf("inject %s into %s: a directory is in the way", f.Path, image)
		case cur.Type == "directory":
		default:
			s.add("rm", inDir(dir, base))
		}
		// "dir/." makes debugfs follow dir if it is a symlink.
		cdDir := "/"
		if dir != "/" {
			cdDir = dir + "/."
		}
		s.cd(cdDir)
		switch {
		case f.Mode&fs.ModeSymlink != 0:
			s.add("symlink", base, f.Target)
		case f.Mode&fs.ModeDir != 0:
			if err != nil { // missing
				s.add("mkdir", inDir(dir, base))
			}
		default:
			src := f.Source
			if src == "" {
				src = filepath.Join(scratch, "inject-"+strconv.Itoa(i))
				if err := os.WriteFile(src, f.Data, 0o600); err != nil {
					return fmt.Errorf("inject %s: %w", f.Path, err)
				}
			}
			s.add("write", src, base)
		}
		if f.Mode&fs.ModeSymlink == 0 {
			typ := uint32(0o100000)
			if f.Mode&fs.ModeDir != 0 {
				typ = 0o040000
			}
			s.setInode(f.Path, "mode", uint64(typ|UnixMode(f.Mode)), true)
		}
		s.setInode(f.Path, "uid", uint64(f.UID), false)
		s.setInode(f.Path, "gid", uint64(f.GID), false)
	}
	if err := runScript(ctx, tools, scratch, image, s); err != nil {
		return fmt.Errorf("inject into %s: %w", image, err)
	}
	return nil
}

// mkdirs adds commands making the missing directories of dir, following
// symlinks inside the image.
func mkdirs(ctx context.Context, tools Tools, image, dir string, s *script, made map[string]bool) error {
	if dir == "/" || made[dir] {
		return nil
	}
	if err := mkdirs(ctx, tools, image, path.Dir(dir), s, made); err != nil {
		return err
	}
	in, err := Stat(ctx, tools, image, dir+"/.")
	switch {
	case err == nil && in.Type == "directory":
		return nil
	case err == nil:
		return fmt.Errorf("inject into %s: %s is a %s, not a directory", image, dir, in.Type)
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("inject into %s: %w", image, err)
	}
	s.add("mkdir", inDir(path.Dir(dir), path.Base(dir)))
	s.setInode(dir, "mode", 0o40755, true)
	s.setInode(dir, "uid", 0, false)
	s.setInode(dir, "gid", 0, false)
	made[dir] = true
	return nil
}

// inDir names base in dir for the debugfs commands that split their
// argument at the last slash and look the directory part up (rm, mkdir):
// "dir/./base" makes the lookup follow dir if it is a symlink, and gives the
// root a directory part ("/.") that such lookups accept.
func inDir(dir, base string) string {
	if dir == "/" {
		dir = ""
	}
	return dir + "/./" + base
}

// CopyAndInject makes a new image at dst: a copy of src (reflinked where the
// filesystem can, else a sparse copy) with files injected, checked with
// e2fsck, renamed into place. src is never modified, so it is safe while VMs
// run on it; dst may equal src, in which case the old file is replaced
// atomically and VMs holding it open keep the old content. src must pass
// `e2fsck -fn` first: ErrNotExt4 or ErrCorrupt otherwise.
func CopyAndInject(ctx context.Context, tools Tools, src, dst, scratch string, files []File) (size int64, err error) {
	ok, err := IsExt4(src)
	if err != nil {
		return 0, fmt.Errorf("image %s: %w", src, err)
	}
	if !ok {
		return 0, fmt.Errorf("%s: %w (no ext2/3/4 superblock)", src, ErrNotExt4)
	}
	if err := Check(ctx, tools, src); err != nil {
		return 0, err
	}
	for _, f := range files {
		if err := f.Validate(); err != nil {
			return 0, err
		}
	}
	fi, err := os.Stat(src)
	if err != nil {
		return 0, err
	}
	if err := checkFree(filepath.Dir(dst), allocated(fi)); err != nil {
		return 0, err
	}
	tmp, err := tempNear(dst)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err := copyFile(ctx, src, tmp); err != nil {
		return 0, fmt.Errorf("copy %s: %w", src, err)
	}
	if len(files) > 0 {
		if err := Inject(ctx, tools, tmp, scratch, files); err != nil {
			return 0, err
		}
		if err := Check(ctx, tools, tmp); err != nil {
			return 0, fmt.Errorf("after injecting files: %w", err)
		}
	}
	if err := commit(tmp, dst); err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
