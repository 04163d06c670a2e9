package guestinit

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Devices is where banger-init looks for block devices: sysfs's class
// directory, which the kernel fills as drivers probe, and /dev, where the
// nodes are. No udev runs, so a missing node is made from sysfs's dev file.
type Devices struct {
	SysBlock string        // /sys/class/block
	Dev      string        // /dev
	Poll     time.Duration // between looks; default 10ms
}

// WaitRoot waits until the device that spec names (/dev/NAME, NAME,
// LABEL=x or UUID=x) appears, makes its /dev node if devtmpfs has not, and
// returns the node's path. It fails when ctx ends, saying which block
// devices it did see, so a missing driver is easy to spot.
func (d Devices) WaitRoot(ctx context.Context, spec string) (string, error) {
	poll := d.Poll
	if poll <= 0 {
		poll = 10 * time.Millisecond
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	var lastErr error
	for {
		path, err := d.find(spec)
		if err == nil {
			return path, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			seen := d.list()
			if len(seen) == 0 {
				seen = []string{"none"}
			}
			return "", fmt.Errorf("root device %s did not appear (%v); block devices seen: %s: check that the disk is attached and that its driver (virtio_blk, and virtio_mmio or virtio_pci) is built in or in the initramfs",
				spec, lastErr, strings.Join(seen, ", "))
		case <-t.C:
		}
	}
}

var errNotYet = errors.New("not present yet")

func (d Devices) find(spec string) (string, error) {
	switch {
	case strings.HasPrefix(spec, "LABEL="), strings.HasPrefix(spec, "UUID="):
		key, want, _ := strings.Cut(spec, "=")
		for _, name := range d.list() {
			node, err := d.Node(name)
			if err != nil {
				continue
			}
			sb, err := readExtSuperblock(node)
			if err != nil {
				continue
			}
			if (key == "LABEL" && sb.Label == want) || (key == "UUID" && strings.EqualFold(sb.UUID, want)) {
				return node, nil
			}
		}
		return "", errNotYet
	case strings.HasPrefix(spec, "/dev/"):
		name := strings.TrimPrefix(spec, "/dev/")
		if strings.Contains(name, "/") {
			return "", fmt.Errorf("root=%s: only /dev/NAME, LABEL= and UUID= are understood (there is no udev to make /dev/disk links)", spec)
		}
		return d.Node(name)
	case !strings.ContainsAny(spec, "/=") && spec != "":
		return d.Node(spec)
	}
	return "", fmt.Errorf("root=%s: want /dev/NAME, LABEL=x or UUID=x", spec)
}

// list returns the block devices sysfs knows, sorted.
func (d Devices) list() []string {
	ents, err := os.ReadDir(d.SysBlock)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// Node returns /dev/NAME once sysfs shows the device, creating the block
// node from /sys/class/block/NAME/dev ("MAJOR:MINOR") if it is missing.
func (d Devices) Node(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return "", fmt.Errorf("block device name %q", name)
	}
	node := filepath.Join(d.Dev, name)
	raw, err := os.ReadFile(filepath.Join(d.SysBlock, name, "dev"))
	if os.IsNotExist(err) {
		return "", errNotYet
	}
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(node); err == nil {
		return node, nil
	}
	maj, min, err := parseDevNumber(string(raw))
	if err != nil {
		return "", fmt.Errorf("%s/%s/dev: %w", d.SysBlock, name, err)
	}
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(maj, min))); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("mknod %s (block %d:%d): %w", node, maj, min, err)
	}
	return node, nil
}

func parseDevNumber(s string) (uint32, uint32, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not MAJOR:MINOR", s)
	}
	maj, err1 := strconv.ParseUint(a, 10, 32)
	min, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%q is not MAJOR:MINOR", s)
	}
	return uint32(maj), uint32(min), nil
}

// extSuperblock is what LABEL= and UUID= are matched against.
type extSuperblock struct {
	Label string
	UUID  string // canonical 8-4-4-4-12 form, lower case
}

// readExtSuperblock reads an ext2/3/4 superblock: 1024 bytes in, magic
// 0xEF53 at 0x38, UUID at 0x68, volume name at 0x78. Only ext filesystems
// are probed: they are what banger's images are.
func readExtSuperblock(path string) (extSuperblock, error) {
	f, err := os.Open(path)
	if err != nil {
		return extSuperblock{}, err
	}
	defer f.Close()
	var sb [0x88]byte
	if _, err := f.ReadAt(sb[:], 1024); err != nil {
		if errors.Is(err, io.EOF) {
			return extSuperblock{}, fmt.Errorf("%s: too small for an ext superblock", path)
		}
		return extSuperblock{}, err
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xEF53 {
		return extSuperblock{}, fmt.Errorf("%s: not an ext2/3/4 filesystem", path)
	}
	u := hex.EncodeToString(sb[0x68:0x78])
	return extSuperblock{
		Label: string(bytes.TrimRight(sb[0x78:0x88], "\x00")),
		UUID:  u[0:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:32],
	}, nil
}
