package daemon

import (
	"context"
	"encoding/json"

	"banger/internal/disk"
	"banger/internal/store"
)

// diskLayer binds the disk strategies to this root: what the VM service sees of
// the disk layer.
type diskLayer struct {
	cfg        disk.Config
	strategies []disk.Strategy
}

func newDiskLayer(cfg disk.Config) *diskLayer {
	return &diskLayer{cfg: cfg, strategies: disk.Strategies(cfg)}
}

// Clone makes a VM's copy-on-write root with the named strategy (or auto).
func (l *diskLayer) Clone(ctx context.Context, strategy, driver, base string, req disk.CloneRequest) (disk.Disk, error) {
	return disk.Clone(ctx, strategy, driver, base, req, l.strategies...)
}

// Remove releases everything a disk holds.
func (l *diskLayer) Remove(ctx context.Context, d disk.Disk) error {
	s, err := disk.Find(d, l.strategies...)
	if err != nil {
		return err
	}
	return s.Remove(ctx, d)
}

// Activate makes a disk openable again (dm devices after a host reboot).
func (l *diskLayer) Activate(ctx context.Context, d disk.Disk) (disk.Disk, error) {
	return disk.Activate(ctx, d, l.strategies...)
}

// reap releases devices left by interrupted clones or missed removals, keeping
// those of the VMs the store still has.
func (l *diskLayer) reap(ctx context.Context, vms []store.VM) error {
	var keep []disk.Disk
	for _, vm := range vms {
		var d disk.Disk
		if json.Unmarshal(vm.Disk, &d) == nil && d.Path != "" {
			keep = append(keep, d)
		}
	}
	return disk.Reap(ctx, l.cfg, keep)
}
