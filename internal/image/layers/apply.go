package layers

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"
)

// Limits bound what an image may make this process store, so that a hostile
// archive (a zip bomb, a terabyte sparse file, millions of entries) cannot
// fill the host's disk or memory. Zero fields take the defaults.
type Limits struct {
	// MaxFileSize is the largest apparent size of one regular file.
	// Default 64 GiB.
	MaxFileSize int64
	// MaxDataBytes is the most file content (holes excluded) held in the
	// staging area at once. Default 64 GiB.
	MaxDataBytes int64
	// MaxNodes is the most inodes the image may have. Default 2 million.
	MaxNodes int
}

// Default limits.
const (
	DefaultMaxFileSize  = 64 << 30
	DefaultMaxDataBytes = 64 << 30
	DefaultMaxNodes     = 2_000_000
)

// WithDefaults returns l with zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = DefaultMaxFileSize
	}
	if l.MaxDataBytes <= 0 {
		l.MaxDataBytes = DefaultMaxDataBytes
	}
	if l.MaxNodes <= 0 {
		l.MaxNodes = DefaultMaxNodes
	}
	return l
}

// maxXattrBytes is what one inode's extended attributes may total: ext4
// without the ea_inode feature keeps them in the inode and one 4 KiB block.
const maxXattrBytes = 3800

// Tree is a model of an image's root filesystem, built by applying layers in
// order. Metadata (owners, modes, links, devices, xattrs) lives in memory;
// regular file contents live in a staging directory, under names the Tree
// chooses. Nothing from an archive is ever created on the host as what it
// says it is: no symlink, device node, setuid bit or foreign owner exists
// outside the model, and no archive path is used as a host path. That is what
// makes a hostile archive harmless: the worst it can do is describe a strange
// image.
//
// A Tree is used by one goroutine at a time.
type Tree struct {
	root    *Node
	stage   *staging
	dir     string // the staging directory
	limits  Limits
	layer   int       // layers applied so far; entries are tagged with it
	nodes   int       // live nodes, against Limits.MaxNodes
	epoch   time.Time // modification time of directories no entry describes
	entries int       // archive entries read, over all layers

	materialized bool // set by Materialize; the blobs have moved
}

// NewTree starts an empty tree (an empty root directory, 0755, owned by
// root) keeping file contents under stagingDir, which must be an existing,
// empty directory private to this process (mode 0700). Close releases it;
// removing it is the caller's job.
func NewTree(stagingDir string, limits Limits) (*Tree, error) {
	root, err := os.OpenRoot(stagingDir)
	if err != nil {
		return nil, fmt.Errorf("staging area: %w", err)
	}
	limits = limits.WithDefaults()
	st, err := newStaging(root, limits.MaxDataBytes)
	if err != nil {
		root.Close()
		return nil, err
	}
	epoch := time.Unix(0, 0)
	return &Tree{
		root:   &Node{Kind: KindDir, Mode: 0o755, ModTime: epoch, nlink: 1, children: map[string]dirent{}},
		stage:  st,
		dir:    stagingDir,
		limits: limits,
		nodes:  1,
		epoch:  epoch,
	}, nil
}

// Entries returns how many archive entries the applied layers held; an
// import of a tarball with none is no image.
func (t *Tree) Entries() int { return t.entries }

// Close releases the staging directory handle.
func (t *Tree) Close() error { return t.stage.close() }

// ApplyLayer applies one layer, a tar stream, on top of the layers before:
// entries replace what their path named, ".wh.NAME" removes NAME from lower
// layers, and ".wh..wh..opq" hides everything lower layers put in its
// directory. It reads r up to the end of the archive, not necessarily to the
// end of r: a caller verifying a digest must drain r afterwards. Errors name
// the entry.
func (t *Tree) ApplyLayer(ctx context.Context, r io.Reader) error {
	if t.materialized {
		return errors.New("layers: tree already materialized")
	}
	t.layer++
	tr := tar.NewReader(r)
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if i == 0 {
				return fmt.Errorf("%w: %v", ErrNotTar, err)
			}
			return fmt.Errorf("read tar entry %d: %w", i+1, err)
		}
		t.entries++
		if err := t.applyEntry(ctx, hdr, tr); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
}

