package imageservice_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/image"
	"banger/internal/imageservice"
	"banger/internal/store"
)

type fixture struct {
	st      *store.Store
	builder *image.Builder
	dir     string // images dir
	tree    string // a rootfs directory to import
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	b, err := image.New(image.Config{})
	if err != nil {
		t.Skipf("image tools missing (install e2fsprogs): %v", err)
	}
	ctx := context.Background()
	root := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(root, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tree := filepath.Join(root, "tree")
	for p, body := range map[string]string{"etc/os-release": "ID=test\n", "bin/hello": "#!/bin/sh\necho hi\n"} {
		if err := os.MkdirAll(filepath.Join(tree, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tree, p), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &fixture{st: st, builder: b, dir: filepath.Join(root, "images"), tree: tree}
}

func (f *fixture) agent(t *testing.T, content string) imageservice.Agent {
	t.Helper()
	p := filepath.Join(t.TempDir(), "banger-agent")
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	a, err := imageservice.AgentFromFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (f *fixture) service(t *testing.T, a imageservice.Agent) *imageservice.Service {
	t.Helper()
	s, err := imageservice.New(imageservice.Deps{Store: f.st, Builder: f.builder, ImagesDir: f.dir, Agent: a})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) files(t *testing.T) []string {
	t.Helper()
	ents, _ := os.ReadDir(f.dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func (f *fixture) readAgent(t *testing.T, img store.Image) string {
	t.Helper()
	b, err := f.builder.ReadFile(context.Background(), img.Path, imageservice.AgentBinaryPath, 1<<20)
	if err != nil {
		t.Fatalf("read agent from %s: %v", img.Path, err)
	}
	return string(b)
}

func TestImportReuseReinjectRemove(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	a1 := f.agent(t, "agent-v1")
	svc := f.service(t, a1)

	res, err := svc.Import(ctx, f.tree, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	img := res.Image
	if res.Reused || img.Kind != string(image.KindRootfsDir) || !slices.Equal(img.Tags, []string{"tree"}) || img.AgentVersion != a1.Version {
		t.Fatalf("first import = %+v (reused %v); want a new rootfs-dir image tagged tree with agent %s", img, res.Reused, a1.Version)
	}
	if got := f.readAgent(t, img); got != "agent-v1" {
		t.Errorf("agent in image = %q, want the injected binary", got)
	}
	ver, err := f.builder.ReadFile(ctx, img.Path, imageservice.AgentVersionPath, 1024)
	if err != nil || strings.TrimSpace(string(ver)) != a1.Version {
		t.Errorf("agent version stamp = %q, %v; want %s", ver, err, a1.Version)
	}

	// The same content again: nothing converted, one more tag.
	again, err := svc.Import(ctx, f.tree, "mine", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Reused || again.Image.Path != img.Path || !slices.Contains(again.Image.Tags, "mine") {
		t.Errorf("second import = %+v (reused %v); want the same file, reused, tagged mine", again.Image, again.Reused)
	}
	if got := f.files(t); len(got) != 1 {
		t.Errorf("images dir = %v, want one file", got)
	}

	// A newer agent: re-injected into a new file, the old one removed (no VM uses it).
	a2 := f.agent(t, "agent-v2")
	svc2 := f.service(t, a2)
	up, err := svc2.EnsureAgent(ctx, "tree")
	if err != nil {
		t.Fatal(err)
	}
	if up.AgentVersion != a2.Version || up.Path == img.Path || f.readAgent(t, up) != "agent-v2" {
		t.Errorf("after EnsureAgent: %+v; want agent %s in a new file", up, a2.Version)
	}
	if _, err := os.Stat(img.Path); !os.IsNotExist(err) {
		t.Errorf("old image file %s still there", img.Path)
	}

	// A VM made from it blocks rm, naming the VM; --force untags and keeps the file.
	if err := f.st.PutKernel(ctx, store.Kernel{ID: "k", Name: "k", Path: "/k"}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.CreateVM(ctx, store.VM{ID: "abcd0001", Name: "web", ImageID: up.ID, KernelID: "k", State: store.VMCreated, CPUs: 1, MemoryMiB: 128, Driver: "qemu"}); err != nil {
		t.Fatal(err)
	}
	_, err = svc2.Remove(ctx, "tree", false)
	if !errors.Is(err, imageservice.ErrInUse) || !strings.Contains(err.Error(), "web") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("rm of an image in use: %v; want ErrInUse naming web and --force", err)
	}
	rr, err := svc2.Remove(ctx, "tree", true)
	if err != nil || rr.Removed || !slices.Equal(rr.KeptFor, []string{"web"}) || len(rr.Untagged) != 2 {
		t.Fatalf("rm --force = %+v, %v; want untagged, kept for web", rr, err)
	}
	if _, err := os.Stat(up.Path); err != nil {
		t.Errorf("image file removed while VM web uses it: %v", err)
	}
	if err := f.st.DeleteVM(ctx, "abcd0001"); err != nil {
		t.Fatal(err)
	}
	rr, err = svc2.Remove(ctx, up.ID, false)
	if err != nil || !rr.Removed {
		t.Fatalf("rm after the VM is gone = %+v, %v", rr, err)
	}
	if got := f.files(t); len(got) != 0 {
		t.Errorf("images dir after rm = %v, want empty", got)
	}
}

func TestImportFailuresLeaveNothing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	tests := []struct {
		name  string
		agent imageservice.Agent
		path  string
		want  string
	}{
		{"no agent", imageservice.Agent{}, f.tree, "banger-agent not found"},
		{"missing path", f.agent(t, "a"), "/nonexistent/rootfs.tar", "/nonexistent/rootfs.tar"},
		{"relative path", f.agent(t, "a"), "rootfs.tar", "must be absolute"},
		{"not an image", f.agent(t, "a"), "/etc/hostname", "hostname"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.service(t, tt.agent).Import(ctx, tt.path, "", nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Import(%s) = %v, want an error mentioning %q", tt.path, err, tt.want)
			}
			if got := f.files(t); len(got) != 0 {
				t.Errorf("left in images dir: %v", got)
			}
			if imgs, _ := f.st.ListImages(ctx); len(imgs) != 0 {
				t.Errorf("left in the store: %+v", imgs)
			}
		})
	}
}

func TestKernelsImportDefaultRemove(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	hosts, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(hosts) == 0 {
		t.Skip("no /boot kernel on this machine (scripts/deps.sh installs linux-image-cloud-amd64)")
	}
	dir := filepath.Join(t.TempDir(), "kernels")
	initBin := filepath.Join(t.TempDir(), "banger-init")
	if out, err := exec.Command("go", "build", "-o", initBin, "banger/cmd/banger-init").CombinedOutput(); err != nil {
		t.Fatalf("build banger-init: %v\n%s", err, out)
	}
	ks, err := imageservice.NewKernels(imageservice.KernelDeps{Store: f.st, KernelsDir: dir, InitBinary: initBin})
	if err != nil {
		t.Fatal(err)
	}

	def, err := ks.Resolve(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(def.Name, "host-") || def.InitrdPath == "" || def.Version == "" {
		t.Errorf("default kernel = %+v; want host-<release> with banger's initramfs", def)
	}
	if again, err := ks.Resolve(ctx, ""); err != nil || again.ID != def.ID {
		t.Errorf("second Resolve(\"\") = %v, %v; want the same kernel %s", again.ID, err, def.ID)
	}
	_, ready, err := ks.Inspect(ctx, def.Name)
	// The host kernel boots under QEMU with banger's initramfs (the e2e tests do it).
	// Firecracker needs virtio built in: a verdict either way, and a refusal names
	// what is missing (the Debian cloud kernel has virtio as modules).
	if err != nil || !strings.Contains(ready.QEMU, "qemu: can boot this kernel") {
		t.Errorf("inspect QEMU readiness = %q, %v; want it bootable", ready.QEMU, err)
	}
	fc := ready.Firecracker
	switch {
	case strings.HasPrefix(fc, "firecracker: can boot this kernel"):
	case strings.HasPrefix(fc, "firecracker: cannot boot this kernel\n  "):
	default:
		t.Errorf("inspect Firecracker readiness = %q; want a verdict, with what is missing when it cannot", fc)
	}

	// The same file imported by hand is the same kernel (content-addressed), and a
	// text file is refused with nothing left behind.
	if _, err := ks.Import(ctx, "/etc/hostname", "", "bogus"); err == nil || !strings.Contains(err.Error(), "not a Linux kernel") {
		t.Errorf("import of a text file: %v; want 'not a Linux kernel'", err)
	}
	if _, err := ks.Resolve(ctx, "nosuch"); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "banger kernel ls") {
		t.Errorf("Resolve(nosuch) = %v; want not found with a hint", err)
	}

	// In use: refused, naming the VM; then removed with its files.
	if err := f.st.PutImage(ctx, store.Image{ID: "sha256:" + strings.Repeat("b", 64), Path: "/i"}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.CreateVM(ctx, store.VM{ID: "abcd0002", Name: "k-user", ImageID: "sha256:" + strings.Repeat("b", 64), KernelID: def.ID, State: store.VMCreated, CPUs: 1, MemoryMiB: 128, Driver: "qemu"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Remove(ctx, def.ID); !errors.Is(err, store.ErrInUse) || !strings.Contains(err.Error(), "k-user") {
		t.Errorf("rm of a kernel in use: %v; want ErrInUse naming k-user", err)
	}
	if err := f.st.DeleteVM(ctx, "abcd0002"); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Remove(ctx, def.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(def.Path); !os.IsNotExist(err) {
		t.Errorf("kernel file %s left after rm", def.Path)
	}
}
