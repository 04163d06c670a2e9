package disk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"banger/internal/blockdev"

	"golang.org/x/sys/unix"
)

// Files of a dm-snapshot disk inside the VM's directory, and the lock in DisksDir.
const (
	dmBaseFile   = "base.img" // a hard link to the base: the base loop's backing file
	dmCOWFile    = "cow.img"
	dmLockFile   = ".dm-snapshot.lock"
	originSuffix = ".origin" // VM ids have no '.', so NAME.origin never names a VM's device
)

// DMState is the dm-snapshot strategy's part of a Disk: enough to remove the devices,
// or to make them again over the same files after a reboot.
type DMState struct {
	Name   string `json:"name"`             // the snapshot device; Disk.Path is /dev/mapper/Name
	Origin string `json:"origin,omitempty"` // base+zero origin, for a disk larger than its base
	// BaseFile is what the read-only base loop reads: a hard link to the base inside
	// the VM's directory (so the loop shows up as banger's under the disks
	// directory), or the base itself when it is on another filesystem.
	BaseFile     string `json:"base_file"`
	COWFile      string `json:"cow_file"`
	BaseSectors  int64  `json:"base_sectors"`
	SizeSectors  int64  `json:"size_sectors"`
	ChunkSectors int64  `json:"chunk_sectors"`
}

// DMSnapshot stacks a device-mapper snapshot on two loop devices: the base, read-only,
// and a sparse COW file. Creation is as fast as the few ioctls and dmsetup calls it
// takes and independent of the base's size; the guest writes to a block device, and
// the COW file grows only with what it writes. It needs device-mapper and root, so
// every kernel step goes through BlockOps (banger-helper in production).
type DMSnapshot struct {
	disksDir string
	ops      BlockOps // nil: the strategy is unavailable
	log      *slog.Logger
}

// NewDMSnapshot returns the dm-snapshot strategy for disks under cfg.DisksDir.
func NewDMSnapshot(cfg Config) *DMSnapshot {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &DMSnapshot{disksDir: filepath.Clean(cfg.DisksDir), ops: cfg.Ops, log: log}
}

// Name implements Strategy.
func (*DMSnapshot) Name() string { return NameDMSnapshot }

// Format implements Strategy.
func (*DMSnapshot) Format() Format { return FormatRaw }

// Available asks BlockOps whether device-mapper is there.
func (s *DMSnapshot) Available(ctx context.Context) error {
	if s.ops == nil {
		return fmt.Errorf("dm-snapshot: no privileged helper to make loop and device-mapper devices: %w", ErrUnavailable)
	}
	if s.disksDir == "." || s.disksDir == "" {
		return fmt.Errorf("dm-snapshot: no disks directory configured: %w", ErrUnavailable)
	}
	if err := s.ops.DMAvailable(ctx); err != nil {
		return fmt.Errorf("dm-snapshot: %v: %w", err, ErrUnavailable)
	}
	return nil
}

// Prefix is the start of every device-mapper name this strategy makes:
// "banger-" and a short hash of the disks directory, so that two banger roots on one
// host never take (or reap) each other's devices.
func (s *DMSnapshot) Prefix() string {
	h := sha256.Sum256([]byte(s.disksDir))
	return "banger-" + hex.EncodeToString(h[:4]) + "-"
}