func (t *Tree) applyEntry(ctx context.Context, hdr *tar.Header, r io.Reader) error {
	comps, err := splitPath(hdr.Name)
	if err != nil {
		return err
	}
	if len(comps) == 0 { // the root directory itself
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("the root directory cannot become a %s: %w", typeName(hdr.Typeflag), ErrUnsafe)
		}
		return setMeta(t.root, hdr)
	}
	base := comps[len(comps)-1]
	if strings.HasPrefix(base, whiteoutPrefix) {
		return t.whiteout(comps)
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeLink, tar.TypeSymlink,
		tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return fmt.Errorf("unsupported tar entry type %q: %w", hdr.Typeflag, ErrUnsafe)
	}

	parent, err := t.dirAt(comps[:len(comps)-1], true)
	if err != nil {
		return fmt.Errorf("parent directory: %w", err)
	}
	if parent == t.root && base == lostFound && hdr.Typeflag != tar.TypeDir {
		// mkfs.ext4 makes /lost+found a directory, and e2fsck needs it.
		return fmt.Errorf("/%s must be a directory, not a %s: %w", lostFound, typeName(hdr.Typeflag), ErrUnsafe)
	}
	old, exists := parent.children[base]

	if hdr.Typeflag == tar.TypeDir && exists && old.node.Kind == KindDir {
		// A directory over a directory merges: new metadata, old children.
		if err := setMeta(old.node, hdr); err != nil {
			return err
		}
		parent.children[base] = dirent{node: old.node, layer: t.layer}
		return nil
	}

	// Build the new node before touching the old one, so a refused entry
	// leaves the tree as it was (hardlinks excepted, see below).
	var n *Node
	switch hdr.Typeflag {
	case tar.TypeLink:
		// The old entry goes first: a hardlink's target is looked up in
		// the tree as it will be, and may not be the entry it replaces.
		if exists {
			if err := t.unlink(parent, base); err != nil {
				return err
			}
			exists = false
		}
		if n, err = t.linkTarget(hdr.Linkname); err != nil {
			return err
		}
		n.nlink++
		parent.children[base] = dirent{node: n, layer: t.layer}
		return nil
	case tar.TypeDir:
		n = &Node{Kind: KindDir, children: map[string]dirent{}}
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return fmt.Errorf("symlink with an empty target: %w", ErrUnsafe)
		}
		if err := checkChars(hdr.Linkname); err != nil {
			return fmt.Errorf("symlink target: %w", err)
		}
		if len(hdr.Linkname) > maxPathLen {
			return fmt.Errorf("symlink target is %d bytes long, more than %d: %w", len(hdr.Linkname), maxPathLen, ErrUnsafe)
		}
		n = &Node{Kind: KindSymlink, Target: hdr.Linkname}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if n, err = deviceNode(hdr); err != nil {
			return err
		}
	default: // regular files
		if hdr.Size < 0 {
			return fmt.Errorf("negative size %d: %w", hdr.Size, ErrUnsafe)
		}
		if hdr.Size > t.limits.MaxFileSize {
			return fmt.Errorf("file is %d bytes, more than the %d allowed (Limits.MaxFileSize): %w", hdr.Size, t.limits.MaxFileSize, ErrTooLarge)
		}
		n = &Node{Kind: KindReg, Size: hdr.Size}
	}
	if err := setMeta(n, hdr); err != nil {
		return err
	}
	if err := t.countNode(); err != nil {
		return err
	}
	if n.Kind == KindReg {
		blob, blocks, err := t.stage.write(ctx, r, n.Size)
		if err != nil {
			t.nodes--
			return err
		}
		n.blob, n.blocks = blob, blocks
	}
	if exists {
		if err := t.unlink(parent, base); err != nil {
			return err
		}
	}
	n.nlink = 1
	parent.children[base] = dirent{node: n, layer: t.layer}
	return nil
}

