package image_test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"banger/internal/image"
	"banger/internal/image/imagetest"
	"banger/internal/image/progress"
)

// richImage has three layers exercising everything a conversion must keep:
// a whiteout, an opaque directory, setuid, a hardlink, device nodes, a
// symlink (and a write through a symlinked directory), a file owned by uid
// 1234, an xattr, and a file replaced by a later layer.
func richImage(t *testing.T) v1.Image {
	t.Helper()
	l1 := layer(t,
		imagetest.Entry{Name: "etc/", Type: tar.TypeDir},
		imagetest.Entry{Name: "etc/passwd", Body: "root:x:0:0::/root:/bin/sh\n"},
		imagetest.Entry{Name: "etc/gone", Body: "whited out later"},
		imagetest.Entry{Name: "opq/", Type: tar.TypeDir},
		imagetest.Entry{Name: "opq/old", Body: "hidden by the opaque marker"},
		imagetest.Entry{Name: "opq/sub/", Type: tar.TypeDir},
		imagetest.Entry{Name: "opq/sub/old2", Body: "also hidden"},
		imagetest.Entry{Name: "usr/", Type: tar.TypeDir},
		imagetest.Entry{Name: "usr/lib/", Type: tar.TypeDir},
		imagetest.Entry{Name: "lib", Type: tar.TypeSymlink, Linkname: "usr/lib"},
		imagetest.Entry{Name: "bin/", Type: tar.TypeDir},
	)
	l2 := layer(t,
		imagetest.Entry{Name: "etc/.wh.gone"},
		imagetest.Entry{Name: "opq/.wh..wh..opq"},
		imagetest.Entry{Name: "opq/new", Body: "kept"},
		imagetest.Entry{Name: "bin/su", Body: "#!/bin/su\n", Mode: 0o4755},
		imagetest.Entry{Name: "bin/su-again", Type: tar.TypeLink, Linkname: "bin/su"},
		imagetest.Entry{Name: "dev/", Type: tar.TypeDir},
		imagetest.Entry{Name: "dev/sda", Type: tar.TypeBlock, Major: 8, Minor: 0, Mode: 0o660, GID: 6},
		imagetest.Entry{Name: "dev/null", Type: tar.TypeChar, Major: 1, Minor: 3, Mode: 0o666},
		imagetest.Entry{Name: "home/", Type: tar.TypeDir},
		imagetest.Entry{Name: "home/user/", Type: tar.TypeDir, Mode: 0o750, UID: 1234, GID: 1234},
		imagetest.Entry{Name: "home/user/notes", Body: "mine", Mode: 0o600, UID: 1234, GID: 1234},
		imagetest.Entry{Name: "bin/ping", Body: "ping", Mode: 0o755, Xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
		imagetest.Entry{Name: "lib/libx.so", Body: "ELF"},
	)
	l3 := layer(t,
		imagetest.Entry{Name: "etc/passwd", Body: "root:x:0:0::/root:/bin/sh\nuser:x:1234:1234::/home/user:/bin/sh\n"},
		imagetest.Entry{Name: "etc/motd", Body: "hello\n"},
	)
	return makeImage(t, hostArch(), l1, l2, l3)
}

var agentFiles = []image.InjectFile{
	{Path: "/sbin/banger-agent", Mode: 0o755, Data: []byte("#!agent v2\n")},
	{Path: "/etc/banger/agent-version", Mode: 0o644, Data: []byte("2\n")},
}

// checkRichImage verifies the ext4 image made from richImage.
func checkRichImage(t *testing.T, b *image.Builder, img string) {
	t.Helper()
	_, tools := newBuilder(t)
	imagetest.Fsck(t, tools, img)
	assertAbsent(t, tools, img, "/etc/gone", "/etc/.wh.gone", "/opq/old", "/opq/sub", "/opq/.wh..wh..opq")
	if got := readFile(t, tools, img, "/opq/new"); got != "kept" {
		t.Errorf("/opq/new: got %q, want %q", got, "kept")
	}
	if got := readFile(t, tools, img, "/etc/passwd"); !strings.Contains(got, "user:x:1234") {
		t.Errorf("/etc/passwd: got %q, want the third layer's version", got)
	}
	for _, tc := range []struct {
		path     string
		typ      string
		mode     uint32
		uid, gid uint32
	}{
		{"/bin/su", "regular", 0o4755, 0, 0},
		{"/home/user", "directory", 0o750, 1234, 1234},
		{"/home/user/notes", "regular", 0o600, 1234, 1234},
		{"/dev/sda", "block special", 0o660, 0, 6},
		{"/dev/null", "character special", 0o666, 0, 0},
		{"/lib", "symlink", 0o777, 0, 0},
		{"/usr/lib/libx.so", "regular", 0o644, 0, 0},
		{"/sbin/banger-agent", "regular", 0o755, 0, 0},
	} {
		in := stat(t, tools, img, tc.path)
		if in.Type != tc.typ || in.Mode != tc.mode || in.UID != tc.uid || in.GID != tc.gid {
			t.Errorf("%s: got %s %04o %d:%d, want %s %04o %d:%d", tc.path, in.Type, in.Mode, in.UID, in.GID, tc.typ, tc.mode, tc.uid, tc.gid)
		}
	}
	su, again := stat(t, tools, img, "/bin/su"), stat(t, tools, img, "/bin/su-again")
	if su.Ino != again.Ino || su.Links != 2 {
		t.Errorf("hardlink: inodes %d and %d with %d links, want one inode with 2 links", su.Ino, again.Ino, su.Links)
	}
	if sda := stat(t, tools, img, "/dev/sda"); sda.Major != 8 || sda.Minor != 0 {
		t.Errorf("/dev/sda: got %d:%d, want 8:0", sda.Major, sda.Minor)
	}
	if null := stat(t, tools, img, "/dev/null"); null.Major != 1 || null.Minor != 3 {
		t.Errorf("/dev/null: got %d:%d, want 1:3", null.Major, null.Minor)
	}
	if got := stat(t, tools, img, "/lib").Target; got != "usr/lib" {
		t.Errorf("/lib: got target %q, want usr/lib", got)
	}
	if x := stat(t, tools, img, "/bin/ping").Xattrs; !strings.HasPrefix(x["security.capability"], "01 00 00 02") {
		t.Errorf("/bin/ping xattrs: got %v, want security.capability", x)
	}
	if got := readFile(t, tools, img, "/etc/banger/agent-version"); got != "2\n" {
		t.Errorf("agent version: got %q", got)
	}
	v, err := b.ReadFile(context.Background(), img, "/etc/banger/agent-version", 64)
	if err != nil || string(v) != "2\n" {
		t.Errorf("Builder.ReadFile: got %q, %v", v, err)
	}
}

func TestPullFromRegistry(t *testing.T) {
	b, _ := newBuilder(t)
	reg := newRegistry(t)
	img := richImage(t)
	ref := reg.push(t, "rich:v1", img)
	out := outDir(t, "rich.ext4")
	dst := filepath.Join(out, "rich.ext4")
	ctx := context.Background()

	var events []progress.Event
	res, err := b.Pull(ctx, ref, dst, image.Options{Inject: agentFiles, Progress: func(e progress.Event) { events = append(events, e) }})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if want := configDigest(t, img); res.ID != want {
		t.Errorf("ID: got %s, want the config digest %s", res.ID, want)
	}
	if res.Path != dst || res.Layers != 3 || res.Kind != image.KindRegistry || res.SizeBytes <= 0 {
		t.Errorf("result: got %+v", res)
	}
	if !strings.HasSuffix(res.Name, "/rich:v1") {
		t.Errorf("Name: got %q, want the canonical reference", res.Name)
	}
	checkRichImage(t, b, dst)
	checkEvents(t, events, 3)

	// The second time, resolving says it is the same image, without
	// downloading a single blob: the caller then skips Pull.
	before := reg.blobDownloads()
	if before == 0 {
		t.Fatal("the first pull downloaded no blobs")
	}
	again, err := b.Resolve(ctx, ref)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if again.ID != res.ID {
		t.Errorf("Resolve: got id %s, want %s", again.ID, res.ID)
	}
	if got := reg.blobDownloads(); got != before {
		t.Errorf("Resolve downloaded %d blobs, want 0", got-before)
	}
}

// checkEvents checks the shape of a pull's progress: resolve first, each
// layer from 0 to its total, a convert phase, done last.
func checkEvents(t *testing.T, events []progress.Event, layers int) {
	t.Helper()
	if len(events) < 2 || events[0].Phase != progress.PhaseResolve || events[len(events)-1].Phase != progress.PhaseDone {
		t.Fatalf("events: got %v, want resolve first and done last", events)
	}
	last := map[string]progress.Event{}
	converts := 0
	for _, e := range events {
		switch e.Phase {
		case progress.PhaseDownload:
			if p, ok := last[e.Layer]; ok && e.Current < p.Current {
				t.Errorf("layer %s went back from %d to %d", e.Layer, p.Current, e.Current)
			}
			last[e.Layer] = e
		case progress.PhaseConvert:
			converts++
		}
	}
	if len(last) != layers {
		t.Errorf("download events for %d layers, want %d", len(last), layers)
	}
	for l, e := range last {
		if e.Total <= 0 || e.Current != e.Total {
			t.Errorf("layer %s ended at %d of %d, want complete", l, e.Current, e.Total)
		}
	}
	if converts == 0 {
		t.Error("no convert events")
	}
}

func TestPullPicksHostPlatform(t *testing.T) {
	b, tools := newBuilder(t)
	reg := newRegistry(t)
	other := "arm64"
	if hostArch() == "arm64" {
		other = "amd64"
	}
	mine := makeImage(t, hostArch(), layer(t, imagetest.Entry{Name: "which", Body: hostArch()}))
	theirs := makeImage(t, other, layer(t, imagetest.Entry{Name: "which", Body: other}))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: theirs, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: other}}},
		mutate.IndexAddendum{Add: mine, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: hostArch()}}},
	)
	ref := reg.pushIndex(t, "multi:latest", idx)
	out := outDir(t, "multi.ext4")
	dst := filepath.Join(out, "multi.ext4")
	res, err := b.Pull(context.Background(), ref, dst, image.Options{})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if got := readFile(t, tools, dst, "/which"); got != hostArch() {
		t.Errorf("picked the %s image, want %s", got, hostArch())
	}
	if res.ID != configDigest(t, mine) || res.Platform != "linux/"+hostArch() {
		t.Errorf("got id %s platform %s, want %s linux/%s", res.ID, res.Platform, configDigest(t, mine), hostArch())
	}

	// An index without this platform names what it has.
	s390 := makeImage(t, "s390x", layer(t, imagetest.Entry{Name: "which", Body: "s390x"}))
	foreign := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: theirs, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: other}}},
		mutate.IndexAddendum{Add: s390, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}},
	)
	ref = reg.pushIndex(t, "foreign:latest", foreign)
	_, err = b.Pull(context.Background(), ref, filepath.Join(out, "foreign.ext4"), image.Options{})
	if !errors.Is(err, image.ErrPlatform) || !strings.Contains(err.Error(), "linux/"+other) || !strings.Contains(err.Error(), "linux/s390x") {
		t.Errorf("Pull of a foreign index: got %v, want ErrPlatform listing linux/%s and linux/s390x", err, other)
	}
	// So does a single image for another architecture.
	ref = reg.push(t, "single-foreign:latest", s390)
	if _, err := b.Pull(context.Background(), ref, filepath.Join(out, "s.ext4"), image.Options{}); !errors.Is(err, image.ErrPlatform) {
		t.Errorf("Pull of an s390x image: got %v, want ErrPlatform", err)
	}
}

