package ext4

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// superblock magic: the 16-bit value 0xEF53 at byte 1080 of the device.
const (
	magicOffset = 1024 + 56
	magicLo     = 0x53
	magicHi     = 0xEF
)

// IsExt4 reports whether the file at p starts with an ext2/3/4 superblock.
// It reads two bytes; Check does the real validation.
func IsExt4(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [2]byte
	if _, err := f.ReadAt(b[:], magicOffset); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, err
	}
	return b[0] == magicLo && b[1] == magicHi, nil
}

// Check runs `e2fsck -fn` on the image: a full, read-only check. An image
// that is not ext4 is ErrNotExt4; one with errors is ErrCorrupt, with
// e2fsck's findings in the message.
func Check(ctx context.Context, tools Tools, image string) error {
	out, errOut, err := run(ctx, nil, tools.E2fsck, "-fn", image)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	msg := strings.TrimSpace(dropBanner(string(errOut)) + "\n" + tail(string(out), 3000))
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode()&8 != 0 &&
		(strings.Contains(msg, "Bad magic number") || strings.Contains(msg, "superblock") || strings.Contains(msg, "Superblock")) {
		return fmt.Errorf("%s: %w: %s", image, ErrNotExt4, firstLines(dropBanner(string(errOut)), 2))
	}
	if errors.As(err, &exit) && exit.ExitCode()&4 != 0 {
		return fmt.Errorf("%s: %w: e2fsck -fn reports: %s", image, ErrCorrupt, firstLines(msg, 20))
	}
	return fmt.Errorf("check %s: %w", image, err)
}

// dropBanner removes the version line e2fsprogs tools print first.
func dropBanner(s string) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if strings.HasPrefix(l, "e2fsck 1.") || strings.HasPrefix(l, "debugfs 1.") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "\n")
}

// Inode is what `debugfs stat` shows of one path in an image.
type Inode struct {
	Ino    uint64
	Type   string // debugfs's words: regular, directory, symlink, "character special", "block special", FIFO
	Mode   uint32 // permission bits with setuid, setgid and sticky
	UID    uint32
	GID    uint32
	Links  int
	Size   int64
	Blocks int64  // 512-byte sectors allocated (debugfs's Blockcount)
	Major  uint32 // devices
	Minor  uint32
	Target string            // fast symlinks (targets under 60 bytes)
	Xattrs map[string]string // names to values as debugfs prints them: text with C escapes, or hex bytes
}

var (
	reInode  = regexp.MustCompile(`Inode:\s+(\d+)\s+Type:\s+(.+?)\s+Mode:\s+([0-7]+)`)
	reUser   = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`)
	reSize   = regexp.MustCompile(`\bSize:\s+(\d+)`)
	reLinks  = regexp.MustCompile(`Links:\s+(\d+)`)
	reBlocks = regexp.MustCompile(`Blockcount:\s+(\d+)`)
	reDevice = regexp.MustCompile(`Device major/minor number:\s+(\d+):(\d+)`)
	reFast   = regexp.MustCompile(`Fast link dest:\s+"(.*)"`)
	reXattr  = regexp.MustCompile(`^\s+(\S+) \(\d+\)(?: = (.*))?$`)
)

// Stat returns the inode at path p in the image (not following a final
// symlink). A missing path is os.ErrNotExist.
func Stat(ctx context.Context, tools Tools, image, p string) (Inode, error) {
	out, err := query(ctx, tools, image, "stat", p)
	if err != nil {
		return Inode{}, err
	}
	text := string(out)
	var in Inode
	m := reInode.FindStringSubmatch(text)
	if m == nil {
		return Inode{}, fmt.Errorf("debugfs stat %s: unexpected output: %.200s", p, text)
	}
	in.Ino, _ = strconv.ParseUint(m[1], 10, 64)
	in.Type = m[2]
	mode, _ := strconv.ParseUint(m[3], 8, 32)
	in.Mode = uint32(mode)
	if m := reUser.FindStringSubmatch(text); m != nil {
		u, _ := strconv.ParseUint(m[1], 10, 32)
		g, _ := strconv.ParseUint(m[2], 10, 32)
		in.UID, in.GID = uint32(u), uint32(g)
	}
	if m := reSize.FindStringSubmatch(text); m != nil {
		in.Size, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reLinks.FindStringSubmatch(text); m != nil {
		in.Links, _ = strconv.Atoi(m[1])
	}
	if m := reBlocks.FindStringSubmatch(text); m != nil {
		in.Blocks, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reDevice.FindStringSubmatch(text); m != nil {
		maj, _ := strconv.ParseUint(m[1], 10, 32)
		min, _ := strconv.ParseUint(m[2], 10, 32)
		in.Major, in.Minor = uint32(maj), uint32(min)
	}
	if m := reFast.FindStringSubmatch(text); m != nil {
		in.Target = m[1]
	}
	if i := strings.Index(text, "Extended attributes:\n"); i >= 0 {
		in.Xattrs = map[string]string{}
		for _, l := range strings.Split(text[i+len("Extended attributes:\n"):], "\n") {
			m := reXattr.FindStringSubmatch(l)
			if m == nil {
				break
			}
			v := strings.TrimSpace(m[2])
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			in.Xattrs[m[1]] = v
		}
	}
	return in, nil
}

// ReadFile returns the content of the regular file at p in the image, at
// most limit bytes. The lead uses it to read back what was injected (e.g. an
// agent version file) without mounting the image.
func ReadFile(ctx context.Context, tools Tools, image, p string, limit int64) ([]byte, error) {
	in, err := Stat(ctx, tools, image, p)
	if err != nil {
		return nil, err
	}
	if in.Type != "regular" {
		return nil, fmt.Errorf("%s in %s is a %s, not a regular file", p, image, in.Type)
	}
	if in.Size > limit {
		return nil, fmt.Errorf("%s in %s is %d bytes, more than the %d expected", p, image, in.Size, limit)
	}
	return query(ctx, tools, image, "cat", p)
}
