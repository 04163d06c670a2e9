package disktest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"banger/internal/blockdev"
	"banger/internal/disk"

	"golang.org/x/sys/unix"
)

// HelloPath and HelloText are a file every base made by MakeBase holds.
const (
	HelloPath = "/hello.txt"
	HelloText = "hello from the base image\n"
)

// RequireTools skips tb unless every tool is installed.
func RequireTools(tb testing.TB, tools ...string) {
	tb.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("needs %s (scripts/deps.sh installs it)", tool)
		}
	}
}

// Cmd runs a command and returns its combined output, failing tb with that output
// if it fails.
func Cmd(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// MakeBase makes an ext4 image of size bytes at path with `mkfs.ext4 -d` from a small
// tree: HelloPath, a few text files and dataBytes of random data (a sparse image with
// some real content, like a pulled image).
func MakeBase(tb testing.TB, path string, size, dataBytes int64) {
	tb.Helper()
	tree := tb.TempDir()
	files := map[string]string{
		HelloPath:         HelloText,
		"/etc/hostname":   "base\n",
		"/etc/os-release": "ID=banger-test\n",
	}
	for p, content := range files {
		full := filepath.Join(tree, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	if dataBytes > 0 {
		if err := os.MkdirAll(filepath.Join(tree, "data"), 0o755); err != nil {
			tb.Fatal(err)
		}
		const per = 16 << 20
		for i := int64(0); i*per < dataBytes; i++ {
			f, err := os.Create(filepath.Join(tree, "data", fmt.Sprintf("blob%03d", i)))
			if err != nil {
				tb.Fatal(err)
			}
			_, err = io.CopyN(f, rand.Reader, min(per, dataBytes-i*per))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				tb.Fatal(err)
			}
		}
	}
	Cmd(tb, "mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "bangerbase", "-d", tree, path, strconv.FormatInt(size/1024, 10)+"k")
}

// Checksum returns the SHA-256 of a file's content.
func Checksum(tb testing.TB, path string) string {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// RawView returns a raw image of d that e2fsprogs can read: d.Path itself for raw
// disks, a converted copy for qcow2 (the overlay and its backing file, flattened).
func RawView(tb testing.TB, d disk.Disk) string {
	tb.Helper()
	if d.Format == disk.FormatRaw {
		return d.Path
	}
	out := filepath.Join(tb.TempDir(), "flat.img")
	Cmd(tb, "qemu-img", "convert", "-f", string(d.Format), "-O", "raw", d.Path, out)
	return out
}

// Debugfs runs one debugfs request read-only on a raw image and returns its output.
// debugfs exits 0 even when a request fails, so callers check the output.
func Debugfs(tb testing.TB, image, request string) string {
	tb.Helper()
	out, err := exec.Command("debugfs", "-R", request, image).Output() // stderr: the banner
	if err != nil {
		tb.Fatalf("debugfs -R %q %s: %v", request, image, err)
	}
	return string(out)
}

// ReadFile returns a file's content from the ext4 filesystem of d.
func ReadFile(tb testing.TB, d disk.Disk, path string) string {
	tb.Helper()
	return Debugfs(tb, RawView(tb, d), "cat "+path)
}

// WriteRaw changes the filesystem of a raw image with `debugfs -w`: it replaces
// HelloPath's content (the base's blocks are freed and reallocated, so blocks shared
// with the base get written) and adds path with content.
func WriteRaw(tb testing.TB, image, path, content string) {
	tb.Helper()
	dir := tb.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	cmds := filepath.Join(dir, "cmds")
	script := fmt.Sprintf("rm %s\nwrite %s %s\nwrite %s %s\n", HelloPath, src, HelloPath, src, path)
	if err := os.WriteFile(cmds, []byte(script), 0o644); err != nil {
		tb.Fatal(err)
	}
	Cmd(tb, "debugfs", "-w", "-f", cmds, image)
}

// BlockOf returns the byte offset of the first data block of path in a raw ext4
// image (debugfs bmap), for block-level writes.
func BlockOf(tb testing.TB, image, path string) int64 {
	tb.Helper()
	out := strings.TrimSpace(Debugfs(tb, image, "bmap "+path+" 0"))
	n, err := strconv.ParseInt(out, 10, 64)
	if err != nil || n <= 0 {
		tb.Fatalf("debugfs bmap %s in %s: %q", path, image, out)
	}
	bs := fsField(tb, image, "Block size")
	return n * bs
}

// fsField reads a numeric field of `dumpe2fs -h`.
func fsField(tb testing.TB, image, field string) int64 {
	tb.Helper()
	out := Cmd(tb, "dumpe2fs", "-h", image)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(field) + `:\s+(\d+)`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		tb.Fatalf("dumpe2fs -h %s: no %q in\n%s", image, field, out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// FSBytes is the size of the ext4 filesystem in a raw image (block count × block size).
func FSBytes(tb testing.TB, image string) int64 {
	tb.Helper()
	return fsField(tb, image, "Block count") * fsField(tb, image, "Block size")
}

// Fsck fails tb unless `e2fsck -fn` finds the filesystem clean.
func Fsck(tb testing.TB, image string) {
	tb.Helper()
	if out, err := exec.Command("e2fsck", "-fn", image).CombinedOutput(); err != nil {
		tb.Errorf("e2fsck -fn %s: %v\n%s", image, err, out)
	}
}

// VirtualSize is a qcow2 image's size as `qemu-img info` reports it.
func VirtualSize(tb testing.TB, path string) int64 {
	tb.Helper()
	var info struct {
		VirtualSize     int64  `json:"virtual-size"`
		Format          string `json:"format"`
		BackingFilename string `json:"backing-filename"`
	}
	if err := json.Unmarshal([]byte(Cmd(tb, "qemu-img", "info", "--output=json", "-U", path)), &info); err != nil {
		tb.Fatal(err)
	}
	return info.VirtualSize
}

// Allocated is the space a file takes on disk (st_blocks), which for a sparse file is
// far below its size.
func Allocated(tb testing.TB, path string) int64 {
	tb.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		tb.Fatal(err)
	}
	return st.Blocks * 512
}

// Leftovers lists what a disk for vmID in dir left behind: entries in dir, loop
// devices backed by files under dir or any of loopDirs, and (where device-mapper
// exists) device-mapper devices whose name contains vmID.
func Leftovers(tb testing.TB, dir, vmID string, loopDirs ...string) []string {
	tb.Helper()
	var left []string
	_ = filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil && p != dir {
			left = append(left, "file "+p)
		}
		return nil
	})
	if os.Geteuid() != 0 {
		return left
	}
	loops, err := blockdev.LoopList(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	for _, d := range append([]string{dir}, loopDirs...) {
		for _, l := range blockdev.LoopsUnder(loops, d) {
			left = append(left, "loop "+l.Device+" on "+l.BackingFile)
		}
	}
	if vmID != "" && blockdev.DMAvailable(context.Background()) == nil {
		names, err := blockdev.DMList(context.Background())
		if err != nil {
			tb.Fatal(err)
		}
		for _, n := range names {
			if strings.Contains(n, vmID) {
				left = append(left, "device-mapper "+n)
			}
		}
	}
	return left
}

// SetImmutable sets or clears a directory's immutable attribute (chattr ±i), which
// stops even root from creating entries in it.
func SetImmutable(tb testing.TB, dir string, on bool) {
	tb.Helper()
	flag := "-i"
	if on {
		flag = "+i"
	}
	Cmd(tb, "chattr", flag, dir)
}