// Clone implements Strategy: under the strategy's lock, it links the base into the
// VM's directory, makes the sparse COW file, attaches both to loop devices, creates
// the tables (see dmtable.go) and, for a larger disk, grows the ext4 on the snapshot.
func (s *DMSnapshot) Clone(ctx context.Context, base string, req CloneRequest) (_ Disk, err error) {
	if err := s.Available(ctx); err != nil {
		return Disk{}, err
	}
	p, err := newPlan(base, req)
	if err != nil {
		return Disk{}, err
	}
	if !blockdev.IsUnder(p.dir, s.disksDir) {
		return Disk{}, fmt.Errorf("vm %s disk: directory %s must be inside %s, where Reap looks for leftover devices", p.vmID, p.dir, s.disksDir)
	}
	if p.baseSize%512 != 0 {
		return Disk{}, fmt.Errorf("vm %s disk: base %s is %d bytes, not whole 512-byte sectors", p.vmID, p.base, p.baseSize)
	}
	unlock, err := lockFile(ctx, filepath.Join(s.disksDir, dmLockFile))
	if err != nil {
		return Disk{}, fmt.Errorf("vm %s disk: %w", p.vmID, err)
	}
	defer unlock()

	var u undo
	defer func() {
		if err != nil {
			err = errors.Join(err, u.run())
		}
	}()
	created, err := makeDir(p.dir)
	if err != nil {
		return Disk{}, fmt.Errorf("vm %s disk: %w", p.vmID, err)
	}
	st := &DMState{Name: s.Prefix() + p.vmID, BaseSectors: p.baseSize / 512, SizeSectors: p.size / 512, ChunkSectors: chunkSectors}
	if p.grow {
		st.Origin = st.Name + originSuffix
	}
	d := Disk{VMID: p.vmID, Strategy: NameDMSnapshot, Format: FormatRaw, SizeBytes: p.size, Base: p.base, Dir: p.dir,
		Path: blockdev.MapperDir + "/" + st.Name, CreatedDir: created, DM: st}
	u.add(func() error { return removeFiles(d) })

	link := filepath.Join(p.dir, dmBaseFile)
	switch err := os.Link(p.base, link); {
	case err == nil:
		st.BaseFile = link
		d.Files = append(d.Files, link)
	case errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EMLINK):
		// Another filesystem (or protected_hardlinks): attach the base itself. Its loop
		// is then not findable under the disks directory, only through the dm table
		// that holds it, which autoclear ties it to.
		s.log.Info("dm-snapshot: cannot link the base into the disk directory; attaching it directly", "vm", p.vmID, "base", p.base, "err", err)
		st.BaseFile = p.base
	default:
		return Disk{}, fmt.Errorf("vm %s disk: link base: %w", p.vmID, err)
	}

	st.COWFile = filepath.Join(p.dir, dmCOWFile)
	cow, err := os.OpenFile(st.COWFile, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Disk{}, fmt.Errorf("vm %s disk: %w", p.vmID, err)
	}
	d.Files = append(d.Files, st.COWFile)
	err = cow.Truncate(cowBytes(p.size))
	if cerr := cow.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Disk{}, fmt.Errorf("vm %s disk: COW file: %w", p.vmID, err)
	}

	dev, removeTables, err := s.activate(ctx, st)
	if err != nil {
		return Disk{}, fmt.Errorf("vm %s disk: %w", p.vmID, err)
	}
	u.add(removeTables)
	d.Path = dev
	if p.grow {
		if err := s.ops.GrowExt4(ctx, dev); err != nil {
			return Disk{}, fmt.Errorf("vm %s disk: %w", p.vmID, err)
		}
	}
	return d, nil
}

