package kernel

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"banger/internal/image/oci"
)

type tarEntry struct {
	name, link string
	typ        byte
	body       []byte
}

func tarLayer(t *testing.T, entries ...tarEntry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Unix(1_600_000_000, 0)}
		if e.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testRegistry serves an in-process registry on 127.0.0.1 and returns its host:port.
func testRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func push(t *testing.T, ref string, layers ...v1.Layer) {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: oci.HostPlatform().Architecture})
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func TestPull(t *testing.T) {
	host := testRegistry(t)
	oldK := craftBzImage(t, craftVmlinux(t, vmlinuxSpec{banner: "5.0.0-old (x) #1"}), "5.0.0-old (x) #1")
	newK := craftBzImage(t, craftVmlinux(t, vmlinuxSpec{banner: "6.9.0-x (x) #1", pvhEntry: 0x1000000}), "6.9.0-x (x) #1")
	initrd := gz(cpioNewc("init", "#!/bin/sh\n"))
	config := []byte("CONFIG_VIRTIO_BLK=y\nCONFIG_EXT4_FS=y\n")

	base := tarLayer(t,
		tarEntry{name: "boot/", typ: tar.TypeDir},
		tarEntry{name: "boot/vmlinuz-5.0.0-old", body: oldK},
		tarEntry{name: "boot/initrd.img-5.0.0-old", body: initrd},
		tarEntry{name: "etc/hostname", body: []byte("kernel-image\n")},
	)
	top := tarLayer(t,
		// The old kernel is deleted by the upper layer.
		tarEntry{name: "boot/.wh.vmlinuz-5.0.0-old"},
		tarEntry{name: "boot/.wh.initrd.img-5.0.0-old"},
		tarEntry{name: "./boot/vmlinuz-6.9.0-x", body: newK},
		tarEntry{name: "boot/vmlinuz", typ: tar.TypeSymlink, link: "vmlinuz-6.9.0-x"},
		tarEntry{name: "boot/initrd.img-6.9.0-x", body: initrd},
		tarEntry{name: "boot/config-6.9.0-x", body: config},
		// Links that lead out of /boot are never followed.
		tarEntry{name: "boot/vmlinux-escape", typ: tar.TypeSymlink, link: "../../etc/hostname"},
		tarEntry{name: "boot/vmlinux-abs", typ: tar.TypeSymlink, link: "/etc/hostname"},
		tarEntry{name: "boot/../etc/vmlinuz-outside", body: []byte("not in boot")},
		tarEntry{name: "boot/sub/vmlinuz-nested", body: []byte("not a direct entry")},
	)
	ref := host + "/kernels/debian:6.9"
	push(t, ref, base, top)

	dir := t.TempDir()
	ctx := context.Background()
	k, err := Pull(ctx, PullRequest{Ref: ref, Dir: dir})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if k.Info.Release != "6.9.0-x" || !k.Info.PVH || k.Name != "6.9.0-x" {
		t.Errorf("pulled release %q PVH %v name %q, want 6.9.0-x, true, 6.9.0-x", k.Info.Release, k.Info.PVH, k.Name)
	}
	if got, _ := os.ReadFile(k.Path); !bytes.Equal(got, newK) {
		t.Errorf("stored kernel is not /boot/vmlinuz-6.9.0-x of the top layer")
	}
	if got, _ := os.ReadFile(k.InitrdPath); !bytes.Equal(got, initrd) {
		t.Errorf("stored initrd is not /boot/initrd.img-6.9.0-x")
	}
	if !strings.HasSuffix(k.ConfigSource, ":/boot/config-6.9.0-x") || !strings.Contains(k.Source, ref+"@sha256:") {
		t.Errorf("config source %q, source %q: want the image's config and the ref with its digest", k.ConfigSource, k.Source)
	}
	if cfg, err := k.Config(); err != nil || cfg["CONFIG_VIRTIO_BLK"] != "y" {
		t.Errorf("recorded config %v, %v", cfg, err)
	}
	again, err := Pull(ctx, PullRequest{Ref: ref, Dir: dir, Name: "mine"})
	if err != nil || !again.Existing || again.ID != k.ID || again.Name != "mine" {
		t.Errorf("second pull: %+v, %v; want the existing kernel %s named mine", again, err, k.ID)
	}
	if got := dirEntries(t, dir); len(got) != 1 {
		t.Errorf("kernels dir holds %v, want one kernel and no staging leftovers", got)
	}
}

func TestPullErrors(t *testing.T) {
	host := testRegistry(t)
	k := craftBzImage(t, craftVmlinux(t, vmlinuxSpec{banner: "6.9.0-a (x) #1"}), "6.9.0-a (x) #1")
	push(t, host+"/kernels/none:1", tarLayer(t, tarEntry{name: "etc/os-release", body: []byte("ID=x\n")}))
	push(t, host+"/kernels/two:1", tarLayer(t,
		tarEntry{name: "boot/vmlinuz-6.9.0-a", body: k},
		tarEntry{name: "boot/vmlinuz-6.9.0-b", body: append(bytes.Clone(k), 0)},
	))
	push(t, host+"/kernels/fake:1", tarLayer(t, tarEntry{name: "boot/vmlinuz-1", body: []byte("#!/bin/sh\necho not a kernel\n")}))
	push(t, host+"/kernels/wiped:1",
		tarLayer(t, tarEntry{name: "boot/vmlinuz-6.9.0-a", body: k}),
		tarLayer(t, tarEntry{name: "boot/.wh..wh..opq"}))

	tests := []struct {
		ref, kernelFile, want string
		is                    error
	}{
		{ref: host + "/kernels/absent:1", want: "not found", is: oci.ErrNotFound},
		{ref: host + "/kernels/none:1", want: "no kernel in /boot", is: ErrNotKernel},
		{ref: host + "/kernels/wiped:1", want: "no kernel in /boot", is: ErrNotKernel},
		{ref: host + "/kernels/two:1", want: "several kernels (vmlinuz-6.9.0-a, vmlinuz-6.9.0-b)"},
		{ref: host + "/kernels/two:1", kernelFile: "vmlinuz-nope", want: "no /boot/vmlinuz-nope"},
		{ref: host + "/kernels/fake:1", want: "fake:1:/boot/vmlinuz-1 is not a Linux kernel", is: ErrNotKernel},
		{ref: "127.0.0.1:1/kernels/x:1", want: "unreachable", is: oci.ErrUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.ref+tt.kernelFile, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Pull(context.Background(), PullRequest{Ref: tt.ref, KernelFile: tt.kernelFile, Dir: dir, Options: oci.Options{Retries: -1}})
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Errorf("got %v, want an error saying %q (is %v)", err, tt.want, tt.is)
			}
			if got := dirEntries(t, dir); len(got) != 0 {
				t.Errorf("kernels dir holds %v after a failed pull", got)
			}
		})
	}
	// Choosing one of several works.
	got, err := Pull(context.Background(), PullRequest{Ref: host + "/kernels/two:1", KernelFile: "vmlinuz-6.9.0-a", Dir: t.TempDir()})
	if err != nil || got.Info.Release != "6.9.0-a" {
		t.Errorf("pull with a kernel file: %+v, %v", got.Info, err)
	}
}