const (
	lostFound      = "lost+found"
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	// metaPrefix starts aufs bookkeeping names (".wh..wh.plnk" ...), which
	// carry nothing an image needs.
	metaPrefix = ".wh..wh."
)

// whiteout applies a ".wh." entry: an opaque marker, or the removal of one
// name written by a lower layer.
func (t *Tree) whiteout(comps []string) error {
	base := comps[len(comps)-1]
	parentComps := comps[:len(comps)-1]
	switch {
	case base == opaqueMarker:
		dir, err := t.dirAt(parentComps, true)
		if err != nil {
			return fmt.Errorf("opaque directory: %w", err)
		}
		return t.prune(dir)
	case strings.HasPrefix(base, metaPrefix):
		return nil
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." {
		return nil
	}
	dir, err := t.dirAt(parentComps, false)
	if errors.Is(err, os.ErrNotExist) {
		return nil // nothing below to hide
	}
	if err != nil {
		return fmt.Errorf("whiteout: %w", err)
	}
	if e, ok := dir.children[name]; ok && e.layer < t.layer {
		return t.unlink(dir, name)
	}
	return nil
}

// prune empties dir of everything lower layers wrote in it, keeping what
// this layer wrote (whether before or after the opaque marker in the tar).
func (t *Tree) prune(dir *Node) error {
	for name, e := range dir.children {
		if e.node.Kind == KindDir {
			if err := t.prune(e.node); err != nil {
				return err
			}
			if e.layer < t.layer && len(e.node.children) == 0 {
				if err := t.unlink(dir, name); err != nil {
					return err
				}
			}
			continue
		}
		if e.layer < t.layer {
			if err := t.unlink(dir, name); err != nil {
				return err
			}
		}
	}
	return nil
}

// dirAt finds the directory at comps, following symlinks inside the image.
// With create, missing directories on the way are made.
func (t *Tree) dirAt(comps []string, create bool) (*Node, error) {
	if len(comps) == 0 {
		return t.root, nil
	}
	r, err := t.resolve(comps, true, create, t.layer)
	if err != nil {
		return nil, err
	}
	if r.node == nil {
		if !create {
			return nil, fmt.Errorf("%s: %w", joinPath(comps), os.ErrNotExist)
		}
		if err := t.countNode(); err != nil {
			return nil, err
		}
		r.node = &Node{Kind: KindDir, Mode: 0o755, ModTime: t.epoch, nlink: 1, children: map[string]dirent{}}
		r.dir.children[r.name] = dirent{node: r.node, layer: t.layer}
	}
	if r.node.Kind != KindDir {
		return nil, fmt.Errorf("%s is a %s, not a directory: %w", joinPath(comps), r.node.Kind, ErrUnsafe)
	}
	return r.node, nil
}

// linkTarget finds the node a hardlink entry names. The name is resolved
// inside the image like any entry name ("../../etc/passwd" is the image's
// /etc/passwd), so a hardlink can never reach a host file.
func (t *Tree) linkTarget(linkname string) (*Node, error) {
	comps, err := splitPath(linkname)
	if err != nil {
		return nil, fmt.Errorf("hardlink target: %w", err)
	}
	if len(comps) == 0 {
		return nil, fmt.Errorf("hardlink to the root directory: %w", ErrUnsafe)
	}
	r, err := t.resolve(comps, false, false, t.layer)
	if err != nil || r.node == nil {
		return nil, fmt.Errorf("hardlink target %q is not in the image: %w", linkname, ErrUnsafe)
	}
	if r.node.Kind == KindDir {
		return nil, fmt.Errorf("hardlink target %q is a directory: %w", linkname, ErrUnsafe)
	}
	return r.node, nil
}