func TestPullFromLayoutAndArchive(t *testing.T) {
	b, _ := newBuilder(t)
	img := richImage(t)
	want := configDigest(t, img)
	dir := t.TempDir()

	lay := filepath.Join(dir, "layout")
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	other := makeImage(t, hostArch(), layer(t, imagetest.Entry{Name: "x", Body: "other"}))
	if err := p.AppendImage(other, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v2"})); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "saved.tar")
	tag, err := name.NewTag("example.com/rich:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}

	legacy := filepath.Join(dir, "legacy.tar")
	writeLegacyArchive(t, legacy, img, "example.com/rich:v1")

	out := outDir(t, "layout.ext4", "archive.ext4", "archive2.ext4", "legacy.ext4")
	for _, tc := range []struct {
		ref, dst string
		kind     image.Kind
	}{
		{"oci:" + lay + ":v1", "layout.ext4", image.KindLayout},
		{archive, "archive.ext4", image.KindArchive},
		{"docker-archive:" + archive + ":example.com/rich:v1", "archive2.ext4", image.KindArchive},
		{legacy, "legacy.ext4", image.KindArchive},
	} {
		t.Run(tc.dst, func(t *testing.T) {
			dst := filepath.Join(out, tc.dst)
			res, err := b.Pull(context.Background(), tc.ref, dst, image.Options{Inject: agentFiles})
			if err != nil {
				t.Fatalf("Pull %s: %v", tc.ref, err)
			}
			if res.ID != want || res.Kind != tc.kind {
				t.Errorf("got id %s kind %s, want %s %s (the same image from any source has the same id)", res.ID, res.Kind, want, tc.kind)
			}
			// A docker archive's RepoTags name the image, unless a tag was picked
			// (then that tag is the name).
			if tc.kind == image.KindArchive {
				names := append([]string{res.Name}, res.Names...)
				if !slices.Contains(names, "example.com/rich:v1") {
					t.Errorf("archive image names %q, want its RepoTag example.com/rich:v1", names)
				}
			}
			checkRichImage(t, b, dst)
		})
	}
	// A layout holding two images needs a tag, and says which it has.
	if _, err := b.Resolve(context.Background(), lay); err == nil || !strings.Contains(err.Error(), "v2") {
		t.Errorf("Resolve of an ambiguous layout: got %v, want an error listing its tags", err)
	}
}

// writeLegacyArchive writes img as the classic `docker save` format does:
// uncompressed layer.tar files, the config, and manifest.json.
func writeLegacyArchive(t *testing.T, path string, img v1.Image, tag string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	add := func(name string, data []byte) {
		t.Helper()
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for i, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		p := fmt.Sprintf("layer%d/layer.tar", i)
		add(p, data)
		paths = append(paths, p)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	add("config.json", cfg)
	m, err := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{tag}, "Layers": paths}})
	if err != nil {
		t.Fatal(err)
	}
	add("manifest.json", m)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPullErrors checks that each failure is a clear error naming what
// failed, and leaves nothing behind.
func TestPullErrors(t *testing.T) {
	b, _ := newBuilder(t)
	reg := newRegistry(t)
	ctx := context.Background()

	good := makeImage(t, hostArch(),
		layer(t, imagetest.Entry{Name: "a", Body: strings.Repeat("a", 4096)}),
		layer(t, imagetest.Entry{Name: "b", Body: strings.Repeat("b", 4096)}))
	ref := reg.push(t, "corrupt:v1", good)
	ls, err := good.Layers()
	if err != nil {
		t.Fatal(err)
	}
	bad, err := ls[1].Digest()
	if err != nil {
		t.Fatal(err)
	}
	reg.setCorrupt(bad.String())

	notTar := filepath.Join(t.TempDir(), "notes.txt")
	writeFile(t, notTar, "just some text, not an image\n")

	for _, tc := range []struct {
		name    string
		ref     string
		want    error
		mention string
	}{
		{"unknown reference", reg.host + "/nope:latest", image.ErrNotFound, "nope"},
		{"unknown tag", reg.host + "/corrupt:v9", image.ErrNotFound, "corrupt:v9"},
		{"unreachable registry", "127.0.0.1:1/x:latest", image.ErrUnreachable, "127.0.0.1:1"},
		{"bad reference", "UPPER CASE", image.ErrBadReference, "UPPER CASE"},
		{"corrupt layer", ref, image.ErrCorruptLayer, bad.String()},
		{"not an archive", notTar, image.ErrNotImage, notTar},
		{"missing layout", "oci:/does/not/exist", nil, "/does/not/exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := outDir(t)
			_, err := b.Pull(ctx, tc.ref, filepath.Join(out, "x.ext4"), image.Options{})
			if err == nil {
				t.Fatalf("Pull %s: no error", tc.ref)
			}
			t.Logf("error: %v", err)
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Pull %s: got %v, want %v", tc.ref, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("Pull %s: error %q does not mention %q", tc.ref, err, tc.mention)
			}
		})
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPullDetectsTamperedLayer swaps a layer blob in an OCI layout (which
// nothing checks on read) for another valid layer: the content no longer
// matches the diff_id in the image config, and the pull fails naming it.
func TestPullDetectsTamperedLayer(t *testing.T) {
	b, _ := newBuilder(t)
	good := layer(t, imagetest.Entry{Name: "bin/tool", Body: "good"})
	img := makeImage(t, hostArch(), good)
	lay := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	digest, err := good.Digest()
	if err != nil {
		t.Fatal(err)
	}
	evil := layer(t, imagetest.Entry{Name: "bin/tool", Body: "evil", Mode: 0o4755})
	rc, err := evil.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lay, "blobs", "sha256", digest.Hex), data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := outDir(t)
	_, err = b.Pull(context.Background(), "oci:"+lay, filepath.Join(out, "x.ext4"), image.Options{})
	if !errors.Is(err, image.ErrCorruptLayer) || !strings.Contains(err.Error(), digest.String()) {
		t.Errorf("Pull of a tampered layout: got %v, want ErrCorruptLayer naming %s", err, digest)
	}
}
