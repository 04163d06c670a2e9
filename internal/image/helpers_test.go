package image_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"banger/internal/image"
	"banger/internal/image/ext4"
	"banger/internal/image/imagetest"
	"banger/internal/image/oci"
)

// testRegistry is an in-process OCI registry on 127.0.0.1 that counts blob
// downloads and can corrupt chosen blobs.
type testRegistry struct {
	host string

	mu        sync.Mutex      // guards the fields below
	blobGets  map[string]int  // digest -> GET count
	corrupt   map[string]bool // digests whose bytes are altered
	manifests int             // manifest requests
}

var blobPath = regexp.MustCompile(`/blobs/(sha256:[0-9a-f]{64})$`)

func newRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{blobGets: map[string]int{}, corrupt: map[string]bool{}}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		m := blobPath.FindStringSubmatch(req.URL.Path)
		corrupt := false
		if m != nil && req.Method == http.MethodGet {
			r.blobGets[m[1]]++
			corrupt = r.corrupt[m[1]]
		}
		if strings.Contains(req.URL.Path, "/manifests/") {
			r.manifests++
		}
		r.mu.Unlock()
		if corrupt {
			inner.ServeHTTP(&corruptingWriter{ResponseWriter: w}, req)
			return
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// blobDownloads is the number of blob GETs so far.
func (r *testRegistry) blobDownloads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.blobGets {
		n += c
	}
	return n
}

func (r *testRegistry) setCorrupt(digest string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.corrupt[digest] = true
}

// corruptingWriter flips bits in the middle of a response body.
type corruptingWriter struct {
	http.ResponseWriter
	written int
}

func (c *corruptingWriter) Write(b []byte) (int, error) {
	out := append([]byte(nil), b...)
	for i := range out {
		if pos := c.written + i; pos >= 100 && pos < 200 {
			out[i] ^= 0xff
		}
	}
	c.written += len(b)
	return c.ResponseWriter.Write(out)
}

// push writes img to the registry as repo:tag and returns the reference.
func (r *testRegistry) push(t *testing.T, repo string, img v1.Image) string {
	t.Helper()
	ref := r.host + "/" + repo
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

func (r *testRegistry) pushIndex(t *testing.T, repo string, idx v1.ImageIndex) string {
	t.Helper()
	ref := r.host + "/" + repo
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	return ref
}

// layer makes an image layer (gzip-compressed, as registries hold them)
// from tar entries.
func layer(t *testing.T, entries ...imagetest.Entry) v1.Layer {
	t.Helper()
	b := imagetest.Tar(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// makeImage builds an image for the platform (os/arch) from layers.
func makeImage(t *testing.T, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: arch})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func configDigest(t *testing.T, img v1.Image) string {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func hostArch() string { return runtime.GOARCH }

// newBuilder returns a Builder that uses anonymous registry access and no
// retries, so failure tests fail fast.
func newBuilder(t *testing.T) (*image.Builder, ext4.Tools) {
	t.Helper()
	tools := imagetest.Tools(t)
	b, err := image.New(image.Config{
		Tools:    tools,
		Registry: oci.Options{Keychain: authn.NewMultiKeychain(), Retries: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b, tools
}

// outDir is an empty directory for an image; the test fails at the end if
// anything but the named images is left in it (temporary files, staging).
func outDir(t *testing.T, keep ...string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "out")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { assertOnly(t, d, keep...) })
	return d
}

// assertOnly fails t if dir holds anything but the named files.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for _, e := range entries {
		if !want[e.Name()] {
			t.Errorf("left in %s: %s (want only %v)", dir, e.Name(), names)
		}
	}
}

func stat(t *testing.T, tools ext4.Tools, img, p string) ext4.Inode {
	t.Helper()
	in, err := ext4.Stat(context.Background(), tools, img, p)
	if err != nil {
		t.Fatalf("stat %s in %s: %v", p, img, err)
	}
	return in
}

func readFile(t *testing.T, tools ext4.Tools, img, p string) string {
	t.Helper()
	b, err := ext4.ReadFile(context.Background(), tools, img, p, 1<<20)
	if err != nil {
		t.Fatalf("read %s in %s: %v", p, img, err)
	}
	return string(b)
}

func assertAbsent(t *testing.T, tools ext4.Tools, img string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := ext4.Stat(context.Background(), tools, img, p); err == nil {
			t.Errorf("%s is in the image, want it absent", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat %s: %v", p, err)
		}
	}
}