// activate attaches st's files to loop devices and creates its tables, returning the
// snapshot's node and a step that removes the tables. On success the loops are
// already detached in the kernel's deferred sense: held by the tables, they go when
// the tables go, so removing the tables releases everything. On failure nothing is
// left.
func (s *DMSnapshot) activate(ctx context.Context, st *DMState) (dev string, removeTables func() error, err error) {
	bg := context.WithoutCancel(ctx) // undo steps run even when ctx is what failed
	var u undo
	defer func() {
		if err != nil {
			err = errors.Join(err, u.run())
		}
	}()
	// handedOff[dev]: the loop is already tied to the tables, and once they go its
	// number may belong to someone else; its undo step must then do nothing.
	handedOff := map[string]bool{}
	detach := func(dev string) func() error {
		return func() error {
			if handedOff[dev] {
				return nil
			}
			return s.ops.LoopDetach(bg, dev)
		}
	}
	baseLoop, err := s.ops.LoopAttach(ctx, st.BaseFile, true)
	if err != nil {
		return "", nil, fmt.Errorf("base loop: %w", err)
	}
	u.add(detach(baseLoop))
	cowLoop, err := s.ops.LoopAttach(ctx, st.COWFile, false)
	if err != nil {
		return "", nil, fmt.Errorf("COW loop: %w", err)
	}
	u.add(detach(cowLoop))

	var tables undo
	origin := baseLoop
	if st.Origin != "" {
		origin, err = s.ops.DMCreate(ctx, st.Origin, originTable(baseLoop, st.BaseSectors, st.SizeSectors))
		if err != nil {
			return "", nil, err
		}
		tables.add(func() error { return s.ops.DMRemove(bg, st.Origin) })
		u.add(tables[len(tables)-1])
	}
	dev, err = s.ops.DMCreate(ctx, st.Name, snapshotTable(origin, cowLoop, st.SizeSectors))
	if err != nil {
		return "", nil, err
	}
	tables.add(func() error { return s.ops.DMRemove(bg, st.Name) })
	u.add(tables[len(tables)-1])

	// Hand the loops' lifetime to the tables: only the tables' removal is returned.
	for _, l := range []string{cowLoop, baseLoop} {
		if err := s.ops.LoopDetach(ctx, l); err != nil {
			return "", nil, err
		}
		handedOff[l] = true
	}
	return dev, tables.run, nil
}

// Activate makes d's devices again over its files when they are gone (after a host
// reboot: device-mapper state is not persistent, the COW file is). A disk whose
// snapshot device exists is returned as is.
func (s *DMSnapshot) Activate(ctx context.Context, d Disk) (Disk, error) {
	if err := s.check(d); err != nil {
		return Disk{}, err
	}
	if err := s.Available(ctx); err != nil {
		return Disk{}, err
	}
	unlock, err := lockFile(ctx, filepath.Join(s.disksDir, dmLockFile))
	if err != nil {
		return Disk{}, fmt.Errorf("vm %s disk: %w", d.VMID, err)
	}
	defer unlock()
	names, err := s.ops.DMList(ctx)
	if err != nil {
		return Disk{}, fmt.Errorf("vm %s disk: %w", d.VMID, err)
	}
	if contains(names, d.DM.Name) {
		return d, nil
	}
	for _, f := range []string{d.DM.BaseFile, d.DM.COWFile} {
		if _, err := os.Stat(f); err != nil {
			return Disk{}, fmt.Errorf("vm %s disk: cannot reactivate: %w", d.VMID, err)
		}
	}
	// A half-made origin from an interrupted activation would block DMCreate.
	if d.DM.Origin != "" && contains(names, d.DM.Origin) {
		if err := s.ops.DMRemove(ctx, d.DM.Origin); err != nil {
			return Disk{}, fmt.Errorf("vm %s disk: %w", d.VMID, err)
		}
	}
	dev, _, err := s.activate(ctx, d.DM)
	if err != nil {
		return Disk{}, fmt.Errorf("vm %s disk: reactivate: %w", d.VMID, err)
	}
	d.Path = dev
	return d, nil
}

// Remove implements Strategy: it removes the tables (their loops go with them),
// detaches any loop still backed by a file in the VM's directory, then deletes the
// files. If a device cannot be removed (a VMM still has it open), the files are kept
// so that a later Remove can finish the job.
func (s *DMSnapshot) Remove(ctx context.Context, d Disk) error {
	if err := s.check(d); err != nil {
		return err
	}
	if s.ops == nil {
		return fmt.Errorf("vm %s disk: dm-snapshot: no privileged helper to remove its devices: %w", d.VMID, ErrUnavailable)
	}
	unlock, err := lockFile(ctx, filepath.Join(s.disksDir, dmLockFile))
	if err != nil {
		return fmt.Errorf("vm %s disk: %w", d.VMID, err)
	}
	defer unlock()
	var errs []error
	for _, name := range []string{d.DM.Name, d.DM.Origin} {
		if name == "" {
			continue
		}
		if err := s.ops.DMRemove(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("vm %s disk: %w", d.VMID, err))
		}
	}
	if len(errs) == 0 {
		errs = append(errs, s.detachUnder(ctx, d.Dir, nil))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return removeFiles(d)
}

