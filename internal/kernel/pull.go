package kernel

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"banger/internal/image/oci"
)

// PullRequest names an OCI image that carries a kernel in /boot.
type PullRequest struct {
	// Ref is an image reference as `banger image pull` takes it: a
	// registry reference, oci:/layout[:tag] or docker-archive:/file.tar.
	Ref string
	// KernelFile picks the kernel when /boot holds several ("vmlinuz-6.1.0-1").
	KernelFile string
	Name       string // as ImportRequest.Name
	Dir        string // the kernels directory. Required.
	Options    oci.Options
}

// maxBootFile bounds one file read from /boot of an image.
const maxBootFile = 512 << 20

// Pull finds the kernel (/boot/vmlinuz*, vmlinux* or bzImage*), an optional
// initrd (/boot/initrd*) and the kernel's config (/boot/config-RELEASE) in
// the image's layers, applied in order with whiteouts, and imports them as
// Import does. Only /boot's direct entries are read; symlinks and hardlinks
// among them are followed within /boot, never outside it.
func Pull(ctx context.Context, req PullRequest) (Kernel, error) {
	if req.Dir == "" {
		return Kernel{}, fmt.Errorf("kernel pull: no kernels directory")
	}
	src, err := oci.ParseSource(req.Ref)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel pull: %w", err)
	}
	img, res, err := oci.Open(ctx, src, req.Options)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel pull: %w", err)
	}
	what := fmt.Sprintf("image %s", src)
	if res.Platform == "" {
		if err := oci.CheckPlatform(img, req.Options.Platform, what); err != nil {
			return Kernel{}, fmt.Errorf("kernel pull: %w", err)
		}
	}
	layers, err := img.Layers()
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel pull: %w", oci.Classify(err, what+": list layers"))
	}
	if err := os.MkdirAll(req.Dir, 0o750); err != nil {
		return Kernel{}, fmt.Errorf("kernels directory: %w", err)
	}
	tmp, err := os.MkdirTemp(req.Dir, ".pull-*")
	if err != nil {
		return Kernel{}, fmt.Errorf("kernels directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	boot := newBootTree(tmp)
	for i, l := range layers {
		rc, _, err := oci.OpenLayer(l, src.Kind, nil)
		if err != nil {
			return Kernel{}, fmt.Errorf("kernel pull: %w", oci.Classify(err, fmt.Sprintf("%s: layer %d", what, i+1)))
		}
		err = boot.apply(ctx, rc)
		// Read to the end: registry layers are verified against their
		// digest only then.
		if err == nil {
			_, err = io.Copy(io.Discard, rc)
		}
		rc.Close()
		if err != nil {
			return Kernel{}, fmt.Errorf("kernel pull: %w", oci.Classify(err, fmt.Sprintf("%s: layer %d", what, i+1)))
		}
	}
	kpath, kname, err := boot.pickKernel(req.KernelFile)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel pull: %s: %w", what, err)
	}
	ipath, iname, err := boot.pickInitrd(kname)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel pull: %s: %w", what, err)
	}
	source := src.String()
	if res.ManifestDigest != "" {
		source += "@" + res.ManifestDigest
	}
	return commit(ctx, staged{
		kernel:     kpath,
		initrd:     ipath,
		kernelName: what + ":/boot/" + kname,
		initrdName: what + ":/boot/" + iname,
		configFor: func(release string) (string, string) {
			if p := boot.resolve("config-" + release); p != "" {
				return p, source + ":/boot/config-" + release
			}
			return "", ""
		},
		name:       req.Name,
		fallbackNm: kname,
		source:     source,
		dir:        req.Dir,
	})
}

// bootEntry is the state of one /boot name after the layers so far.
type bootEntry struct {
	file string // a staged regular file, or
	link string // a symlink target, as written in the archive
}

// bootTree is /boot as the layers build it. Files are staged under dir with
// names of banger's choosing; archive names only key the map.
type bootTree struct {
	dir     string
	entries map[string]bootEntry // base name in /boot -> entry
	n       int
}

func newBootTree(dir string) *bootTree {
	return &bootTree{dir: dir, entries: map[string]bootEntry{}}
}

// bootName returns the base name if the archive path is a direct entry of
// /boot ("boot/x", "./boot/x", "/boot/x"), and whether the path is /boot.
func bootName(p string) (name string, isBoot bool) {
	p = path.Clean("/" + p)
	if p == "/boot" {
		return "", true
	}
	dir, base := path.Split(p)
	if dir != "/boot/" {
		return "", false
	}
	return base, false
}

