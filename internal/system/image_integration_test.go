package system_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/testutil"
)

// TestImageCLI drives `banger image import|ls|inspect|rm` through the real daemon
// running as an unprivileged owner, which must read the user's directory and
// build the ext4 image without root.
func TestImageCLI(t *testing.T) {
	e := newEnv(t, testConfig)
	testutil.Binary(t, "banger-agent")
	if out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username); err != nil {
		t.Fatalf("system run: %v\n%s", err, out)
	}
	// A rootfs directory the owner can read.
	tree := filepath.Join(e.root, "rootfs-demo")
	if err := os.MkdirAll(filepath.Join(tree, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "etc", "os-release"), []byte("ID=demo\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := e.banger("image", "import", tree)
	if err != nil || !strings.Contains(out, "rootfs-demo") || !strings.Contains(out, "(new)") {
		t.Fatalf("image import: %v\n%s", err, out)
	}
	out, err = e.banger("image", "import", tree, "--name", "demo")
	if err != nil || !strings.Contains(out, "already present") {
		t.Fatalf("second import: %v, want 'already present'\n%s", err, out)
	}

	out, err = e.banger("image", "ls", "--json")
	if err != nil {
		t.Fatalf("image ls: %v\n%s", err, out)
	}
	var imgs []api.Image
	if err := json.Unmarshal([]byte(out), &imgs); err != nil || len(imgs) != 1 {
		t.Fatalf("image ls --json = %v, %s; want one image", err, out)
	}
	img := imgs[0]
	if img.Kind != "rootfs-dir" || len(img.Tags) != 2 || img.AgentVersion == "" {
		t.Errorf("image = %+v; want a rootfs-dir with two tags and an agent", img)
	}
	if st, err := os.Stat(img.Path); err != nil || st.Sys() == nil {
		t.Fatalf("image file: %v", err)
	} else if uid := fileUID(t, img.Path); uid != e.owner.Uid {
		t.Errorf("image file owned by uid %s, want the owner %s (bangerd runs unprivileged)", uid, e.owner.Uid)
	}

	if out, err := e.banger("image", "ls", "-q"); err != nil || strings.TrimSpace(out) != img.ID {
		t.Errorf("image ls -q = %q, %v; want %s", out, err, img.ID)
	}
	if out, err := e.banger("image", "inspect", "demo"); err != nil || !strings.Contains(out, img.ID) || !strings.Contains(out, "guest agent") {
		t.Errorf("image inspect demo: %v\n%s", err, out)
	}
	if out, err := e.banger("image", "inspect", "nosuch"); err == nil || !strings.Contains(out, "nosuch") {
		t.Errorf("inspect of an unknown image: err=%v, output:\n%s", err, out)
	}
	if out, err := e.banger("image", "import", "/nonexistent/rootfs.tar"); err == nil || !strings.Contains(out, "/nonexistent/rootfs.tar") {
		t.Errorf("import of a missing file: err=%v, output:\n%s", err, out)
	}

	if out, err := e.banger("image", "rm", "demo"); err != nil || !strings.Contains(out, "removed "+img.ID) {
		t.Fatalf("image rm: %v\n%s", err, out)
	}
	if _, err := os.Stat(img.Path); !os.IsNotExist(err) {
		t.Errorf("image file still there after rm")
	}
	if out, _ := e.banger("image", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("image ls after rm = %q, want nothing", out)
	}
}

func fileUID(t *testing.T, path string) string {
	t.Helper()
	out := testutil.Run(t, "stat", "-c", "%u", path)
	return strings.TrimSpace(out)
}

// TestKernelCLI: the default kernel appears on first use is covered by the VM tests;
// here `banger kernel import|ls|inspect|rm` on the host's /boot kernel through the
// unprivileged daemon, and a bad file refused with nothing left.
func TestKernelCLI(t *testing.T) {
	hosts, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(hosts) == 0 {
		t.Skip("no /boot kernel (scripts/deps.sh installs linux-image-cloud-amd64)")
	}
	e := newEnv(t, testConfig)
	if out, err := e.banger("system", "run", "-d", "--owner", e.owner.Username); err != nil {
		t.Fatalf("system run: %v\n%s", err, out)
	}
	// The daemon runs as the owner: give it a readable copy.
	kpath := filepath.Join(e.root, "vmlinuz-test")
	testutil.Run(t, "cp", hosts[0], kpath)
	testutil.Run(t, "chmod", "0644", kpath)

	out, err := e.banger("kernel", "import", kpath, "--name", "mykernel")
	if err != nil || !strings.Contains(out, "mykernel") {
		t.Fatalf("kernel import: %v\n%s", err, out)
	}
	if out, err := e.banger("kernel", "ls"); err != nil || !strings.Contains(out, "mykernel") {
		t.Errorf("kernel ls: %v\n%s", err, out)
	}
	out, err = e.banger("kernel", "inspect", "mykernel")
	if err != nil || !strings.Contains(out, "firecracker") || !strings.Contains(out, "qemu") {
		t.Errorf("kernel inspect: %v\n%s", err, out)
	}
	bogus := filepath.Join(e.root, "notakernel")
	if err := os.WriteFile(bogus, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := e.banger("kernel", "import", bogus); err == nil || !strings.Contains(out, "not a Linux kernel") {
		t.Errorf("import of a text file: err=%v, want 'not a Linux kernel'\n%s", err, out)
	}
	if out, err := e.banger("kernel", "rm", "mykernel"); err != nil || !strings.Contains(out, "removed mykernel") {
		t.Errorf("kernel rm: %v\n%s", err, out)
	}
	ents, _ := os.ReadDir(filepath.Join(e.root, "state", "kernels"))
	for _, ent := range ents {
		t.Errorf("left in the kernels dir after rm: %s", ent.Name())
	}
}
