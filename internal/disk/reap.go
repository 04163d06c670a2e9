package disk

import (
	"context"
	"errors"
	"fmt"
)

// Reap releases what interrupted clones and missed removals left under
// cfg.DisksDir: device-mapper and loop devices of disks not in keep (when cfg.Ops is
// set), and the FUSE mounts of interrupted qcow2 grows. bangerd calls it when it
// opens, with the disks of every VM it still has; their devices are left alone.
// Files are not touched: a VM directory without a VM is the VM service's to remove.
func Reap(ctx context.Context, cfg Config, keep []Disk) error {
	var errs []error
	if cfg.Ops != nil {
		errs = append(errs, NewDMSnapshot(cfg).Reap(ctx, keep))
	}
	mounts, err := fuseMountsUnder(cfg.DisksDir)
	if err != nil {
		errs = append(errs, fmt.Errorf("reap disks: %w", err))
	}
	for _, m := range mounts {
		if err := unmountFUSE(m); err != nil {
			errs = append(errs, fmt.Errorf("reap disks: %w", err))
		} else if cfg.Logger != nil {
			cfg.Logger.Info("unmounted leftover FUSE export", "mountpoint", m)
		}
	}
	return errors.Join(errs...)
}

// Activator is a strategy whose disks live partly in the kernel and must be made
// again after a host reboot before a VMM can open them.
type Activator interface {
	Activate(ctx context.Context, d Disk) (Disk, error)
}

// Activate makes sure d can be opened at d.Path, recreating kernel devices if its
// strategy has any (dm-snapshot after a reboot). It returns d, updated. Call it
// before starting a VM whose disk was made earlier.
func Activate(ctx context.Context, d Disk, strategies ...Strategy) (Disk, error) {
	s, err := Find(d, strategies...)
	if err != nil {
		return Disk{}, err
	}
	if a, ok := s.(Activator); ok {
		return a.Activate(ctx, d)
	}
	return d, nil
}