// apply applies one layer's tar stream: whiteouts first remove what lower
// layers had, then entries replace it.
func (b *bootTree) apply(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		// A whiteout of /boot itself, or /boot replaced by a non-directory.
		if clean := path.Clean("/" + h.Name); clean == "/.wh.boot" {
			b.entries = map[string]bootEntry{}
			continue
		}
		name, isBoot := bootName(h.Name)
		if isBoot {
			if h.Typeflag != tar.TypeDir {
				b.entries = map[string]bootEntry{}
			}
			continue
		}
		if name == "" {
			continue
		}
		switch {
		case name == ".wh..wh..opq":
			b.entries = map[string]bootEntry{}
			continue
		case strings.HasPrefix(name, ".wh."):
			delete(b.entries, strings.TrimPrefix(name, ".wh."))
			continue
		}
		switch h.Typeflag {
		case tar.TypeReg:
			if h.Size > maxBootFile {
				return fmt.Errorf("/boot/%s is %d bytes, over the %d MiB limit for a kernel or initrd", name, h.Size, maxBootFile>>20)
			}
			b.n++
			staged := filepath.Join(b.dir, fmt.Sprintf("entry-%d", b.n))
			if err := stageFile(tr, staged, h.Size); err != nil {
				return fmt.Errorf("/boot/%s: %w", name, err)
			}
			b.entries[name] = bootEntry{file: staged}
		case tar.TypeSymlink:
			b.entries[name] = bootEntry{link: h.Linkname}
		case tar.TypeLink:
			target, _ := bootName(h.Linkname)
			if e, ok := b.entries[target]; ok && target != "" {
				b.entries[name] = e
			} else {
				delete(b.entries, name)
			}
		default:
			delete(b.entries, name) // a directory, device or fifo: not a kernel
		}
	}
}

func stageFile(r io.Reader, dst string, size int64) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = fmt.Errorf("got %d bytes, want %d: truncated layer", n, size)
	}
	return err
}

// resolve follows symlinks within /boot and returns the staged file that
// name leads to, or "".
func (b *bootTree) resolve(name string) string {
	for hops := 0; hops < 16; hops++ {
		e, ok := b.entries[name]
		if !ok {
			return ""
		}
		if e.file != "" {
			return e.file
		}
		t := e.link
		if !strings.HasPrefix(t, "/") {
			t = "/boot/" + t
		}
		next, _ := bootName(t)
		if next == "" {
			return "" // leads out of /boot
		}
		name = next
	}
	return ""
}

// candidates returns the names in /boot that match one of prefixes and
// resolve to a file, grouped by the file they resolve to (a symlink
// "vmlinuz" and its target "vmlinuz-6.1" are one kernel). Each group is
// named by its longest name, which carries the version.
func (b *bootTree) candidates(prefixes ...string) map[string]string {
	byFile := map[string]string{}
	for name := range b.entries {
		match := false
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				match = true
			}
		}
		if !match || strings.HasSuffix(name, ".old") {
			continue
		}
		f := b.resolve(name)
		if f == "" {
			continue
		}
		if cur, ok := byFile[f]; !ok || len(name) > len(cur) || (len(name) == len(cur) && name < cur) {
			byFile[f] = name
		}
	}
	out := map[string]string{}
	for f, name := range byFile {
		out[name] = f
	}
	return out
}

func (b *bootTree) pickKernel(want string) (file, name string, err error) {
	cands := b.candidates("vmlinuz", "vmlinux", "bzImage")
	if want != "" {
		want = path.Base(want)
		if f := b.resolve(want); f != "" {
			return f, want, nil
		}
		return "", "", fmt.Errorf("no /boot/%s (kernels there: %s)", want, listNames(cands))
	}
	switch len(cands) {
	case 0:
		return "", "", fmt.Errorf("no kernel in /boot (looked for vmlinuz*, vmlinux*, bzImage*): %w", ErrNotKernel)
	case 1:
		for n, f := range cands {
			return f, n, nil
		}
	}
	return "", "", fmt.Errorf("/boot holds several kernels (%s): name one with the kernel file option", listNames(cands))
}

// pickInitrd returns the initrd for kernel file kname: the only one, or the
// one whose version suffix matches the kernel's ("initrd.img-X" for
// "vmlinuz-X"); "" if there is none.
func (b *bootTree) pickInitrd(kname string) (file, name string, err error) {
	cands := b.candidates("initrd", "initramfs")
	if len(cands) == 0 {
		return "", "", nil
	}
	if len(cands) == 1 {
		for n, f := range cands {
			return f, n, nil
		}
	}
	if _, ver, ok := strings.Cut(kname, "-"); ok {
		for _, n := range []string{"initrd.img-" + ver, "initrd-" + ver, "initramfs-" + ver + ".img", "initrd-" + ver + ".img"} {
			if f, ok := cands[n]; ok {
				return f, n, nil
			}
		}
	}
	return "", "", fmt.Errorf("/boot holds several initrds (%s) and none matches %s", listNames(cands), kname)
}

func listNames(m map[string]string) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
