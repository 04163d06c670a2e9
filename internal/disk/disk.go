package disk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"banger/internal/blockdev"
	"banger/internal/config"
)

// Format is how a VMM must open a disk.
type Format string

// Disk formats.
const (
	FormatRaw   Format = "raw"   // a raw block image (file or block device); every driver
	FormatQcow2 Format = "qcow2" // a qcow2 overlay; the QEMU driver only
)

// Strategy names, as --disk-strategy and the config take them and as Disk records them.
const (
	NameAuto       = "auto"
	NameDMSnapshot = "dm-snapshot"
	NameReflink    = "reflink"
	NameQcow2      = "qcow2"
	NameCopy       = "copy"
)

// Driver names whose formats Select knows (the VMM drivers).
const (
	DriverFirecracker = "firecracker"
	DriverQEMU        = "qemu"
)

// Errors callers can test for with errors.Is.
var (
	// ErrUnavailable: the strategy cannot run on this host (missing tool, kernel
	// feature or filesystem support). The wrapping error says what is missing.
	ErrUnavailable = errors.New("disk: strategy unavailable")
	// ErrTooSmall: the requested size is below the base image's; banger never
	// shrinks a root filesystem.
	ErrTooSmall = errors.New("disk: size smaller than the base image")
)

// Disk is one VM's writable root disk: everything a VMM needs to open it and
// everything Remove needs to release it. It is plain data and JSON-serialisable, so
// bangerd stores it with the VM and hands it back to Remove, Activate or Reap after a
// restart.
type Disk struct {
	VMID     string `json:"vm_id"`
	Strategy string `json:"strategy"` // one of the Name* constants, never auto
	// Path is what the VMM opens: a file in Dir, or /dev/mapper/NAME for dm-snapshot.
	Path   string `json:"path"`
	Format Format `json:"format"`
	// SizeBytes is the disk's size as the guest sees it.
	SizeBytes int64  `json:"size_bytes"`
	Base      string `json:"base"` // the read-only image it was cloned from
	Dir       string `json:"dir"`  // the VM's disk directory
	// Note says why auto settled on this strategy when a faster one was available
	// but failed to clone (vm inspect shows it); empty otherwise.
	Note string `json:"note,omitempty"`
	// NeedsOnlineResize: the disk was made larger than its filesystem and banger
	// could not grow the filesystem on the host (a qcow2 overlay without a FUSE
	// export); the guest agent must run resize2fs on its root at boot.
	NeedsOnlineResize bool `json:"needs_online_resize,omitempty"`
	// Files are the files this disk made, all inside Dir; Remove deletes them.
	Files []string `json:"files,omitempty"`
	// CreatedDir: Clone made Dir, so Remove deletes it once it is empty.
	CreatedDir bool `json:"created_dir,omitempty"`
	// DM is the dm-snapshot strategy's kernel state; nil for the others.
	DM *DMState `json:"dm,omitempty"`
}

// CloneRequest asks for one VM's disk.
type CloneRequest struct {
	VMID string // names the disk (and its dm devices); letters, digits, - and _
	// Dir is the VM's own disk directory (absolute), made if missing. Clone puts its
	// files there and nothing else; two VMs never share one.
	Dir string
	// SizeBytes is the disk size; 0 keeps the base image's. A larger size grows the
	// disk and the ext4 filesystem in it; a smaller one is ErrTooSmall. Sizes are
	// rounded up to a multiple of 4 KiB.
	SizeBytes int64
}

// Strategy makes and releases per-VM disks over a shared read-only base image. The
// base is never written, whatever happens to the clones.
type Strategy interface {
	// Name is the strategy's name (a Name* constant).
	Name() string
	// Format is the format of the disks it makes.
	Format() Format
	// Available returns nil when the strategy can run here, else an error wrapping
	// ErrUnavailable that says what is missing.
	Available(ctx context.Context) error
	// Clone makes req.VMID's disk from base. It is transactional: on error nothing it
	// made is left (files, loop and dm devices).
	Clone(ctx context.Context, base string, req CloneRequest) (Disk, error)
	// Remove releases everything Clone made for d. It is idempotent: releasing what
	// is already gone is not an error.
	Remove(ctx context.Context, d Disk) error
}

// BlockOps is the privileged kernel work the dm-snapshot strategy needs. In
// production banger-helper performs it; blockdev.Local does it in-process (root).
// Each method has the contract of the blockdev function of the same name.
type BlockOps interface {
	LoopAttach(ctx context.Context, path string, readOnly bool) (dev string, err error)
	LoopDetach(ctx context.Context, dev string) error
	LoopList(ctx context.Context) ([]blockdev.Loop, error)
	DMAvailable(ctx context.Context) error
	DMCreate(ctx context.Context, name, table string) (dev string, err error)
	DMRemove(ctx context.Context, name string) error
	DMList(ctx context.Context) ([]string, error)
	// GrowExt4 grows the filesystem on a block device the caller cannot open.
	GrowExt4(ctx context.Context, dev string) error
}

// Config is what the strategies need from bangerd.
type Config struct {
	// DisksDir is banger's disks directory (layout.DisksDir); every VM's Dir is
	// inside it. Required.
	DisksDir string
	// ImagesDir holds the base images; reflink needs it on the same filesystem as
	// DisksDir. Optional: when empty, only DisksDir's filesystem is probed.
	ImagesDir string
	// Ops performs loop and device-mapper work; nil leaves dm-snapshot unavailable.
	Ops BlockOps
	// Logger gets one line per reaped device; nil discards.
	Logger *slog.Logger
}

