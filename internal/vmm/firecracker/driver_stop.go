package firecracker

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent/proto"
	"banger/internal/vmm"
	"banger/internal/vmm/process"
)

// Stop shuts the guest down gracefully if it can within timeout, and ends
// Firecracker by force if it must (SIGTERM, then SIGKILL after TermGrace).
// Stopping an exited VMM succeeds and removes its sockets (and its jail). If
// ctx ends first, Stop returns ctx's error and leaves Firecracker as it is:
// the caller gave up, it did not ask for force.
func (d *Driver) Stop(ctx context.Context, h vmm.Handle, timeout time.Duration) error {
	ref, err := refOf(h)
	if err != nil {
		return err
	}
	if ref.Alive() {
		if err := d.shutdown(ctx, h, ref, timeout); err != nil {
			return err
		}
	}
	if err := d.cleanup(ctx, h); err != nil {
		return fmt.Errorf("firecracker pid %d stopped, but: %w", h.PID, err)
	}
	return nil
}

// ctrlAltDel sends SendCtrlAltDel (x86 only: the keyboard controller's
// reset), resuming a paused microVM first: a paused guest cannot react.
func ctrlAltDel(ctx context.Context, apiSocket string) error {
	if runtime.GOARCH != ctrlAltDelArch {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	c := NewClient(apiSocket)
	defer c.Close()
	info, err := c.InstanceInfo(ctx)
	if err != nil {
		return err
	}
	if info.State == "Paused" {
		if err := c.PatchVM(ctx, VMResumed); err != nil {
			return err
		}
	}
	return c.Action(ctx, ActionSendCtrlAltDel)
}

// Kill ends Firecracker at once (SIGKILL), waits for it to go and removes its
// sockets (and its jail). Killing an exited VMM succeeds.
func (d *Driver) Kill(ctx context.Context, h vmm.Handle) error {
	ref, err := refOf(h)
	if err != nil {
		return err
	}
	if ref.Alive() {
		if err := d.signaller(h)(ctx, ref, unix.SIGKILL); err != nil {
			return fmt.Errorf("firecracker pid %d: %w", h.PID, err)
		}
		if err := process.Wait(ctx, ref); err != nil {
			return fmt.Errorf("firecracker pid %d: wait after SIGKILL: %w", h.PID, err)
		}
	}
	if err := d.cleanup(ctx, h); err != nil {
		return fmt.Errorf("firecracker pid %d killed, but: %w", h.PID, err)
	}
	return nil
}

// signaller is how h's process is signalled: directly, or through the jail's
// ops for a jailed Firecracker (it runs as another user).
func (d *Driver) signaller(h vmm.Handle) process.Signaller {
	if j, ok := d.jailOf(h); ok {
		ops := d.o.Jailer.Ops
		return func(ctx context.Context, r process.Ref, sig unix.Signal) error {
			if err := ops.Signal(ctx, r, sig); err != nil {
				return fmt.Errorf("jail %s: %w", j.ID, err)
			}
			return nil
		}
	}
	return process.Direct
}

// cleanup removes what an exited Firecracker left: its sockets, and for a
// jailed one the whole jail.
func (d *Driver) cleanup(ctx context.Context, h vmm.Handle) error {
	if j, ok := d.jailOf(h); ok {
		return d.o.Jailer.Ops.Remove(ctx, j)
	}
	return vmm.RemoveSockets(h.APISocket, h.AgentSocket)
}

// shutdown sends Ctrl+Alt+Del and asks the agent to reboot — a reboot ends
// Firecracker on every architecture, where a power-off does not on x86 (no ACPI
// power-off: the guest halts and the process lives on) — then terminates
// Firecracker (through the jail's ops for a jailed one) if it has not exited
// after timeout.
func (d *Driver) shutdown(ctx context.Context, h vmm.Handle, ref process.Ref, timeout time.Duration) error {
	timedOut, forced, err := process.Shutdown(ctx, ref, timeout, d.o.TermGrace, d.signaller(h),
		func(ctx context.Context) {
			if err := ctrlAltDel(ctx, h.APISocket); err != nil && ctx.Err() == nil {
				d.log.Debug("Ctrl+Alt+Del not delivered", "pid", h.PID, "err", err)
			}
		},
		func(ctx context.Context) {
			if err := vmm.AgentShutdown(ctx, d, h, proto.ActionReboot, d.log); err != nil && ctx.Err() == nil {
				d.log.Debug("agent reboot not delivered", "pid", h.PID, "err", err)
			}
		})
	if timedOut {
		d.log.Warn("guest did not shut down in time; terminated firecracker", "pid", h.PID, "timeout", timeout, "killed", forced)
	}
	if err != nil {
		return fmt.Errorf("firecracker pid %d: stop: %w", h.PID, err)
	}
	return nil
}
