package vmservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/agent/proto"
	"banger/internal/consolelog"
	"banger/internal/disk"
	"banger/internal/hostnetwork"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Stop shuts a VM down gracefully — the agent powers the guest off — and kills
// its VMM if it has not exited after timeout. Then it releases the VM's tap, NAT
// rules, DNS record and published ports. Stopping a stopped VM succeeds.
func (s *Service) Stop(ctx context.Context, ref string, timeout time.Duration) (VM, error) {
	return s.halt(ctx, ref, timeout, false)
}

// Kill ends a VM's VMM at once, then releases what the VM held.
func (s *Service) Kill(ctx context.Context, ref string) (VM, error) {
	return s.halt(ctx, ref, 0, true)
}

// Restart stops (gracefully, within timeout) and starts a VM.
func (s *Service) Restart(ctx context.Context, ref string, timeout time.Duration) (VM, error) {
	vm, err := s.d.Store.GetVM(ctx, ref)
	if err != nil {
		return VM{}, err
	}
	unlock := s.lockVM(vm.ID)
	defer unlock()
	if err := s.stopLocked(ctx, vm, timeout, false); err != nil {
		return VM{}, err
	}
	if err := s.start(ctx, vm); err != nil {
		return VM{}, err
	}
	return s.Get(ctx, vm.ID)
}

func (s *Service) halt(ctx context.Context, ref string, timeout time.Duration, kill bool) (VM, error) {
	vm, err := s.d.Store.GetVM(ctx, ref)
	if err != nil {
		return VM{}, err
	}
	unlock := s.lockVM(vm.ID)
	defer unlock()
	if err := s.stopLocked(ctx, vm, timeout, kill); err != nil {
		return VM{}, err
	}
	return s.Get(ctx, vm.ID)
}

func (s *Service) stopLocked(ctx context.Context, vm store.VM, timeout time.Duration, kill bool) error {
	h, err := s.d.Store.GetHandle(ctx, vm.ID)
	if errors.Is(err, store.ErrNotFound) || err == nil && h.PID == 0 {
		return s.d.Store.UpdateVMState(ctx, vm.ID, stoppedState(vm.State))
	}
	if err != nil {
		return err
	}
	drv, err := s.driver(vm.Driver)
	if err != nil {
		return err
	}
	vh := vmmHandle(vm.Driver, h, s.consoleLog(vm.ID))
	if hostnetwork.ProcessAlive(h.PID, h.PIDStart) {
		_ = s.d.Store.UpdateVMState(ctx, vm.ID, store.VMStopping)
		if kill {
			if err := drv.Kill(ctx, vh); err != nil {
				return fmt.Errorf("vm %q: kill: %w", vm.Name, err)
			}
		} else if err := s.shutdown(ctx, vm, drv, vh, timeout); err != nil {
			return err
		}
	}
	s.release(context.WithoutCancel(ctx), vm, h)
	return s.d.Store.UpdateVMState(ctx, vm.ID, store.VMStopped)
}

// stoppedState keeps "created" for a VM that never ran.
func stoppedState(cur store.VMState) store.VMState {
	if cur == store.VMCreated {
		return store.VMCreated
	}
	return store.VMStopped
}