// Strategies returns every strategy, fastest first: dm-snapshot, reflink, qcow2, copy.
// This is the order auto tries.
func Strategies(cfg Config) []Strategy {
	return []Strategy{
		NewDMSnapshot(cfg),
		NewReflink(cfg.DisksDir, cfg.ImagesDir),
		NewQcow2(),
		NewCopy(),
	}
}

// driverFormats lists the formats a VMM driver can open.
func driverFormats(driver string) ([]Format, bool) {
	switch driver {
	case DriverFirecracker:
		return []Format{FormatRaw}, true
	case DriverQEMU:
		return []Format{FormatRaw, FormatQcow2}, true
	}
	return nil, false
}

// Select picks the strategy called name for a VM run by driver (firecracker or
// qemu, already resolved from auto). With name auto (or empty) it returns the first
// of strategies, in order, whose format the driver opens and that is available,
// and otherwise an error listing why each was passed over. A named strategy that
// the driver cannot open or that is unavailable is an error saying so.
func Select(ctx context.Context, name, driver string, strategies ...Strategy) (Strategy, error) {
	formats, ok := driverFormats(driver)
	if !ok {
		return nil, fmt.Errorf("disk strategy for driver %q: unknown driver (want %s or %s)", driver, DriverFirecracker, DriverQEMU)
	}
	opens := func(s Strategy) bool {
		for _, f := range formats {
			if f == s.Format() {
				return true
			}
		}
		return false
	}
	if name == "" || name == NameAuto {
		var why []string
		for _, s := range strategies {
			if !opens(s) {
				why = append(why, fmt.Sprintf("%s: the %s driver cannot open %s disks", s.Name(), driver, s.Format()))
				continue
			}
			err := s.Available(ctx)
			if err == nil {
				return s, nil
			}
			why = append(why, fmt.Sprintf("%s: %v", s.Name(), err))
		}
		return nil, fmt.Errorf("no disk strategy can run here for the %s driver: %s: %w", driver, strings.Join(why, "; "), ErrUnavailable)
	}
	var names []string
	for _, s := range strategies {
		names = append(names, s.Name())
		if s.Name() != name {
			continue
		}
		if !opens(s) {
			return nil, fmt.Errorf("disk strategy %s makes %s disks, which the %s driver cannot open: use the qemu driver or another strategy: %w", name, s.Format(), driver, ErrUnavailable)
		}
		if err := s.Available(ctx); err != nil {
			return nil, fmt.Errorf("disk strategy %s: %w", name, err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("disk strategy %q is unknown: use %s or one of %s", name, NameAuto, strings.Join(names, ", "))
}

// Clone makes req.VMID's disk from base with the strategy called name, as Select
// picks it. Under auto, a strategy that says it is available but then fails to
// clone (a device-mapper whose control node answers but whose targets are missing,
// a filesystem that refuses a reflink) does not fail the VM: the next candidate is
// tried, and the disk's Note says what was passed over and why. A strategy named
// explicitly is used or fails: the user asked for it. A too-small size or a
// cancelled ctx ends the search at once, since no other strategy would do better.
func Clone(ctx context.Context, name, driver, base string, req CloneRequest, strategies ...Strategy) (Disk, error) {
	if name != "" && name != NameAuto {
		s, err := Select(ctx, name, driver, strategies...)
		if err != nil {
			return Disk{}, err
		}
		return s.Clone(ctx, base, req)
	}
	var failed []string
	rest := strategies
	for len(rest) > 0 {
		s, err := Select(ctx, NameAuto, driver, rest...)
		if err != nil {
			if len(failed) > 0 {
				return Disk{}, fmt.Errorf("no disk strategy could clone %s: %s: %w", base, strings.Join(failed, "; "), err)
			}
			return Disk{}, err
		}
		d, err := s.Clone(ctx, base, req)
		if err == nil {
			if len(failed) > 0 {
				d.Note = fmt.Sprintf("auto chose %s because %s", s.Name(), strings.Join(failed, "; "))
			}
			return d, nil
		}
		if errors.Is(err, ErrTooSmall) || ctx.Err() != nil {
			return Disk{}, err
		}
		failed = append(failed, fmt.Sprintf("%s failed to clone (%v)", s.Name(), err))
		for i, c := range rest {
			if c == s {
				rest = rest[i+1:]
				break
			}
		}
	}
	return Disk{}, fmt.Errorf("no disk strategy could clone %s: %s: %w", base, strings.Join(failed, "; "), ErrUnavailable)
}

// ValidName checks a strategy name as --disk-strategy and [disk] strategy take it.
func ValidName(name string) error {
	if slices.Contains(config.DiskStrategies, name) {
		return nil
	}
	return fmt.Errorf("disk strategy %q is unknown: use one of %s", name, strings.Join(config.DiskStrategies, ", "))
}

// Find returns the strategy that made d, for Remove and Activate after a restart.
func Find(d Disk, strategies ...Strategy) (Strategy, error) {
	for _, s := range strategies {
		if s.Name() == d.Strategy {
			return s, nil
		}
	}
	return nil, fmt.Errorf("vm %s disk: strategy %q is unknown to this banger", d.VMID, d.Strategy)
}
