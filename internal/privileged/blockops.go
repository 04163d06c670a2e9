package privileged

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"regexp"

	"banger/internal/blockdev"
)

// BlockOps is the kernel work behind the helper's loop and device-mapper ops.
// blockdev.Local implements it (each method has the contract of the blockdev function
// of the same name); the server calls it only after validating every argument, and
// only to read when it checks an argument against the kernel's state.
//
// GrowExt4 is deliberately absent: DMCreate hands a VM's snapshot node to the owner,
// so bangerd runs e2fsck and resize2fs itself (see BlockClient.GrowExt4), and a
// filesystem built from an image is never parsed by a root process.
type BlockOps interface {
	// LoopAttach binds path to a free loop device. The server passes
	// /proc/self/fd/N, a descriptor it opened and checked, so the implementation
	// must run in the helper's own process, as blockdev.Local does.
	LoopAttach(ctx context.Context, path string, readOnly bool) (dev string, err error)
	LoopDetach(ctx context.Context, dev string) error
	// LoopList returns every bound loop device on the host; the server keeps banger's.
	LoopList(ctx context.Context) ([]blockdev.Loop, error)
	DMAvailable(ctx context.Context) error
	// DMCreate creates NAME from table and returns /dev/mapper/NAME.
	DMCreate(ctx context.Context, name, table string) (dev string, err error)
	DMRemove(ctx context.Context, name string) error
	// DMList returns every device-mapper name on the host; the server keeps this
	// root's.
	DMList(ctx context.Context) ([]string, error)
}

// Device-mapper naming, shared with internal/disk's dm-snapshot strategy, which makes
// NAME = DMPrefix(disksDir) + VMID for a VM's snapshot and NAME + DMOriginSuffix for
// the base+zero origin of a disk larger than its base.
const (
	// DMOriginSuffix ends the name of a snapshot's origin device. VM ids have no '.',
	// so NAME.origin never names a VM's own device.
	DMOriginSuffix = ".origin"
	// MaxDMSectors bounds every length and offset in a table the helper accepts:
	// 2^37 sectors of 512 bytes, 64 TiB, far beyond any root disk banger makes.
	MaxDMSectors = int64(1) << 37
)

// vmIDRe is internal/disk's VM id rule: letters, digits, - and _, at most 64.
var vmIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// DMPrefix is the start of every device-mapper name of the banger root whose disks
// directory is disksDir: "banger-", the first 4 bytes of the SHA-256 of the cleaned
// directory in hex, and "-". Two roots on one host therefore never take, reap or
// (through the helper) touch each other's devices. It must equal
// disk.DMSnapshot.Prefix for the same directory; a test checks that it does.
func DMPrefix(disksDir string) string {
	h := sha256.Sum256([]byte(filepath.Clean(disksDir)))
	return "banger-" + hex.EncodeToString(h[:4]) + "-"
}