// unlink removes name from dir and frees what no other path names.
func (t *Tree) unlink(dir *Node, name string) error {
	e := dir.children[name]
	delete(dir.children, name)
	return t.release(e.node)
}

func (t *Tree) release(n *Node) error {
	n.nlink--
	if n.nlink > 0 {
		return nil
	}
	t.nodes--
	switch n.Kind {
	case KindDir:
		for name := range n.children {
			if err := t.unlink(n, name); err != nil {
				return err
			}
		}
	case KindReg:
		return t.stage.remove(n.blob, n.blocks)
	}
	return nil
}

func (t *Tree) countNode() error {
	if t.nodes >= t.limits.MaxNodes {
		return fmt.Errorf("more than %d files (Limits.MaxNodes): %w", t.limits.MaxNodes, ErrTooLarge)
	}
	t.nodes++
	return nil
}

// setMeta copies ownership, mode, time and xattrs from hdr to n.
func setMeta(n *Node, hdr *tar.Header) error {
	if hdr.Uid < 0 || int64(hdr.Uid) >= math.MaxUint32 || hdr.Gid < 0 || int64(hdr.Gid) >= math.MaxUint32 {
		return fmt.Errorf("owner %d:%d out of range: %w", hdr.Uid, hdr.Gid, ErrUnsafe)
	}
	n.Mode = uint32(hdr.Mode) & 0o7777
	n.UID, n.GID = uint32(hdr.Uid), uint32(hdr.Gid)
	n.ModTime = hdr.ModTime
	xattrs, err := headerXattrs(hdr)
	if err != nil {
		return err
	}
	n.Xattrs = xattrs
	return nil
}

const paxXattrPrefix = "SCHILY.xattr."

// xattrNamespaces are the attribute namespaces ext4 stores.
var xattrNamespaces = []string{"user.", "trusted.", "security.", "system."}

func headerXattrs(hdr *tar.Header) (map[string][]byte, error) {
	var out map[string][]byte
	total := 0
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattrPrefix)
		if !ok {
			continue
		}
		if err := checkChars(name); err != nil {
			return nil, fmt.Errorf("xattr: %w", err)
		}
		known := false
		for _, ns := range xattrNamespaces {
			known = known || (strings.HasPrefix(name, ns) && len(name) > len(ns))
		}
		if !known || len(name) > maxNameLen {
			return nil, fmt.Errorf("xattr %q: not a name ext4 can store: %w", name, ErrUnsafe)
		}
		total += len(name) + len(v) + 16 // the entry header, roughly
		if total > maxXattrBytes {
			return nil, fmt.Errorf("xattrs total more than the %d bytes ext4 holds per file: %w", maxXattrBytes, ErrUnsafe)
		}
		if out == nil {
			out = map[string][]byte{}
		}
		out[name] = []byte(v)
	}
	return out, nil
}

// deviceNode makes a device or fifo node. It exists only in the model and,
// later, as an inode inside the image: a node for a host disk in an archive
// is harmless because nothing ever creates it on the host.
func deviceNode(hdr *tar.Header) (*Node, error) {
	n := &Node{}
	switch hdr.Typeflag {
	case tar.TypeFifo:
		n.Kind = KindFIFO
		return n, nil
	case tar.TypeChar:
		n.Kind = KindChar
	default:
		n.Kind = KindBlock
	}
	// The kernel's dev_t has a 12-bit major and a 20-bit minor.
	if hdr.Devmajor < 0 || hdr.Devmajor >= 1<<12 || hdr.Devminor < 0 || hdr.Devminor >= 1<<20 {
		return nil, fmt.Errorf("device number %d:%d out of range: %w", hdr.Devmajor, hdr.Devminor, ErrUnsafe)
	}
	n.Major, n.Minor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
	return n, nil
}

func typeName(flag byte) string {
	switch flag {
	case tar.TypeReg:
		return "regular file"
	case tar.TypeLink:
		return "hardlink"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("tar type %q", flag)
}
