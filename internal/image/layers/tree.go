package layers

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"time"
)

// Errors a caller can test for with errors.Is.
var (
	// ErrUnsafe marks an archive entry refused because it cannot be placed
	// safely or faithfully in an image: a name with a newline, a hardlink to a
	// missing file or a directory, a device number out of range, ...
	ErrUnsafe = errors.New("layers: unsafe archive entry")
	// ErrTooLarge marks content over one of the configured Limits.
	ErrTooLarge = errors.New("layers: image content over the configured limit")
	// ErrNotTar marks input that is not a tar archive.
	ErrNotTar = errors.New("layers: not a tar archive")
)

// Kind is the type of a node in the image tree.
type Kind uint8

// The node kinds an ext4 root filesystem holds. Sockets are not among them:
// tar cannot carry them and a socket file is useless in a fresh image.
const (
	KindDir Kind = iota + 1
	KindReg
	KindSymlink
	KindChar
	KindBlock
	KindFIFO
)

func (k Kind) String() string {
	switch k {
	case KindDir:
		return "directory"
	case KindReg:
		return "regular file"
	case KindSymlink:
		return "symlink"
	case KindChar:
		return "character device"
	case KindBlock:
		return "block device"
	case KindFIFO:
		return "fifo"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// TypeBits returns the S_IFMT bits of the kind, as stored in an inode's mode.
func (k Kind) TypeBits() uint32 {
	switch k {
	case KindDir:
		return 0o040000
	case KindReg:
		return 0o100000
	case KindSymlink:
		return 0o120000
	case KindChar:
		return 0o020000
	case KindBlock:
		return 0o060000
	case KindFIFO:
		return 0o010000
	}
	return 0
}

// Node is one inode of the image: what it is and the metadata the ext4 image
// must carry. A node reached by several paths (a hardlink) is one *Node.
// Regular file content lives in the staging area, never in memory.
type Node struct {
	Kind    Kind
	Mode    uint32 // permission bits with setuid, setgid and sticky (07777)
	UID     uint32
	GID     uint32
	ModTime time.Time
	Xattrs  map[string][]byte
	Size    int64  // regular files: apparent size in bytes
	Target  string // symlinks: the target, verbatim
	Major   uint32 // devices
	Minor   uint32

	blob     string            // regular files: name of the content in the staging area
	blocks   int64             // regular files: 4 KiB blocks of content actually stored (holes excluded)
	nlink    int               // directory entries naming this node
	children map[string]dirent // directories
}

// dirent is a name in a directory. The layer that last wrote the name is
// kept per entry, not per node, because an opaque directory hides what lower
// layers wrote there, and a hardlink written by this layer to a lower layer's
// file is this layer's entry.
type dirent struct {
	node  *Node
	layer int
}

// Stats summarises a tree, for sizing the ext4 image.
type Stats struct {
	Nodes      int   // inodes (a hardlinked file counts once)
	Dirs       int   // directories, the root included
	DataBlocks int64 // 4 KiB blocks of regular file content, holes excluded
	LongLinks  int   // symlinks whose target does not fit in the inode (>= 60 bytes)
	XattrNodes int   // nodes with extended attributes
	XattrBytes int64 // total size of extended attribute names and values
	// DirEntryBytes is the space directory entries take: 8 bytes plus the
	// name, rounded to 4, per entry.
	DirEntryBytes int64
}

// BlockSize is the block size content is counted in, and the ext4 block size.
const BlockSize = 4096

// Stats counts the nodes of the tree.
func (t *Tree) Stats() Stats {
	var s Stats
	seen := map[*Node]bool{}
	var walk func(n *Node)
	walk = func(n *Node) {
		if seen[n] {
			return
		}
		seen[n] = true
		s.Nodes++
		if len(n.Xattrs) > 0 {
			s.XattrNodes++
		}
		for k, v := range n.Xattrs {
			s.XattrBytes += int64(len(k) + len(v))
		}
		switch n.Kind {
		case KindDir:
			s.Dirs++
			for name, e := range n.children {
				s.DirEntryBytes += int64(8+len(name)+3) &^ 3
				walk(e.node)
			}
		case KindReg:
			s.DataBlocks += n.blocks
		case KindSymlink:
			if len(n.Target) >= 60 {
				s.LongLinks++
			}
		}
	}
	walk(t.root)
	return s
}

// Entry is one path of the tree as Walk visits it.
type Entry struct {
	Path string // absolute, clean: "/", "/etc", "/etc/passwd"
	Node *Node
	// FirstPath is set when Node was already visited under another path: this
	// entry is a hardlink to FirstPath.
	FirstPath string
	// Links is the number of paths naming Node; set on the first visit.
	Links int
}

// Walk visits every path of the tree, parents before children, names in
// byte order, so output built from it is deterministic.
func (t *Tree) Walk(fn func(Entry) error) error {
	first := map[*Node]string{}
	var walk func(path string, n *Node) error
	walk = func(path string, n *Node) error {
		e := Entry{Path: path, Node: n}
		if p, ok := first[n]; ok {
			e.FirstPath = p
		} else {
			first[n] = path
			e.Links = n.nlink
		}
		if err := fn(e); err != nil {
			return err
		}
		if n.Kind != KindDir || e.FirstPath != "" {
			return nil
		}
		prefix := path
		if prefix != "/" {
			prefix += "/"
		}
		for _, name := range sortedNames(n) {
			if err := walk(prefix+name, n.children[name].node); err != nil {
				return err
			}
		}
		return nil
	}
	return walk("/", t.root)
}

func sortedNames(dir *Node) []string {
	names := make([]string, 0, len(dir.children))
	for name := range dir.children {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// maxSymlinkHops bounds symlink expansion while resolving a path, as the
// kernel's ELOOP limit does.
const maxSymlinkHops = 40

// resolved is where a path lands: the directory holding the last name, the
// name, and the node there (nil if absent). For the root, dir is nil and
// name is empty.
type resolved struct {
	dir  *Node
	name string
	node *Node
}

// resolve walks comps from the root. Symlinks in intermediate components are
// followed (and in the last one when followLast), always inside the image:
// an absolute target restarts at the image root and ".." stops at it, so no
// path, however hostile, leads outside the tree. Missing intermediate
// directories are created (0755, root-owned, written by layer) when create is
// set, and are an error otherwise.
func (t *Tree) resolve(comps []string, followLast, create bool, layer int) (resolved, error) {
	stack := []step{} // the directories walked, for ".."
	cur := t.root
	queue := append([]string(nil), comps...)
	hops := 0
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		switch c {
		case "", ".":
			if len(queue) == 0 {
				return t.here(stack, cur), nil
			}
			continue
		case "..":
			if len(stack) > 0 {
				cur = stack[len(stack)-1].dir
				stack = stack[:len(stack)-1]
			}
			if len(queue) == 0 {
				return t.here(stack, cur), nil
			}
			continue
		}
		e, ok := cur.children[c]
		last := len(queue) == 0
		if ok && e.node.Kind == KindSymlink && (!last || followLast) {
			hops++
			if hops > maxSymlinkHops {
				return resolved{}, fmt.Errorf("too many levels of symlinks at %q: %w", c, ErrUnsafe)
			}
			target, err := splitTarget(e.node.Target)
			if err != nil {
				return resolved{}, err
			}
			if len(e.node.Target) > 0 && e.node.Target[0] == '/' {
				cur, stack = t.root, stack[:0]
			}
			queue = append(target, queue...)
			if len(queue) == 0 { // a link to "/" or "." as the last component
				return t.here(stack, cur), nil
			}
			continue
		}
		if last {
			r := resolved{dir: cur, name: c}
			if ok {
				r.node = e.node
			}
			return r, nil
		}
		if !ok {
			if !create {
				return resolved{}, fmt.Errorf("%q: %w", c, os.ErrNotExist)
			}
			if err := t.countNode(); err != nil {
				return resolved{}, err
			}
			n := &Node{Kind: KindDir, Mode: 0o755, ModTime: t.epoch, nlink: 1, children: map[string]dirent{}}
			cur.children[c] = dirent{node: n, layer: layer}
			e = cur.children[c]
		}
		if e.node.Kind != KindDir {
			return resolved{}, fmt.Errorf("%q is a %s, not a directory: %w", c, e.node.Kind, ErrUnsafe)
		}
		stack = append(stack, step{dir: cur, name: c})
		cur = e.node
	}
	return t.here(stack, cur), nil
}

// step is one directory walked by resolve: the parent and the name in it.
type step struct {
	dir  *Node
	name string
}

// here describes the directory cur, reached through stack, as a resolved.
func (t *Tree) here(stack []step, cur *Node) resolved {
	if len(stack) == 0 {
		return resolved{node: t.root}
	}
	top := stack[len(stack)-1]
	return resolved{dir: top.dir, name: top.name, node: cur}
}

// splitTarget splits a symlink target into components for resolution,
// keeping ".." (it is resolved physically, after the links before it).
func splitTarget(target string) ([]string, error) {
	if err := checkChars(target); err != nil {
		return nil, err
	}
	var comps []string
	for _, c := range splitSlash(target) {
		if c != "" && c != "." {
			comps = append(comps, c)
		}
	}
	return comps, nil
}

func splitSlash(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