// Reap removes this root's device-mapper devices and the loop devices backed by files
// under the disks directory that belong to no disk in keep: what a crash between
// Clone's steps, or a Remove that never came, left behind. bangerd calls it when it
// opens, with the disks of every VM it still has.
func (s *DMSnapshot) Reap(ctx context.Context, keep []Disk) error {
	if s.ops == nil {
		return nil
	}
	unlock, err := lockFile(ctx, filepath.Join(s.disksDir, dmLockFile))
	if err != nil {
		return fmt.Errorf("reap disks: %w", err)
	}
	defer unlock()
	kept := map[string]bool{}
	var keptDirs []string
	for _, d := range keep {
		keptDirs = append(keptDirs, d.Dir)
		if d.DM != nil {
			kept[d.DM.Name], kept[d.DM.Origin] = true, true
		}
	}
	var errs []error
	if s.ops.DMAvailable(ctx) == nil {
		names, err := s.ops.DMList(ctx)
		if err != nil {
			return fmt.Errorf("reap disks: %w", err)
		}
		var stale []string
		for _, n := range names {
			if strings.HasPrefix(n, s.Prefix()) && !kept[n] {
				stale = append(stale, n)
			}
		}
		// Snapshots first: an origin is held by its snapshot.
		sort.SliceStable(stale, func(i, j int) bool {
			return !strings.HasSuffix(stale[i], originSuffix) && strings.HasSuffix(stale[j], originSuffix)
		})
		for _, n := range stale {
			if err := s.ops.DMRemove(ctx, n); err != nil {
				errs = append(errs, fmt.Errorf("reap disks: %w", err))
				continue
			}
			s.log.Info("reaped leftover device-mapper device", "name", n)
		}
	}
	errs = append(errs, s.detachUnder(ctx, s.disksDir, keptDirs))
	return errors.Join(errs...)
}

// detachUnder detaches every loop device whose backing file is under dir and not
// under one of the skip directories.
func (s *DMSnapshot) detachUnder(ctx context.Context, dir string, skip []string) error {
	loops, err := s.ops.LoopList(ctx)
	if err != nil {
		return fmt.Errorf("disks: %w", err)
	}
	var errs []error
next:
	for _, l := range blockdev.LoopsUnder(loops, dir) {
		for _, k := range skip {
			if blockdev.IsUnder(l.BackingFile, k) {
				continue next
			}
		}
		if err := s.ops.LoopDetach(ctx, l.Device); err != nil {
			errs = append(errs, fmt.Errorf("disks: %w", err))
			continue
		}
		s.log.Info("detached leftover loop device", "device", l.Device, "backing_file", l.BackingFile)
	}
	return errors.Join(errs...)
}

// check refuses a Disk that is not a dm-snapshot disk of this root: Remove and
// Activate must never act on device names another root (or a corrupt record) chose.
func (s *DMSnapshot) check(d Disk) error {
	if d.Strategy != NameDMSnapshot || d.DM == nil {
		return fmt.Errorf("vm %s disk: not a dm-snapshot disk (strategy %q)", d.VMID, d.Strategy)
	}
	if d.DM.Name != s.Prefix()+d.VMID || (d.DM.Origin != "" && d.DM.Origin != d.DM.Name+originSuffix) {
		return fmt.Errorf("vm %s disk: device names %q/%q are not this banger root's", d.VMID, d.DM.Name, d.DM.Origin)
	}
	if !blockdev.IsUnder(d.Dir, s.disksDir) {
		return fmt.Errorf("vm %s disk: directory %s is outside %s", d.VMID, d.Dir, s.disksDir)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
