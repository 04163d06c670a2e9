package qemu

import (
	"context"
	"fmt"
	"time"

	"banger/internal/agent/proto"
	"banger/internal/vmm"
	"banger/internal/vmm/process"
)

// Stop shuts the guest down gracefully if it can within timeout, and ends QEMU
// by force if it must (SIGTERM, then SIGKILL after TermGrace). Stopping an
// exited VMM succeeds and removes its sockets. If ctx ends first, Stop returns
// ctx's error and leaves QEMU as it is: the caller gave up, it did not ask for
// force.
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
	if err := vmm.RemoveSockets(h.APISocket, h.AgentSocket); err != nil {
		return fmt.Errorf("qemu pid %d stopped, but: %w", h.PID, err)
	}
	return nil
}

// powerdown presses the ACPI power button, resuming a paused guest first (a
// paused guest cannot react to anything).
func powerdown(ctx context.Context, qmpPath string) error {
	ctx, cancel := context.WithTimeout(ctx, qmpCallTimeout)
	defer cancel()
	q, err := dialQMP(ctx, qmpPath)
	if err != nil {
		return err
	}
	defer q.Close()
	var st qmpStatus
	if err := q.execute(ctx, "query-status", nil, &st); err != nil {
		return err
	}
	if st.Status == "paused" {
		if err := q.execute(ctx, "cont", nil, nil); err != nil {
			return err
		}
	}
	return q.execute(ctx, "system_powerdown", nil, nil)
}

// Kill ends QEMU at once (SIGKILL), waits for it to go and removes its sockets.
// Killing an exited VMM succeeds.
func (d *Driver) Kill(ctx context.Context, h vmm.Handle) error {
	ref, err := refOf(h)
	if err != nil {
		return err
	}
	if ref.Alive() {
		if err := process.Kill(ref); err != nil {
			return fmt.Errorf("qemu pid %d: %w", h.PID, err)
		}
		if err := process.Wait(ctx, ref); err != nil {
			return fmt.Errorf("qemu pid %d: wait after SIGKILL: %w", h.PID, err)
		}
	}
	if err := vmm.RemoveSockets(h.APISocket, h.AgentSocket); err != nil {
		return fmt.Errorf("qemu pid %d killed, but: %w", h.PID, err)
	}
	return nil
}

// shutdown presses the ACPI power button and asks the agent to power off (the
// button does nothing to a guest whose init is banger-agent: the agent request is
// what works there; while a VMService session holds the serial port the agent
// request waits its turn and the timeout covers it), then terminates QEMU if the
// guest has not gone after timeout.
func (d *Driver) shutdown(ctx context.Context, h vmm.Handle, ref process.Ref, timeout time.Duration) error {
	timedOut, forced, err := process.Shutdown(ctx, ref, timeout, d.o.TermGrace, process.Direct,
		func(ctx context.Context) {
			if err := powerdown(ctx, h.APISocket); err != nil && ctx.Err() == nil {
				d.log.Debug("ACPI power-down not delivered", "pid", h.PID, "err", err)
			}
		},
		func(ctx context.Context) {
			if err := vmm.AgentShutdown(ctx, d, h, proto.ActionPoweroff, d.log); err != nil && ctx.Err() == nil {
				d.log.Debug("agent power-off not delivered", "pid", h.PID, "err", err)
			}
		})
	if timedOut {
		d.log.Warn("guest did not power off in time; terminated qemu", "pid", h.PID, "timeout", timeout, "killed", forced)
	}
	if err != nil {
		return fmt.Errorf("qemu pid %d: stop: %w", h.PID, err)
	}
	return nil
}