// shutdown asks the agent to power off, waits up to timeout, then lets the
// driver finish (its own graceful signal, then a kill).
func (s *Service) shutdown(ctx context.Context, vm store.VM, drv vmm.Driver, h vmm.Handle, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	deadline := time.Now().Add(timeout)
	actx, cancel := context.WithTimeout(ctx, min(5*time.Second, timeout))
	c, err := s.agent(actx, vm)
	if err == nil {
		err = c.Shutdown(actx, proto.ActionPoweroff)
	}
	cancel()
	if err != nil {
		s.log.Info("agent shutdown unavailable; the driver stops the VM", "vm", vm.Name, "err", err)
	}
	for time.Now().Before(deadline) {
		if st, err := drv.State(ctx, h); err == nil && st == vmm.StateExited {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	// The guest did not go in time: the driver's own stop, then kill.
	if err := drv.Stop(ctx, h, 2*time.Second); err != nil {
		return fmt.Errorf("vm %q: stop: %w", vm.Name, err)
	}
	return nil
}

// release gives back everything a stopped VM held: its agent session, published
// ports, DNS record, NAT rules and tap, and its runtime directory. Each step is
// independent: a failure is logged and the others still run.
func (s *Service) release(ctx context.Context, vm store.VM, h store.Handle) {
	s.dropAgent(vm.ID)
	s.d.Ports.Unpublish(vm.ID)
	s.d.DNS.Remove(vm.Name)
	if h.Tap != "" {
		if l, err := s.d.Store.LeaseOf(ctx, vm.ID); err == nil {
			if err := s.d.Network.SetNAT(ctx, l.Addr, "", h.Tap, false); err != nil {
				s.log.Warn("remove nat rules", "vm", vm.Name, "err", err)
			}
		}
		if err := s.d.Network.ReleaseTap(ctx, h.Tap); err != nil {
			s.log.Warn("release tap", "vm", vm.Name, "tap", h.Tap, "err", err)
		}
	}
	if err := s.d.Store.ClearHandle(ctx, vm.ID); err != nil {
		s.log.Warn("clear handle", "vm", vm.Name, "err", err)
	}
	s.removeRuntime(vm.ID)
}

// Remove deletes a VM: its disk, SSH host key and known_hosts lines, console
// log, record and IP lease. A running VM is refused unless force, which kills it.
func (s *Service) Remove(ctx context.Context, ref string, force bool) (VM, error) {
	vm, err := s.d.Store.GetVM(ctx, ref)
	if err != nil {
		return VM{}, err
	}
	unlock := s.lockVM(vm.ID)
	defer unlock()
	v, _ := s.view(ctx, vm)
	if v.Handle != nil && hostnetwork.ProcessAlive(v.Handle.PID, v.Handle.PIDStart) && !force {
		return VM{}, fmt.Errorf("vm %q is running: stop it first (banger vm stop %s) or remove it anyway with rm -f: %w", vm.Name, vm.Name, ErrConflict)
	}
	if err := s.stopLocked(ctx, vm, 0, true); err != nil {
		return VM{}, err
	}
	var d disk.Disk
	if json.Unmarshal(vm.Disk, &d) == nil && d.Path != "" {
		if err := s.d.Disks.Remove(ctx, d); err != nil {
			return VM{}, fmt.Errorf("vm %q: remove its disk: %w", vm.Name, err)
		}
	}
	if err := s.d.SSH.Forget(s.dnsNames(vm, v.IP)); err != nil {
		s.log.Warn("known_hosts", "vm", vm.Name, "err", err)
	}
	if err := s.d.SSH.DeleteHostKey(vm.ID); err != nil {
		s.log.Warn("host key", "vm", vm.Name, "err", err)
	}
	_ = consolelog.Remove(s.consoleLog(vm.ID))
	if err := s.d.Store.DeleteVM(ctx, vm.ID); err != nil {
		return VM{}, err
	}
	s.locks.Forget(vm.ID)
	s.log.Info("vm removed", "vm", vm.Name, "id", vm.ID)
	return v, nil
}

// Open re-attaches to the VMs that survived bangerd: a VM whose VMM still runs
// keeps its tap and gets its published ports back; one whose VMM died while
// bangerd was down is marked stopped and its tap, NAT rules and DNS record are
// released. Runtime directories of VMs that no longer exist are removed.
func (s *Service) Open(ctx context.Context) error {
	vms, err := s.d.Store.ListVMs(ctx)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, vm := range vms {
		known[shortID(vm.ID)] = true
		h, err := s.d.Store.GetHandle(ctx, vm.ID)
		if err != nil || h.PID == 0 {
			if vm.State == store.VMRunning || vm.State == store.VMStarting || vm.State == store.VMStopping {
				_ = s.d.Store.UpdateVMState(ctx, vm.ID, store.VMStopped)
			}
			continue
		}
		if hostnetwork.ProcessAlive(h.PID, h.PIDStart) {
			if l, err := s.d.Store.LeaseOf(ctx, vm.ID); err == nil {
				// The guest's network rules again (a no-op when they are in place): the
				// helper's tables may be new (an upgrade, a flushed ruleset), and without
				// them the guest's tap gets nothing onto the bridge.
				if h.Tap != "" {
					if err := s.d.Network.SetNAT(ctx, l.Addr, macFor(vm.ID), h.Tap, true); err != nil {
						s.log.Warn("re-apply network rules", "vm", vm.Name, "err", err)
					}
				}
				if sp := decodeSpec(vm.Spec); len(sp.Publish) > 0 {
					if err := s.d.Ports.Publish(ctx, vm.ID, sp.Publish, l.Addr); err != nil {
						s.log.Warn("re-publish ports", "vm", vm.Name, "err", err)
					}
				}
			}
			if vm.State != store.VMRunning {
				_ = s.d.Store.UpdateVMState(ctx, vm.ID, store.VMRunning)
			}
			s.log.Info("re-attached", "vm", vm.Name, "pid", h.PID)
			continue
		}
		s.log.Info("vm died while bangerd was down; releasing its resources", "vm", vm.Name, "pid", h.PID)
		s.release(ctx, vm, h)
		_ = s.d.Store.UpdateVMState(ctx, vm.ID, store.VMStopped)
	}
	ents, _ := os.ReadDir(s.d.Layout.VMSocketDir())
	for _, e := range ents {
		if !known[e.Name()] {
			_ = os.RemoveAll(s.runDir(e.Name()))
		}
	}
	// Disk directories of VMs that no longer exist (a crash between a clone and its
	// record, or between a record's removal and its disk's): their devices were
	// reaped by the disk layer; the files go here.
	disks, _ := os.ReadDir(s.d.Layout.DisksDir())
	for _, e := range disks {
		if e.IsDir() && !known[shortID(e.Name())] && !strings.HasPrefix(e.Name(), ".") {
			s.log.Info("removing an orphan disk directory", "dir", e.Name())
			_ = os.RemoveAll(filepath.Join(s.d.Layout.DisksDir(), e.Name()))
		}
	}
	return nil
}
