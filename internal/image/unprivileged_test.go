package image_test

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"banger/internal/image"
	"banger/internal/image/imagetest"
)

const unprivEnv = "BANGER_IMAGE_UNPRIVILEGED_DIR"

// nobody is the unprivileged user the conversion runs as.
const nobody = 65534

// TestUnprivilegedConversion proves that a conversion needs no privilege:
// as root, it runs this test binary again as nobody to import an archive
// full of root-owned, setuid, device and xattr entries, and checks the
// image. (Run as an ordinary user, every test in this package proves the
// same.)
func TestUnprivilegedConversion(t *testing.T) {
	if os.Getenv(unprivEnv) != "" {
		t.Skip("inside the unprivileged helper")
	}
	if os.Geteuid() != 0 {
		t.Skip("already unprivileged: the other tests run the conversion as this user")
	}
	tools := imagetest.Tools(t)
	work, err := os.MkdirTemp("", "banger-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(work, "image.test")
	copyExecutable(t, exe, bin)
	entries := []imagetest.Entry{
		{Name: "bin/su", Body: "su", Mode: 0o4755},
		{Name: "root/", Type: tar.TypeDir, Mode: 0o700},
		{Name: "root/.profile", Body: "x", Mode: 0o600},
		{Name: "home/u/f", Body: "x", UID: 1234, GID: 1234},
		{Name: "dev/sda", Type: tar.TypeBlock, Major: 8, Minor: 0, Mode: 0o660},
		{Name: "bin/ping", Body: "p", Mode: 0o755, Xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
	}
	if err := os.WriteFile(filepath.Join(work, "in.tar"), imagetest.Tar(t, entries...), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{work, bin, filepath.Join(work, "in.tar")} {
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "-test.run=^TestUnprivilegedHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), unprivEnv+"="+work, "HOME="+work)
	cmd.Dir = work
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("conversion as nobody: %v\n%s", err, out)
	}
	img := filepath.Join(work, "out.ext4")
	imagetest.Fsck(t, tools, img)
	for _, tc := range []struct {
		path     string
		mode     uint32
		uid, gid uint32
	}{
		{"/bin/su", 0o4755, 0, 0},
		{"/root", 0o700, 0, 0},
		{"/root/.profile", 0o600, 0, 0},
		{"/home/u/f", 0o644, 1234, 1234},
		{"/dev/sda", 0o660, 0, 0},
	} {
		in := stat(t, tools, img, tc.path)
		if in.Mode != tc.mode || in.UID != tc.uid || in.GID != tc.gid {
			t.Errorf("%s: got %04o %d:%d, want %04o %d:%d", tc.path, in.Mode, in.UID, in.GID, tc.mode, tc.uid, tc.gid)
		}
	}
	if in := stat(t, tools, img, "/"); in.UID != 0 {
		t.Errorf("/: got uid %d, want 0", in.UID)
	}
	if x := stat(t, tools, img, "/bin/ping").Xattrs; x["security.capability"] == "" {
		t.Errorf("/bin/ping: got xattrs %v, want security.capability", x)
	}
	if in := stat(t, tools, img, "/dev/sda"); in.Type != "block special" || in.Major != 8 {
		t.Errorf("/dev/sda: got %s %d:%d", in.Type, in.Major, in.Minor)
	}
}

// TestUnprivilegedHelper is the conversion TestUnprivilegedConversion runs
// as nobody.
func TestUnprivilegedHelper(t *testing.T) {
	dir := os.Getenv(unprivEnv)
	if dir == "" {
		t.Skip("run by TestUnprivilegedConversion")
	}
	if os.Geteuid() == 0 {
		t.Fatal("the helper must not run as root")
	}
	b, err := image.New(image.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Import(context.Background(), filepath.Join(dir, "in.tar"), filepath.Join(dir, "out.ext4"), image.Options{}); err != nil {
		t.Fatalf("Import as uid %d: %v", os.Geteuid(), err)
	}
}

func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
