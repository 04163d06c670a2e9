package layers

import (
	"context"
	"fmt"
	"path/filepath"
)

// StagedRoot is the directory, inside the staging area, that Materialize
// fills.
const StagedRoot = "root"

// Materialize lays out the directories and regular files of the tree under
// StagedRoot in the staging area, as input for `mkfs.ext4 -d`, and returns
// its host path. Regular files are the staged blobs moved into place, with
// the tree's hardlinks as host hardlinks (mkfs.ext4 -d keeps them as one
// inode). Directories are 0700 and files 0600, owned by this process:
// ownership, modes, symlinks, device nodes and xattrs are the image
// builder's to set inside the image, never here. Only modification times are
// copied, since mkfs.ext4 -d carries them over.
//
// All host paths are joined from names the tree validated (no "/", ".", ".."
// or NUL) below a directory with no symlinks in it, and every operation goes
// through an os.Root on the staging directory besides.
//
// After Materialize the tree can still be walked but not changed.
func (t *Tree) Materialize(ctx context.Context) (string, error) {
	if t.materialized {
		return "", fmt.Errorf("layers: tree already materialized")
	}
	t.materialized = true
	root := t.stage.root
	var dirs []Entry // in walk order: parents first
	err := t.Walk(func(e Entry) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		host := StagedRoot + e.Path
		if e.Path == "/" {
			host = StagedRoot
		}
		switch {
		case e.Node.Kind == KindDir:
			if err := root.Mkdir(host, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, e)
		case e.Node.Kind != KindReg:
			// Symlinks, devices and fifos are made inside the image only.
		case e.FirstPath != "":
			if err := root.Link(StagedRoot+e.FirstPath, host); err != nil {
				return err
			}
		default:
			if err := root.Rename(e.Node.blob, host); err != nil {
				return err
			}
			e.Node.blob = host
			if err := root.Chtimes(host, e.Node.ModTime, e.Node.ModTime); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("lay out staging area: %w", err)
	}
	// Children changed their directories' times; set them bottom-up.
	for i := len(dirs) - 1; i >= 0; i-- {
		host := StagedRoot + dirs[i].Path
		if dirs[i].Path == "/" {
			host = StagedRoot
		}
		if err := root.Chtimes(host, dirs[i].Node.ModTime, dirs[i].Node.ModTime); err != nil {
			return "", fmt.Errorf("lay out staging area: %w", err)
		}
	}
	return filepath.Join(t.dir, StagedRoot), nil
}
