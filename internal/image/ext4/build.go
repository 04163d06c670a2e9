package ext4

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/image/layers"
)

// BuildOptions configure Build.
type BuildOptions struct {
	Tools Tools
	Size  SizePolicy
	// Label is the filesystem label; default "banger-root". At most 16 bytes.
	Label string
	// Scratch is a private directory for the mke2fs configuration, the
	// debugfs script and xattr values; the staging directory does.
	Scratch string
	// Progress, if set, is called with bytes written to the image so far and
	// the expected total while mkfs.ext4 runs, and once at the end.
	Progress func(current, total int64)
	// SkipCheck skips the final `e2fsck -fn`. Tests and benchmarks of the
	// builder alone may; real conversions should not.
	SkipCheck bool
	// Logger receives the duration of each step at debug level; may be nil.
	Logger *slog.Logger
}

// Result describes a built image.
type Result struct {
	SizeBytes int64 // size of the image file (it is sparse: less is allocated)
	Plan      Plan
}

// DefaultLabel is the filesystem label of built images.
const DefaultLabel = "banger-root"

// mke2fsConf pins the filesystem features instead of taking the host's
// /etc/mke2fs.conf, so that an image does not depend on where it was built
// and carries only features that guest kernels from 4.x on mount.
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
`

// Build writes the tree as an ext4 image at dst. It writes a temporary file
// next to dst and renames it into place only when the image is complete and
// e2fsck passes it, so dst is either the whole image or untouched; the
// temporary file is removed on failure. It materializes the tree (see
// layers.Tree.Materialize) first.
func Build(ctx context.Context, tree *layers.Tree, dst string, opts BuildOptions) (res Result, err error) {
	if opts.Label == "" {
		opts.Label = DefaultLabel
	}
	if len(opts.Label) > 16 {
		return Result{}, fmt.Errorf("ext4 label %q is longer than 16 bytes", opts.Label)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	step := time.Now()
	done := func(what string) {
		log.Debug("ext4 build step", "step", what, "image", dst, "took", time.Since(step))
		step = time.Now()
	}
	plan := opts.Size.Plan(tree.Stats())
	staged, err := tree.Materialize(ctx)
	if err != nil {
		return Result{}, err
	}
	done("materialize")
	dir := filepath.Dir(dst)
	if err := checkFree(dir, plan.UsedBytes); err != nil {
		return Result{}, err
	}
	conf := filepath.Join(opts.Scratch, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(mke2fsConf), 0o600); err != nil {
		return Result{}, fmt.Errorf("mke2fs config: %w", err)
	}

	tmp, err := tempNear(dst)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()

	stop := watchGrowth(tmp, plan.UsedBytes, opts.Progress)
	_, _, err = run(ctx, []string{"MKE2FS_CONFIG=" + conf}, opts.Tools.Mkfs,
		"-q", "-F", "-t", "ext4", "-T", "default",
		"-b", strconv.Itoa(layers.BlockSize), "-I", strconv.Itoa(inodeSize),
		"-N", strconv.Itoa(plan.Inodes), "-m", "0", "-J", "size="+strconv.Itoa(plan.JournalMiB),
		"-L", opts.Label, "-E", "root_owner=0:0",
		"-d", staged, tmp, strconv.FormatInt(plan.Bytes/1024, 10)+"k")
	stop()
	if err != nil {
		return Result{}, fmt.Errorf("build ext4 image %s: %w", dst, err)
	}
	done("mkfs.ext4")

	s, err := metadataScript(tree, opts.Scratch)
	if err != nil {
		return Result{}, fmt.Errorf("build ext4 image %s: %w", dst, err)
	}
	if err := runScript(ctx, opts.Tools, opts.Scratch, tmp, s); err != nil {
		return Result{}, fmt.Errorf("build ext4 image %s: set metadata: %w", dst, err)
	}
	done("debugfs")
	if !opts.SkipCheck {
		if err := Check(ctx, opts.Tools, tmp); err != nil {
			return Result{}, fmt.Errorf("build ext4 image %s: the result fails its check (a bug in banger): %w", dst, err)
		}
		done("e2fsck")
	}
	if err := commit(tmp, dst); err != nil {
		return Result{}, err
	}
	done("commit")
	if opts.Progress != nil {
		opts.Progress(plan.UsedBytes, plan.UsedBytes)
	}
	return Result{SizeBytes: plan.Bytes, Plan: plan}, nil
}

// metadataScript writes the debugfs commands that give every inode its
// owner, mode and xattrs, and create the symlinks, device nodes and fifos.
// Paths in it are those the tree validated.
func metadataScript(tree *layers.Tree, scratch string) (*script, error) {
	s := &script{cwd: "/"}
	xattrSeq := 0
	err := tree.Walk(func(e layers.Entry) error {
		n := e.Node
		dir, base := path.Split(e.Path)
		dir = path.Clean(dir)
		if e.FirstPath != "" {
			// Another name for a node already made. mkfs.ext4 -d made the
			// regular files' links from the staged hardlinks.
			if n.Kind != layers.KindReg {
				s.cd(dir)
				s.add("link", e.FirstPath, base)
			}
			return nil
		}
		switch n.Kind {
		case layers.KindSymlink:
			s.cd(dir)
			s.add("symlink", base, n.Target)
		case layers.KindChar:
			s.mknod(dir, base, 'c', n.Major, n.Minor)
		case layers.KindBlock:
			s.mknod(dir, base, 'b', n.Major, n.Minor)
		case layers.KindFIFO:
			s.mknod(dir, base, 'p', 0, 0)
		}
		if n.Kind != layers.KindSymlink { // a symlink's mode is always 0777
			s.setInode(e.Path, "mode", uint64(n.Kind.TypeBits()|n.Mode), true)
		}
		s.setInode(e.Path, "uid", uint64(n.UID), false)
		s.setInode(e.Path, "gid", uint64(n.GID), false)
		if n.Kind != layers.KindDir && n.Kind != layers.KindReg {
			// mkfs.ext4 -d copied the staged times of files and directories.
			t := uint64(max(0, min(n.ModTime.Unix(), 1<<32-1)))
			s.add("set_inode_field", e.Path, "mtime", "@"+strconv.FormatUint(t, 10))
			s.add("set_inode_field", e.Path, "atime", "@"+strconv.FormatUint(t, 10))
			if e.Links > 1 {
				s.setInode(e.Path, "links_count", uint64(e.Links), false)
			}
		}
		for _, name := range sortedKeys(n.Xattrs) {
			xattrSeq++
			vf := filepath.Join(scratch, "xattr-"+strconv.Itoa(xattrSeq))
			if err := os.WriteFile(vf, n.Xattrs[name], 0o600); err != nil {
				return fmt.Errorf("xattr value: %w", err)
			}
			s.add("ea_set", "-f", vf, e.Path, name)
		}
		return s.err
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// checkFree fails early, with the numbers, when dir's filesystem lacks the
// space the image will take, rather than letting mkfs.ext4 fail halfway.
func checkFree(dir string, need int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("free space in %s: %w", dir, err)
	}
	avail := int64(st.Bavail) * st.Bsize
	if avail < need {
		return fmt.Errorf("%s has %d MiB free, the image needs about %d MiB: free some space and retry: %w",
			dir, avail>>20, (need+mib-1)>>20, ErrNoSpace)
	}
	return nil
}

// tempNear creates an empty temporary file in dst's directory, so that the
// final rename is atomic.
func tempNear(dst string) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("image file: %w", err)
	}
	name := f.Name()
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", fmt.Errorf("image file: %w", err)
	}
	return name, nil
}

// commit flushes tmp and renames it to dst, then flushes the directory, so
// that after a crash dst is either absent or complete.
func commit(tmp, dst string) error {
	f, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("image file: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("image file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("image file: sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("image file: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("image file: %w", err)
	}
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil && err != syscall.EINVAL {
			return fmt.Errorf("image directory: sync: %w", err)
		}
	}
	return nil
}

// watchGrowth reports the allocated size of the image file while mkfs.ext4
// writes it, since mkfs.ext4 reports no progress of its own. The returned
// function stops the watcher and waits for it.
func watchGrowth(file string, total int64, progress func(current, total int64)) (stop func()) {
	if progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		progress(0, total)
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				var st unix.Stat_t
				if unix.Stat(file, &st) == nil {
					progress(min(st.Blocks*512, total), total)
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
