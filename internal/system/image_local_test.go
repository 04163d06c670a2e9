package system_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"banger/internal/api"
	"banger/internal/testutil"
)

// TestImageLocalInputsAsCaller: local inputs are read by whoever runs the CLI (here
// root), not by bangerd (the unprivileged owner): a root-only directory, tarball and
// docker archive import; the image records the caller's path; a docker archive's
// RepoTags name its image; short ID prefixes work; a missing file is said to be
// missing, never blamed on a network.
func TestImageLocalInputsAsCaller(t *testing.T) {
	e := newEnv(t, testConfig)
	testutil.Binary(t, "banger-agent")
	if out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username); err != nil {
		t.Fatalf("system run: %v\n%s", err, out)
	}
	// Everything below lives in a root-only directory the owner cannot enter.
	private := filepath.Join(e.root, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(private, "rootfs")
	if err := os.MkdirAll(filepath.Join(tree, "etc"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "etc", "shadow"), []byte("root:*:1::::::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(private, "rootfs.tar")
	if err := os.WriteFile(tarPath, rootfsTar(t, "etc/hostname", "private\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(private, "app.tar")
	writeDockerArchive(t, archive, "example.com/app:v1")
	if err := os.Chmod(archive, 0o600); err != nil {
		t.Fatal(err)
	}

	inspect := func(ref string) api.Image {
		t.Helper()
		out, err := e.banger("image", "inspect", "--json", ref)
		if err != nil {
			t.Fatalf("image inspect %s: %v\n%s", ref, err, out)
		}
		var img api.Image
		if err := json.Unmarshal([]byte(out), &img); err != nil {
			t.Fatalf("image inspect %s: %v\n%s", ref, err, out)
		}
		return img
	}

	if out, err := e.banger("image", "import", tree, "--name", "privdir"); err != nil {
		t.Fatalf("import of a root-only directory: %v\n%s", err, out)
	}
	if img := inspect("privdir"); img.Kind != "rootfs-dir" || img.Source != tree {
		t.Errorf("directory image: kind %q source %q; want rootfs-dir from %s", img.Kind, img.Source, tree)
	}
	if out, err := e.banger("image", "import", tarPath); err != nil {
		t.Fatalf("import of a root-only tarball: %v\n%s", err, out)
	} else if strings.Contains(out, ".upload-") || !strings.Contains(out, tarPath) {
		t.Errorf("import progress names bangerd's staged copy, not %s:\n%s", tarPath, out)
	}
	tarImg := inspect("rootfs") // named after the caller's file, not bangerd's copy
	if tarImg.Kind != "rootfs-tar" || tarImg.Source != tarPath {
		t.Errorf("tarball image: kind %q source %q; want rootfs-tar from %s", tarImg.Kind, tarImg.Source, tarPath)
	}
	if out, err := e.banger("image", "pull", archive); err != nil {
		t.Fatalf("pull of a root-only docker archive: %v\n%s", err, out)
	}
	if img := inspect("example.com/app:v1"); !slices.Contains(img.Tags, "example.com/app:v1") || !strings.Contains(img.Source, archive) {
		t.Errorf("archive image: tags %q source %q; want its RepoTag and %s", img.Tags, img.Source, archive)
	}
	// A short ID prefix finds the image.
	short := strings.TrimPrefix(tarImg.ID, "sha256:")[:12]
	if img := inspect(short); img.ID != tarImg.ID {
		t.Errorf("inspect %s = %s, want %s", short, img.ID, tarImg.ID)
	}
	// Wrong inputs: said in the caller's terms, with the caller's path.
	for _, tt := range []struct {
		args []string
		want []string
		no   string
	}{
		{[]string{"image", "pull", filepath.Join(private, "nope.tar")}, []string{"nope.tar does not exist"}, "unreachable"},
		{[]string{"image", "import", archive}, []string{archive, "image pull docker-archive:"}, "upload-"},
	} {
		out, err := e.banger(tt.args...)
		if err == nil {
			t.Errorf("%v succeeded:\n%s", tt.args, out)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", tt.args, w, out)
			}
		}
		if strings.Contains(out, tt.no) {
			t.Errorf("%v: output mentions %q:\n%s", tt.args, tt.no, out)
		}
	}
	// Nothing staged is left beside the images.
	if ents, _ := filepath.Glob(filepath.Join(e.root, "state", "images", ".upload-*")); len(ents) > 0 {
		t.Errorf("staging left behind: %v", ents)
	}
}

// rootfsTar is a tar holding one file.
func rootfsTar(t *testing.T, name, body string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// writeDockerArchive writes a one-layer image for this host as `docker save` would,
// with tag as its RepoTag.
func writeDockerArchive(t *testing.T, path, tag string) {
	t.Helper()
	data := rootfsTar(t, "etc/os-release", "ID=app\n")
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(path, ref, img); err != nil {
		t.Fatal(err)
	}
}
